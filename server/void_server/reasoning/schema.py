"""The VLM's answer: the JSON schema we define, and a tolerant parser for it.

The answer is data only. Names are free text used as labels (and as SAM3 text prompts); nothing in an answer is
ever executed, opened or fetched. Lists and strings are clipped like the reference parser's, coordinates are
clamped to the frame and frame numbers to the clip, so a rambling or hostile answer can only ever yield a few
bounded boxes on our own frames.

Schema (coordinates are 0..1000 of the image width / height, grid cells are (row, col) of the labelled grid):
{
  "affected": [                                     # at most MAX_OBJECTS
    {"name": str, "kind": "shadow" | "reflection" | "contact" | "held" | "pushed" | "other",
     "locations": [{"frame": int, "cells": [[row, col], ...], "points": [[x, y], ...], "box": [x0, y0, x1, y1]}],
     "will_move": bool,
     "path": [{"frame": int, "cell": [row, col]}],  # where a mover would go without the target, keyframes
     "why": str}
  ],
  "scene": str                                      # the scene without the target (a prompt suggestion)
}
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, List, Optional, Sequence, Tuple

KINDS = ("shadow", "reflection", "contact", "held", "pushed", "other")
# Kinds that vanish with the target; the rest are physical objects that stay (and may move).
VISUAL_KINDS = ("shadow", "reflection")
MAX_OBJECTS = 5  # the reference's limit
MAX_LOCATIONS = 10  # one per frame shown
MAX_CELLS = 48
MAX_POINTS = 8
MAX_PATH = 8
MAX_NAME = 60
MAX_WHY = 200
MAX_SCENE = 300
COORD_MAX = 1000


class ParseError(ValueError):
    """The answer is not the JSON we asked for; the message is fed back to the VLM on the retry."""


@dataclasses.dataclass
class Location:
    frame: int
    cells: List[Tuple[int, int]] = dataclasses.field(default_factory=list)
    points: List[Tuple[float, float]] = dataclasses.field(default_factory=list)  # 0..1000
    box: Optional[Tuple[float, float, float, float]] = None  # 0..1000, x0 < x1, y0 < y1

    @property
    def empty(self) -> bool:
        return not (self.cells or self.points or self.box)


@dataclasses.dataclass
class PathPoint:
    frame: int
    row: int
    col: int


@dataclasses.dataclass
class AffectedObject:
    name: str
    kind: str
    locations: List[Location] = dataclasses.field(default_factory=list)
    will_move: bool = False
    path: List[PathPoint] = dataclasses.field(default_factory=list)
    why: str = ""

    @property
    def frames(self) -> List[int]:
        return sorted({loc.frame for loc in self.locations})


@dataclasses.dataclass
class Answer:
    objects: List[AffectedObject]
    scene: str = ""


def _json_text(text: str) -> str:
    """Strips code fences and prose around the JSON object (Qwen models fence their JSON)."""
    t = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", t, re.S)
    if fenced and "{" in fenced.group(1):
        t = fenced.group(1)
    start, end = t.find("{"), t.rfind("}")
    if start < 0 or end <= start:
        raise ParseError("no JSON object found in the answer (expected one {...} object)")
    return t[start:end + 1]


def _clean_str(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else ("" if value is None else str(value))
    s = "".join(ch if ch.isprintable() else " " for ch in s)
    return " ".join(s.split())[:limit]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParseError("%s must be a number, got %r" % (what, value))
    return int(round(value))


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParseError("%s must be a list, got %s" % (what, type(value).__name__))
    return value


def _pair(value: Any, what: str) -> Tuple[float, float]:
    if isinstance(value, dict):  # {"row": r, "col": c} as the reference writes cells
        value = [value.get("row"), value.get("col")]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ParseError("%s must be a pair [a, b], got %r" % (what, value))
    return _num(value[0], what), _num(value[1], what)


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParseError("%s must hold numbers, got %r" % (what, value))
    return float(value)


def _location(raw: Any, where: str, rows: int, cols: int, frames: int) -> Location:
    if not isinstance(raw, dict):
        raise ParseError("%s must be an object, got %s" % (where, type(raw).__name__))
    loc = Location(frame=int(_clamp(_int(raw.get("frame", 0), where + ".frame"), 0, frames - 1)))
    for i, cell in enumerate(_list(raw.get("cells"), where + ".cells")[:MAX_CELLS]):
        r, c = _pair(cell, "%s.cells[%d]" % (where, i))
        if 0 <= r < rows and 0 <= c < cols:  # cells off the grid are dropped, not fatal
            loc.cells.append((int(r), int(c)))
    for i, pt in enumerate(_list(raw.get("points"), where + ".points")[:MAX_POINTS]):
        x, y = _pair(pt, "%s.points[%d]" % (where, i))
        loc.points.append((_clamp(x, 0, COORD_MAX), _clamp(y, 0, COORD_MAX)))
    box = raw.get("box")
    if box is not None and box != []:
        if not isinstance(box, list) or len(box) != 4:
            raise ParseError("%s.box must be [x0, y0, x1, y1], got %r" % (where, box))
        x0, y0, x1, y1 = (_clamp(_num(v, where + ".box"), 0, COORD_MAX) for v in box)
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        if x1 > x0 and y1 > y0:
            loc.box = (x0, y0, x1, y1)
    return loc


def _object(raw: Any, where: str, rows: int, cols: int, frames: int) -> AffectedObject:
    if not isinstance(raw, dict):
        raise ParseError("%s must be an object, got %s" % (where, type(raw).__name__))
    name = _clean_str(raw.get("name"), MAX_NAME).lower()
    if not name:
        raise ParseError("%s.name is missing" % where)
    kind = _clean_str(raw.get("kind"), 20).lower()
    if kind not in KINDS:
        raise ParseError("%s.kind is %r; it must be one of %s" % (where, kind, ", ".join(KINDS)))
    will_move = raw.get("will_move", False)
    if not isinstance(will_move, bool):
        raise ParseError("%s.will_move must be true or false, got %r" % (where, will_move))
    obj = AffectedObject(name=name, kind=kind, will_move=will_move, why=_clean_str(raw.get("why"), MAX_WHY))
    for i, loc in enumerate(_list(raw.get("locations"), where + ".locations")[:MAX_LOCATIONS]):
        parsed = _location(loc, "%s.locations[%d]" % (where, i), rows, cols, frames)
        if not parsed.empty:
            obj.locations.append(parsed)
    for i, p in enumerate(_list(raw.get("path"), where + ".path")[:MAX_PATH]):
        w = "%s.path[%d]" % (where, i)
        if not isinstance(p, dict):
            raise ParseError("%s must be {\"frame\": n, \"cell\": [row, col]}, got %r" % (w, p))
        r, c = _pair(p.get("cell"), w + ".cell")
        f = int(_clamp(_int(p.get("frame", 0), w + ".frame"), 0, frames - 1))
        obj.path.append(PathPoint(f, int(_clamp(r, 0, rows - 1)), int(_clamp(c, 0, cols - 1))))
    obj.path.sort(key=lambda p: p.frame)
    if not obj.will_move:
        obj.path = []
    return obj


def parse_answer(text: str, rows: int, cols: int, frames: int) -> Answer:
    """VLM text -> Answer for a grid of rows x cols over a clip of `frames` frames; raises ParseError."""
    if frames < 1:
        raise ValueError("a clip has at least one frame")
    try:
        data = json.loads(_json_text(text))
    except json.JSONDecodeError as e:
        raise ParseError("invalid JSON: %s" % e) from None
    if not isinstance(data, dict):
        raise ParseError("the answer must be one JSON object")
    if "affected" not in data:
        raise ParseError("the answer has no \"affected\" list (use [] when nothing is affected)")
    raw_objects: Sequence[Any] = _list(data["affected"], "affected")
    objects = [_object(o, "affected[%d]" % i, rows, cols, frames) for i, o in enumerate(raw_objects[:MAX_OBJECTS])]
    return Answer(objects=objects, scene=_clean_str(data.get("scene"), MAX_SCENE))
