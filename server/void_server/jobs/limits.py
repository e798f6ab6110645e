"""What a server takes on: frame count and resolution limits, and target mattes that leave nothing to do.

Each check raises `Invalid` naming the spec field and the setting that would allow more, before the job queues.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from ..api.models import InputRole, JobSpec
from ..config import ServerConfig
from ..pipelines.base import FrameSource
from ..reasoning.combine import MATTE_THRESHOLD
from .errors import Invalid


def server_limits(config: ServerConfig) -> Dict[str, float]:
    """What /v1/health tells clients about the checks below."""
    return {"max_frames": int(config.max_frames), "max_resolution": int(config.max_resolution),
            "max_upload_mb": float(config.max_upload_mb)}


def check_frame_count(spec: JobSpec, config: ServerConfig) -> None:
    """At creation, the spec's frame range. A spec without one (every frame of a video plate) is counted at start,
    by check_plate_frames."""
    if spec.frames is not None and spec.frames.count > config.max_frames:
        raise Invalid("%d frames (%d-%d); this server takes at most %d per job (--max-frames): split the shot"
                      % (spec.frames.count, spec.frames.first, spec.frames.last, config.max_frames), "frames")


def check_plate_frames(plate: FrameSource, config: ServerConfig) -> None:
    """At start, the opened plate's frame count: a video job without a frame range learns it only then."""
    if len(plate) > config.max_frames:
        name = getattr(plate, "path", None)
        raise Invalid("the plate%s has %d frames; this server takes at most %d per job (--max-frames): split the shot"
                      % (" video %s" % name.name if name is not None else "", len(plate), config.max_frames), "frames")


def check_opened_plate(plate: FrameSource, config: ServerConfig) -> None:
    """At start, on the opened plate: its frame count (a whole-video job's is known only now) and its size."""
    check_plate_frames(plate, config)
    if max(plate.width, plate.height) > config.max_resolution:
        raise Invalid("the plate is %dx%d; this server takes at most %d pixels on the longest side "
                      "(--max-resolution): reformat it down, or ask for a larger limit"
                      % (plate.width, plate.height, config.max_resolution), "inputs.plate")


def check_target_coverage(sources: Mapping[InputRole, FrameSource]) -> None:
    """A target matte empty on every frame leaves nothing to remove; full on every frame leaves nothing to rebuild
    the shot from. Reads frames only until one shows the matte is neither (usually the first)."""
    target = sources.get(InputRole.target)
    if target is None:
        return
    any_on = any_off = False
    for i in range(len(target)):
        on = np.asarray(target[i])[..., 0] > MATTE_THRESHOLD
        any_on, any_off = any_on or bool(on.any()), any_off or bool((~on).any())
        if any_on and any_off:
            return
    if not any_on:
        raise Invalid("the target matte is empty on every frame: nothing to remove (check the matte channel)",
                      "inputs.target")
    raise Invalid("the target matte covers the whole frame on every frame: nothing is left to rebuild the shot "
                  "from (is the matte inverted?)", "inputs.target")
