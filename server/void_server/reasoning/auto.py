"""Auto mask mode: a local VLM says what the target affects, SAM2 tracks it (quadmask.AffectedReasoner).

    plate + target -> sampled frames with grid and red target -> VLM (prompt.py) -> Answer (schema.py)
      -> SAM2 prompts from cells / points / boxes, tracked forward and back (segment.py)
      -> objects named but not located: SAM3 by name every 5th frame (text_segment.py), if MODEL_DIR/sam3 exists,
         its masks there SAM2's prompts, tracked through the frames between
      -> kept where they touch the target's neighbourhood (visual effects), movers swept along their path
      -> gridified like the reference -> (T, H, W) bool at plate resolution

Failures never fail the job: a malformed answer (twice), a remote VLM that cannot be asked (remote_vlm.py) or a
missing piece leaves the target alone, and the reason goes into `notes` (shown in the job status and the result
manifest).
"""
from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ..pipelines.base import FrameSource
from .grid import Grid, draw_grid, label_frame, outline_target
from .prompt import PROMPT_VERSION, build_prompt
from .schema import VISUAL_KINDS, Answer, parse_answer
from .segment import (Prompt, Sam2Tracker, keep_near, mask_prompts, near_target, prompts_for, proximity_radius,
                      sweep_along_path)
from .remote_vlm import VLMUnavailable
from .text_segment import Sam3TextSegmenter
from .vlm import LocalVLM, VLMBackend, ask

DEFAULT_VLM = "Qwen3-VL-8B-Instruct"
DEFAULT_SAM2 = "sam2.1-hiera-large"
DEFAULT_SAM3 = "sam3"


@dataclasses.dataclass
class AutoSettings:
    sample_frames: int = 10  # the reference shows 10 frames spread over the clip
    vlm_long_side: int = 768  # frames shown to the VLM (tokens grow with pixels)
    track_long_side: int = 1024  # frames SAM2 tracks (it works at 1024 internally)
    proximity_at_4k: float = 25.0  # radius in px at 3840 wide, scaled (the reference: 50x50 kernel)
    gridify: bool = True  # the reference's cell-filled grey mask, which VOID was trained on
    input_encoding: str = "linear"  # plates are scene-linear unless the job says srgb
    text_every: int = 5  # SAM3 text segmentation on every n-th frame (the reference's 5), SAM2 tracks in between
    instruction: Optional[str] = None


def display_rgb(frame: np.ndarray, encoding: str) -> np.ndarray:
    """Plate frame (H, W, C>=3) float -> uint8 RGB for the models (sRGB-encoded if the plate is linear)."""
    rgb = np.clip(np.asarray(frame, np.float32)[..., :3], 0.0, 1.0)
    if encoding == "linear":
        rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _resize(image: np.ndarray, long_side: int, nearest: bool = False) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = min(1.0, long_side / max(h, w))
    if s >= 1.0:
        return image
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    if nearest:
        return cv2.resize(image.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(image.dtype)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sample_indices(total: int, count: int) -> List[int]:
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, min(count, total))})


