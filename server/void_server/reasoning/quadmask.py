"""The quadmask stage shared by every pipeline: job inputs -> a (T, H, W) uint8 quadmask at plate resolution.

The stage writes it to a file in the job's workdir as its checkpoint: a restarted job reopens that (memory-mapped)
instead of reasoning again. The checkpoint is sealed (the file on disk, then its done marker) inline, or, where the
caller hands the seal to a thread of its own (`seal_later`), while the job goes on reading the quadmask.

Up to `IN_MEMORY_BYTES` (a 4K clip of ~130 frames) it is built in memory and the file written at the seal: a mapped
file's pages are allocated 4 KB at a time as the frames land in them (43,000 for 85 1080p frames), on the job's
critical path, where numpy's large arrays take transparent huge pages (docs/performance.md, seventeenth session).
A longer clip's is built straight into the mapped file, as the page cache can give such a file's pages back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional, Protocol

import numpy as np

from ..pipelines.base import FrameSource, PipelineInputs
from ..pipelines.frame_pool import ordered_map
from .combine import KEEP, MATTE_THRESHOLD, combine, quantise

CHECKPOINT = "quadmask.u8"
DONE_MARKER = "quadmask.done"
IN_MEMORY_BYTES = 1 << 30


class AffectedReasoner(Protocol):
    """Auto mode: finds what the target affects (local VLM + SAM, see reasoning/auto.py)."""

    def affected(self, plate: FrameSource, target: np.ndarray, notes: List[str]) -> np.ndarray:
        """plate frames and the (T, H, W) bool target -> (T, H, W) bool affected regions."""


def _matte(frame: np.ndarray) -> np.ndarray:
    return frame[..., 0] if frame.ndim == 3 else frame


def _check_size(name: str, source: FrameSource, plate: FrameSource) -> None:
    if len(source) != len(plate):
        raise ValueError("%s has %d frames but the plate has %d" % (name, len(source), len(plate)))
    if (source.height, source.width) != (plate.height, plate.width):
        raise ValueError(
            "%s is %dx%d but the plate is %dx%d" % (name, source.width, source.height, plate.width, plate.height)
        )


def _no_affected_on_first_frame(frame: np.ndarray, notes: List[str]) -> None:
    """The reference's stage 4 clears the affected level (127) on frame 0: VOID was trained with affected regions
    from the second frame on (docs/void-reference-details.md §7.4). Overlap (63) stays. A ready quadmask is the
    artist's and is left as it is; only quadmasks built here follow the rule."""
    affected = frame == 127
    if affected.any():
        frame[affected] = 255
        notes.append("quadmask: the affected region on the first frame was cleared (%d px), as VOID's training data "
                     "has affected regions from the second frame on" % int(affected.sum()))


def open_checkpoint(workdir: Path, shape: tuple) -> Optional[np.ndarray]:
    if (workdir / DONE_MARKER).exists():
        return np.memmap(workdir / CHECKPOINT, dtype=np.uint8, mode="r", shape=shape)
    return None


def _new_quadmask(workdir: Path, shape: tuple) -> np.ndarray:
    """Where the stage builds the quadmask: an array in memory, or for a long clip the checkpoint file mapped."""
    if int(np.prod(shape)) <= IN_MEMORY_BYTES:
        return np.empty(shape, np.uint8)
    return np.memmap(workdir / CHECKPOINT, dtype=np.uint8, mode="w+", shape=shape)


def _seal(out: np.ndarray, workdir: Path) -> None:
    """The checkpoint on disk, then its marker: a marker never stands for a file not yet written."""
    if isinstance(out, np.memmap):
        out.flush()
    else:
        with open(workdir / CHECKPOINT, "wb") as f:
            out.tofile(f)
            f.flush()
            os.fsync(f.fileno())
    (workdir / DONE_MARKER).touch()


def build_quadmask(
    inputs: PipelineInputs,
    reasoner: Optional[AffectedReasoner] = None,
    notes: Optional[List[str]] = None,
    on_frame: Optional[Callable[[int, int], None]] = None,
    seal_later: Optional[Callable[[Callable[[], None]], None]] = None,
) -> np.ndarray:
    """Quadmask for every frame of the job, per the job's mask mode; resumes from the workdir checkpoint. Frames are
    read and combined on the frame pool (matte reads are EXR decodes), written in order. `seal_later(seal)` runs
    the checkpoint's seal where the caller says (writing it was 0.14 s of a 0.2 s stage for 85 1080p frames on an
    H100), and must have run it before the job is retried; None seals inline."""
    plate = inputs.plate
    shape = (len(plate), plate.height, plate.width)
    inputs.workdir.mkdir(parents=True, exist_ok=True)
    done = open_checkpoint(inputs.workdir, shape)
    if done is not None:
        return done
    notes = notes if notes is not None else []
    mode = inputs.settings.mask_mode
    out = _new_quadmask(inputs.workdir, shape)
    something = False  # any frame with anything but keep: checked frame by frame, not by a pass over all

    n = len(plate)
    if mode == "quadmask":
        if inputs.quadmask is None:
            raise ValueError("mask mode 'quadmask' needs a quadmask input")
        _check_size("the quadmask", inputs.quadmask, plate)
        quadmask = inputs.quadmask
        for i, frame in enumerate(ordered_map(lambda i: quantise(_matte(quadmask[i])), n)):
            out[i] = frame
            something = something or bool(frame.min() < KEEP)
            if on_frame:
                on_frame(i, n)
    else:
        if inputs.target is None:
            raise ValueError("mask mode '%s' needs a target matte" % mode)
        _check_size("the target matte", inputs.target, plate)
        affected_source: Optional[FrameSource] = None
        auto_affected: Optional[np.ndarray] = None
        if mode == "manual":
            if inputs.affected is None:
                raise ValueError("mask mode 'manual' needs an affected matte")
            _check_size("the affected matte", inputs.affected, plate)
            affected_source = inputs.affected
        elif mode == "auto":
            if reasoner is None:
                notes.append("auto mask mode has no reasoning models on this server: target only")
            else:
                target = np.stack(list(ordered_map(lambda i: _matte(inputs.target[i]) > MATTE_THRESHOLD, n)))
                auto_affected = reasoner.affected(plate, target, notes)
        elif mode != "none":
            raise ValueError("unknown mask mode %r" % mode)

        def combined(i: int) -> np.ndarray:
            affected = None
            if affected_source is not None:
                affected = _matte(affected_source[i])
            elif auto_affected is not None:
                affected = auto_affected[i].astype(np.float32)
            return combine(_matte(inputs.target[i]), affected, inputs.settings.affected_dilation)

        for i, frame in enumerate(ordered_map(combined, n)):
            out[i] = frame
            if i == 0:
                _no_affected_on_first_frame(out[0], notes)
            something = something or bool(out[i].min() < KEEP)
            if on_frame:
                on_frame(i, n)

    if not something:
        raise ValueError("the target matte is empty on every frame: nothing to remove")
    if seal_later is None:
        _seal(out, inputs.workdir)
    else:
        seal_later(lambda: _seal(out, inputs.workdir))
    if isinstance(out, np.memmap):  # the job reads it through a mapping of its own, read-only
        return np.memmap(inputs.workdir / CHECKPOINT, dtype=np.uint8, mode="r", shape=shape)
    out.setflags(write=False)  # the job's from here on, read on several threads (and by the seal)
    return out
