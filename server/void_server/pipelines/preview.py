"""PREVIEW pipeline: a fast CPU stand-in with no VOID weights, labelled as a preview wherever results appear.

It checks a job end to end (masks, framing, merge, result files) in seconds, and gives a rough clean plate:
1. quadmask: the shared stage (reasoning.quadmask.build_quadmask);
2. "pass1" (the only generation pass): at a working resolution, every frame's edit region (everything but keep)
   is filled with background pulled along optical flow (OpenCV DIS) from the nearest frames where that spot is
   visible, the flow inside the hole being smoothed in from around it; what no frame shows is filled by
   cv2.inpaint;
3. merge: the shared plate-resolution merge (pipelines.void.merge), keep region bit-identical.
It does not model shadows, reflections or physics the way VOID does: affected regions are just filled as holes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from ..reasoning.combine import KEEP
from ..reasoning.quadmask import build_quadmask
from .base import (CancelCheck, PipelineInputs, Progress, ProgressCallback, ResultSink, RunSummary, check_cancel,
                   stage_fraction)
from .void.colour import to_model
from .void.merge import merge_frame
from .void.roi import choose_roi

WORK_HW = (360, 640)  # working resolution (ROI crops are taken at this aspect)
# Frame offsets, either way, searched for visible background, nearest first (sparse: each costs a flow).
OFFSETS = (1, 2, 3, 5, 8, 12)
FLOW_FILL_SIGMA = 0.05  # of the long side: how far around a hole its flow is smoothed in from
HOLE_GROW_PX = 2  # object edges are soft: don't pull pixels from right next to them
FILLED = "preview_fill.npy"
FILLED_DONE = "preview_fill.done"
MERGE_DONE = "merge.done"


def _work_size(height: int, width: int, box: Optional[Tuple[int, int, int, int]]) -> Tuple[int, int]:
    """Working (h, w): the ROI box squeezed to WORK_HW, or the frame scaled to fit WORK_HW (never enlarged)."""
    if box is not None:
        return WORK_HW
    s = min(1.0, max(WORK_HW) / max(height, width), min(WORK_HW) / min(height, width))
    return max(8, int(round(height * s))), max(8, int(round(width * s)))


def _holes(quadmask: np.ndarray, hw: Tuple[int, int], box) -> np.ndarray:
    """Edit region of one frame at working resolution, grown by HOLE_GROW_PX."""
    q = quadmask if box is None else quadmask[box[1]:box[3], box[0]:box[2]]
    edit = cv2.resize((q != KEEP).astype(np.uint8), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * HOLE_GROW_PX + 1,) * 2)
    return cv2.dilate(edit, k) > 0


def _frame(plate_frame: np.ndarray, encoding: str, hw: Tuple[int, int], box) -> np.ndarray:
    """Plate frame -> display-referred uint8 RGB at working resolution."""
    rgb = plate_frame[..., :3] if box is None else plate_frame[box[1]:box[3], box[0]:box[2], :3]
    small = cv2.resize(to_model(torch.from_numpy(np.array(rgb, np.float32)), encoding).numpy(), (hw[1], hw[0]),
                       interpolation=cv2.INTER_AREA)
    return np.round(small * 255).astype(np.uint8)


def _smooth_in(f: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Values of f (h, w, 2) outside `hole` spread into it by normalised convolution; done at 1/8 size because
    the spread is wide and smooth (the background's motion), which keeps it cheap."""
    h, w = hole.shape
    sh, sw = max(1, h // 8), max(1, w // 8)
    valid = cv2.resize((~hole).astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    num = cv2.resize(f * (~hole)[..., None], (sw, sh), interpolation=cv2.INTER_AREA)
    sigma = FLOW_FILL_SIGMA * max(sh, sw)
    den = cv2.GaussianBlur(valid, (0, 0), sigma)
    num = cv2.GaussianBlur(num, (0, 0), sigma)
    mean = f[~hole].mean(axis=0) if (~hole).any() else np.zeros(2, np.float32)
    small = np.where(den[..., None] > 1e-3, num / np.maximum(den, 1e-3)[..., None], mean).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


class _FlowFill:
    """Fills one frame's hole from other frames along optical flow."""

    def __init__(self) -> None:
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def flow(self, grey_t: np.ndarray, grey_s: np.ndarray, hole_t: np.ndarray) -> np.ndarray:
        """Flow t -> s, with the values inside t's hole (the object's motion, not the background's) replaced by
        the flow around the hole, smoothed in by normalised convolution."""
        f = self.dis.calc(grey_t, grey_s, None)
        if hole_t.any():
            f = np.where(hole_t[..., None], _smooth_in(f, hole_t), f).astype(np.float32)
        return f

    def fill(self, t: int, frames: np.ndarray, greys: List[np.ndarray], holes: np.ndarray) -> np.ndarray:
        out = frames[t].copy()
        todo = holes[t].copy()
        if not todo.any():
            return out
        h, w = todo.shape
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        for d in OFFSETS:
            for s in (t - d, t + d):
                if not 0 <= s < len(frames) or not todo.any():
                    continue
                f = self.flow(greys[t], greys[s], holes[t])
                mx, my = xs + f[..., 0], ys + f[..., 1]
                warped = cv2.remap(frames[s], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                visible = cv2.remap((~holes[s]).astype(np.float32), mx, my, cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.99
                take = todo & visible
                out[take] = warped[take]
                todo &= ~take
        if todo.any():
            out = cv2.inpaint(out, todo.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        return out


class PreviewPipeline:
    name = "preview"
    label = "PREVIEW (CPU, no VOID weights)"

    def __init__(self, config: Any) -> None:
        self.config = config

    def describe(self) -> Dict[str, object]:
        return {"pipeline": self.name, "label": self.label, "models": [], "device": "cpu",
                "method": "DIS optical-flow propagation + OpenCV inpainting"}

    def run(self, inputs: PipelineInputs, sink: ResultSink, progress: ProgressCallback,
            should_cancel: CancelCheck) -> RunSummary:
        s, work = inputs.settings, Path(inputs.workdir)
        work.mkdir(parents=True, exist_ok=True)
        plate, n = inputs.plate, len(inputs.plate)
        timings: Dict[str, float] = {}

        def report(stage: str, step: int, total: int) -> None:
            # One generation pass: weight the stages as a single-pass job whatever the job asked for.
            progress(Progress(stage, step, total, "PREVIEW %s %d/%d" % (stage, step, total),
                              stage_fraction(stage, step / max(total, 1), 1)))

        def on_mask_frame(i: int, total: int) -> None:
            check_cancel(should_cancel)
            report("quadmask", i + 1, total)

        t0 = time.time()
        quadmask = build_quadmask(inputs, on_frame=on_mask_frame)
        timings["quadmask"] = time.time() - t0

        t0 = time.time()
        box = choose_roi(quadmask, WORK_HW, enabled=s.roi)
        hw = _work_size(plate.height, plate.width, box)
        filled = self._fill(inputs, quadmask, box, hw, report, should_cancel)
        timings["pass1"] = time.time() - t0

        t0 = time.time()
        if not (work / MERGE_DONE).exists():
            for i in range(n):
                check_cancel(should_cancel)
                q = np.asarray(quadmask[i])
                gen = filled[i].astype(np.float32) / 255.0
                clean = merge_frame(plate[i][..., :3], gen, q, box, s.input_encoding)
                sink.write_frame(i, clean, q)
                report("merge", i + 1, n)
            (work / MERGE_DONE).touch()
        timings["merge"] = time.time() - t0
        notes = ["PREVIEW: classical optical-flow propagation + OpenCV inpainting at %dx%d, not VOID" % (hw[1], hw[0])]
        if s.passes == 2:
            notes.append("PREVIEW has a single pass: pass 2 was not run")
        if box is not None:
            notes.append("region of interest %s" % (box,))
        return RunSummary(frames_written=n, notes=notes, timings=timings)

    def _fill(self, inputs: PipelineInputs, quadmask: np.ndarray, box, hw: Tuple[int, int], report,
              should_cancel: CancelCheck) -> np.ndarray:
        """The filled working-resolution frames (T, h, w, 3) uint8, from the workdir checkpoint when finished."""
        work, n = Path(inputs.workdir), len(inputs.plate)
        path = work / FILLED
        if (work / FILLED_DONE).exists():
            return np.load(path, mmap_mode="r")
        enc = inputs.settings.input_encoding
        frames = np.stack([_frame(inputs.plate[i], enc, hw, box) for i in range(n)])
        holes = np.stack([_holes(np.asarray(quadmask[i]), hw, box) for i in range(n)])
        greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=frames.shape)
        filler = _FlowFill()
        for t in range(n):
            check_cancel(should_cancel)
            out[t] = filler.fill(t, frames, greys, holes)
            report("pass1", t + 1, n)
        out.flush()
        (work / FILLED_DONE).touch()
        return np.load(path, mmap_mode="r")
