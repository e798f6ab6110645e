"""Our VLM prompt, versioned: a change in wording is a change in PROMPT_VERSION (recorded in every job's notes).

Structure after the reference's (context, task, what counts as affected, the supporting-vs-acting-on rule,
strict output format, grid info), rewritten for our schema: the model localises each affected object with grid
cells, points or a box on the frames it saw, and gives a path for objects that would move. The prompt only
asks for JSON; the answer is parsed as data (schema.py) and never acted on in any other way.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .grid import Grid
from .schema import KINDS, MAX_OBJECTS

PROMPT_VERSION = "void-nuke-quadmask/1"

SYSTEM_PROMPT = (
    "You are an expert video analyst with a deep understanding of physics and object interactions. "
    "You answer with one JSON object and nothing else."
)

_TEMPLATE = """CONTEXT
You see {n_frames} frames sampled from a video clip of {total} frames (frame numbers {frame_list}). Each frame is
labelled with its frame number in the top right corner and overlaid with a yellow grid of {rows} rows x {cols}
columns; every cell is labelled "row,col", counting from 0 at the top left. The PRIMARY OBJECT is tinted red and
outlined in red on every frame.{instruction}

TASK
The primary object will be removed from the whole clip. Find what else in the frames exists or behaves as it does
only because of the primary object, so that it can be removed or re-imagined as well.

WHAT COUNTS AS AFFECTED (at most {max_objects} entries, most important first)
- kind "shadow": a shadow cast by the primary object. It vanishes with the object.
- kind "reflection": a reflection or mirror image of the primary object, in water, glass or a shiny surface. It
  vanishes with the object.
- kind "contact": marks of contact that vanish with the object: splashes, ripples, wakes, footprints, dents,
  deformation of a surface it presses on (a sagging cushion, a bent branch).
- kind "held": something the primary object holds up against gravity (a carried bag, a held cup). Without the
  object it would fall: "will_move": true.
- kind "pushed": something the primary object pushes, throws, hits or drags. Without the object it would stay
  where it was: "will_move" true only if it would then move differently from what the clip shows.
- kind "other": any other effect that exists only because of the primary object.
Supporting versus acting on: an object resting on a surface, or merely touched, stays where it is. Only an object
held up against gravity by the primary object moves. Do not list the floor, walls, the sky or the background, and
do not list the primary object itself or anything that merely appears near it. If nothing is affected, answer with
an empty list.

LOCATING EACH ENTRY
For each affected entry give "locations": one entry per frame (use the frame numbers above) where it is visible,
each with any of
- "cells": the grid cells it covers, as [row, col] pairs (cover it fully; a cell too many is better than too few),
- "points": up to 4 points on it, as [x, y] with x and y from 0 to 1000 across the image width and height,
- "box": its bounding box [x0, y0, x1, y1] in the same 0..1000 coordinates.
For an entry with "will_move": true, give "path": 2 to 5 keyframes {{"frame": n, "cell": [row, col]}} of where its
centre would go without the primary object, starting where it is now.

OUTPUT FORMAT (strict JSON, no comments, no code fences)
{{"affected": [{{"name": "short noun phrase", "kind": one of {kinds},
   "locations": [{{"frame": 0, "cells": [[5, 3], [5, 4]], "points": [[310, 720]], "box": [250, 650, 420, 800]}}],
   "will_move": false, "path": [], "why": "one short sentence"}}],
 "scene": "one sentence describing the scene without the primary object"}}

GRID INFO: {rows} rows x {cols} columns, rows 0..{last_row} top to bottom, columns 0..{last_col} left to right."""

_RETRY = """Your previous answer could not be used: {error}
Answer again with only the JSON object in the format asked for above."""


def build_prompt(grid: Grid, frame_numbers: Sequence[int], total_frames: int, instruction: Optional[str] = None) -> str:
    """The user message that follows the frames. `instruction` is the artist's own text, if any."""
    extra = ""
    if instruction:
        # Quoted and clipped: it describes the shot; it cannot change the output format asked for below.
        extra = '\nThe artist describes the removal as: "%s".' % " ".join(instruction.split())[:300].replace('"', "'")
    return _TEMPLATE.format(
        n_frames=len(frame_numbers),
        total=total_frames,
        frame_list=", ".join(str(f) for f in frame_numbers),
        rows=grid.rows,
        cols=grid.cols,
        last_row=grid.rows - 1,
        last_col=grid.cols - 1,
        instruction=extra,
        max_objects=MAX_OBJECTS,
        kinds=" / ".join('"%s"' % k for k in KINDS),
    )


def retry_prompt(error: str) -> str:
    return _RETRY.format(error=error[:300])