class AutoReasoner:
    def __init__(self, vlm: Optional[VLMBackend], tracker: Optional[Sam2Tracker],
                 settings: Optional[AutoSettings] = None, text_segmenter: Optional[Sam3TextSegmenter] = None) -> None:
        self.vlm, self.tracker, self.text_segmenter = vlm, tracker, text_segmenter
        self.settings = settings or AutoSettings()

    @classmethod
    def from_model_dir(cls, model_dir: Union[str, Path], device: str = "cuda", vlm: str = DEFAULT_VLM,
                       sam2: str = DEFAULT_SAM2, sam3: str = DEFAULT_SAM3,
                       settings: Optional[AutoSettings] = None,
                       vlm_backend: Optional[VLMBackend] = None) -> "AutoReasoner":
        """Loads MODEL_DIR/<vlm> (unless `vlm_backend` answers instead, e.g. remote_vlm.OpenAICompatibleVLM) and
        MODEL_DIR/<sam2>, and MODEL_DIR/<sam3> if it is there (it is optional and gated); each may also be an
        absolute path."""
        root = Path(model_dir)
        vlm_dir, sam_dir, sam3_dir = root / vlm, root / sam2, root / sam3
        for d in ([] if vlm_backend is not None else [vlm_dir]) + [sam_dir]:
            if not (d / "config.json").is_file():
                raise FileNotFoundError(
                    "auto mask mode needs %s (run `void-server download --reasoning`)" % d)
        text = Sam3TextSegmenter.from_pretrained(sam3_dir, device) if (sam3_dir / "config.json").is_file() else None
        backend = vlm_backend if vlm_backend is not None else LocalVLM.from_pretrained(vlm_dir, device)
        return cls(backend, Sam2Tracker.from_pretrained(sam_dir, device), settings, text)

    def unload(self) -> None:
        """Frees the VLM, SAM2 and SAM3 before the diffusion passes need the memory."""
        for part in (self.vlm, self.tracker, self.text_segmenter):
            if part is not None and hasattr(part, "unload"):
                part.unload()
        self.vlm = self.tracker = self.text_segmenter = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # -- the AffectedReasoner protocol --------------------------------------------------------------------------

    def affected(self, plate: FrameSource, target: np.ndarray, notes: List[str]) -> np.ndarray:
        t, h, w = target.shape
        empty = np.zeros((t, h, w), bool)
        if self.vlm is None or self.tracker is None:
            notes.append("auto mask: reasoning models unloaded: target only")
            return empty
        s = self.settings
        grid = Grid.for_size(h, w)
        frames = [_resize(display_rgb(plate[i], s.input_encoding), s.track_long_side) for i in range(t)]
        small_target = np.stack([_resize(target[i].astype(np.uint8), s.track_long_side, nearest=True) > 0
                                 for i in range(t)])
        shown = sample_indices(t, s.sample_frames)
        images = [self._shown(frames[i], small_target[i], grid, i) for i in shown]
        tag = "auto mask (%s, prompt %s)" % (getattr(self.vlm, "name", "VLM"), PROMPT_VERSION)
        try:
            result = ask(self.vlm, images, build_prompt(grid, shown, t, s.instruction),
                         lambda text: parse_answer(text, grid.rows, grid.cols, t))
        except VLMUnavailable as e:  # a remote VLM down or refusing: like a malformed answer, not the job's end
            notes.append("%s: %s: target only" % (tag, e))
            return empty
        if result.answer is None:
            notes.append("%s: VLM answer malformed twice (%s): target only" % (tag, result.error))
            return empty
        answer = result.answer
        if len(result.replies) > 1:
            notes.append("%s: first answer malformed, the retry parsed" % tag)
        if answer.scene:
            notes.append("%s: scene without the target: %s" % (tag, answer.scene))
        if not answer.objects:
            notes.append("%s: the VLM found nothing the target affects: target only" % tag)
            return empty
        small = self._segment(answer, frames, small_target, grid, notes, tag)
        return self._to_plate(small, grid, h, w)

    # -- steps ----------------------------------------------------------------------------------------------------

    def _shown(self, frame: np.ndarray, target: np.ndarray, grid: Grid, index: int) -> np.ndarray:
        img = _resize(outline_target(frame, target), self.settings.vlm_long_side)
        return label_frame(draw_grid(img, grid), "frame %d" % index)

    def _segment(self, answer: Answer, frames: List[np.ndarray], target: np.ndarray, grid: Grid,
                 notes: List[str], tag: str) -> np.ndarray:
        t, h, w = target.shape
        work_grid = grid.scaled(h, w)
        near = near_target(target, proximity_radius(h, w, self.settings.proximity_at_4k))
        prompts = [prompts_for(o, work_grid) for o in answer.objects]
        by_name = [not p and self.text_segmenter is not None for p in prompts]
        for i, obj in enumerate(answer.objects):
            if by_name[i]:
                prompts[i] = self._name_prompts(frames, obj.name, near)
        masks = self.tracker.track(frames, prompts)
        out = np.zeros((t, h, w), bool)
        described = []
        for obj, located, named, mask in zip(answer.objects, prompts, by_name, masks):
            if not located and not named:
                described.append("%s (%s): not located, skipped" % (obj.name, obj.kind))
                continue
            # Visual effects belong to the target: only pieces touching it count, as for anything found by its
            # name (a name matches every such thing in the shot; the reference filters its SAM3 masks the same
            # way). Physical objects the VLM located stay whole (a held bag, a pushed cart), and movers also
            # cover where they would now go.
            region = keep_near(mask, near) if obj.kind in VISUAL_KINDS or named else mask
            if obj.will_move and obj.path:
                region = region | sweep_along_path(mask, obj.path, work_grid)
            out |= region
            how = "not located, SAM3 text every %d frames, tracked, " % self.settings.text_every if named else ""
            described.append("%s (%s%s): %s%d frames" % (
                obj.name, obj.kind, ", moves" if obj.will_move else "", how, int(region.any(axis=(1, 2)).sum())))
        notes.append("%s: %s" % (tag, "; ".join(described)))
        return out

    def _name_prompts(self, frames: List[np.ndarray], name: str, near: np.ndarray) -> List[Prompt]:
        """An object the VLM named but did not locate: SAM3 finds the name on keyframes; the pieces near the target
        become SAM2 mask prompts there, so the object is tracked through the frames between (the reference holds
        each keyframe's mask instead)."""
        keys = self.text_segmenter.keyframes(frames, name, self.settings.text_every)
        return mask_prompts({k: keep_near(m[None], near[k][None])[0] for k, m in keys.items()})

    def _to_plate(self, small: np.ndarray, grid: Grid, h: int, w: int) -> np.ndarray:
        import cv2

        out = np.zeros((len(small), h, w), bool)
        for i, m in enumerate(small):
            if m.any():
                full = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                out[i] = grid.gridify(full) if self.settings.gridify else full
        return out
