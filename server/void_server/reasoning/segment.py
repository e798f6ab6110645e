"""From the VLM's localisations to per-frame masks: SAM2 video tracking, the proximity filter, movers' paths.

Improves on the reference, which segments each object's *name* by text (SAM3) every 5th frame: here the cells,
points and boxes the VLM gave on the frames it saw become SAM2 prompts on those frames, and SAM2 tracks the
object forward and backward through every frame. Objects that would move get a box of their size swept along
the path they would now take.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .grid import Grid
from .schema import COORD_MAX, AffectedObject, PathPoint

Box = Tuple[float, float, float, float]


@dataclasses.dataclass
class Prompt:
    """A SAM2 prompt on one frame, in pixels of the frames being tracked: clicks and a box, or a mask."""

    frame: int
    points: List[Tuple[float, float]] = dataclasses.field(default_factory=list)  # positive clicks
    box: Optional[Box] = None
    mask: Optional[np.ndarray] = None  # (H, W) bool at the tracked frames' size, e.g. SAM3's for a named object


def mask_prompts(keyframes: Dict[int, np.ndarray]) -> List[Prompt]:
    """Keyframe masks (frame -> (H, W) bool) -> mask prompts, one per keyframe where the mask has any pixel (an
    empty one would tell SAM2 the object is absent there, where the text search may simply have missed it)."""
    return [Prompt(frame, mask=mask) for frame, mask in sorted(keyframes.items()) if mask.any()]


def prompts_for(obj: AffectedObject, grid: Grid) -> List[Prompt]:
    """The object's locations -> SAM2 prompts over frames of grid.height x grid.width.

    A box is the strongest single SAM2 prompt: the VLM's box if it gave one, else the bounding box of its cells
    (cells are coarse, so their centres are not used as clicks: they may miss a thin shadow).
    """
    sx, sy = grid.width / COORD_MAX, grid.height / COORD_MAX
    prompts = []
    for loc in obj.locations:
        box: Optional[Box] = None
        if loc.box:
            x0, y0, x1, y1 = loc.box
            box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
        elif loc.cells:
            boxes = np.array([grid.cell_box(r, c) for r, c in loc.cells], float)
            box = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max() - 1, boxes[:, 3].max() - 1)
        points = [(x * sx, y * sy) for x, y in loc.points]
        if box or points:
            prompts.append(Prompt(loc.frame, points, box))
    return prompts


class Sam2Tracker:
    """Sam2VideoModel + Sam2VideoProcessor from a local folder (facebook/sam2.1-hiera-large layout)."""

    def __init__(self, model: Any, processor: Any, device: str, dtype: Any) -> None:
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype

    @classmethod
    def from_pretrained(cls, model_dir: Union[str, Path], device: str = "cuda") -> "Sam2Tracker":
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        from .local_models import load_local

        model, processor, dtype = load_local(Sam2VideoModel, Sam2VideoProcessor, model_dir, device)
        return cls(model, processor, device, dtype)

    def track(self, frames: Sequence[np.ndarray], objects: Sequence[List[Prompt]]) -> List[np.ndarray]:
        """uint8 RGB frames (T, H, W, 3) and each object's prompts -> one (T, H, W) bool mask per object.

        One object at a time in one session (features of the video are reused), each propagated forward from its
        first prompted frame and backward from its last, so frames before the first prompt are covered too.
        """
        import torch

        t, h, w = len(frames), frames[0].shape[0], frames[0].shape[1]
        if not any(objects):
            return [np.zeros((t, h, w), bool) for _ in objects]
        session = self.processor.init_video_session(
            video=list(frames), inference_device=self.device, dtype=self.dtype)
        results = []
        with torch.inference_mode():
            for prompts in objects:
                mask = np.zeros((t, h, w), bool)
                if prompts:
                    session.reset_tracking_data()
                    self._add_prompts(session, prompts)
                    first, last = min(p.frame for p in prompts), max(p.frame for p in prompts)
                    for start, reverse in ((first, False), (last, True)):
                        for out in self.model.propagate_in_video_iterator(
                                session, start_frame_idx=start, reverse=reverse):
                            m = self.processor.post_process_masks([out.pred_masks], [[h, w]], binarize=False)[0]
                            mask[out.frame_idx] |= (m[0, 0] > 0).cpu().numpy()
                results.append(mask)
        session.reset_inference_session()
        return results

    def _add_prompts(self, session: Any, prompts: List[Prompt]) -> None:
        by_frame = {}
        for p in prompts:  # one prompt per frame: SAM2 replaces a frame's inputs when given new ones
            merged = by_frame.setdefault(p.frame, Prompt(p.frame))
            merged.points += p.points
            merged.box = merged.box or p.box
            if p.mask is not None:
                merged.mask = p.mask if merged.mask is None else merged.mask | p.mask
        for frame, p in sorted(by_frame.items()):
            kwargs: Dict[str, Any] = {}
            if p.mask is not None:  # SAM2 takes a mask alone; it says more than clicks or a box would
                kwargs["input_masks"] = p.mask.astype(bool)
            else:
                if p.points:
                    kwargs["input_points"] = [[[list(map(float, xy)) for xy in p.points]]]
                    kwargs["input_labels"] = [[[1] * len(p.points)]]
                if p.box:
                    kwargs["input_boxes"] = [[list(map(float, p.box))]]
            self.processor.add_inputs_to_inference_session(session, frame_idx=frame, obj_ids=[1], **kwargs)
            self.model(inference_session=session, frame_idx=frame)  # conditions the frame before propagating

    def unload(self) -> None:
        self.model = None
        self.processor = None


def proximity_radius(height: int, width: int, radius_at_4k: float = 25.0) -> int:
    """The reference keeps affected pixels inside a 50x50-dilated target at 3840 px: +-25 px, scaled."""
    return max(2, int(round(radius_at_4k * max(height, width) / 3840)))


def near_target(target: np.ndarray, radius: int) -> np.ndarray:
    """(T, H, W) bool -> the target grown by `radius` on each frame, plus its first-frame area grown the same way
    (the reference's static region: an affected object may stay where the target first was)."""
    import cv2

    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    near = np.stack([cv2.dilate(f.astype(np.uint8), k) > 0 for f in target])
    present = [i for i in range(len(target)) if target[i].any()]
    if present:
        near |= near[present[0]][None]
    return near


def keep_near(mask: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Keeps whole connected pieces of the mask that touch `near` (the reference clips pixels instead, which cuts
    a long shadow off at the proximity border), per frame."""
    import cv2

    out = np.zeros_like(mask, dtype=bool)
    for i in range(len(mask)):
        if not mask[i].any():
            continue
        n, labels = cv2.connectedComponents(mask[i].astype(np.uint8), connectivity=8)
        touching = np.unique(labels[near[i] & mask[i]])
        out[i] = np.isin(labels, touching[touching > 0])
    return out


def _centre_at(path: List[PathPoint], frame: int, grid: Grid) -> Tuple[float, float]:
    centres = []
    for p in path:
        x0, y0, x1, y1 = grid.cell_box(p.row, p.col)
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
    frames = [p.frame for p in path]
    return float(np.interp(frame, frames, [c[0] for c in centres])), float(np.interp(frame, frames, [c[1] for c in centres]))


def sweep_along_path(obj_mask: np.ndarray, path: List[PathPoint], grid: Grid) -> np.ndarray:
    """A mover's region: from the path's first keyframe on, a box of the object's size centred on the path
    (linear between keyframes, held after the last). The size comes from the tracked mask nearest that frame,
    else one grid cell."""
    t = len(obj_mask)
    out = np.zeros_like(obj_mask, dtype=bool)
    if not path:
        return out
    start = path[0].frame
    present = [i for i in range(t) if obj_mask[i].any()]
    if present:
        ref = min(present, key=lambda i: abs(i - start))
        ys, xs = np.nonzero(obj_mask[ref])
        bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    else:
        x0, y0, x1, y1 = grid.cell_box(path[0].row, path[0].col)
        bw, bh = x1 - x0, y1 - y0
    for i in range(start, t):
        cx, cy = _centre_at(path, i, grid)
        x0, y0 = int(round(cx - bw / 2)), int(round(cy - bh / 2))
        out[i, max(0, y0):max(0, y0 + bh), max(0, x0):max(0, x0 + bw)] = True
    return out
