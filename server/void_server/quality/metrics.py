"""PSNR and SSIM of a clip against a reference clip, gathered a frame at a time (a 4K clip never sits in memory
twice). Values are compared on a data range of 1: display-referred frames in [0, 1], as the pipeline writes them
for video and PNG plates (scene-linear values above 1 count as they are)."""
from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np

LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # Rec. 709: SSIM is taken on luminance
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2  # Wang et al.'s constants for a data range of 1


def psnr_db(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two (H, W, >=3) frames on luminance: Wang et al.'s 11x11 Gaussian window, sigma 1.5."""
    import cv2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    x = np.ascontiguousarray(a[..., :3], np.float32) @ LUMA
    y = np.ascontiguousarray(b[..., :3], np.float32) @ LUMA
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2))


class ClipDifference:
    """A clip against a reference clip, fed frame by frame (`add`); `result()` gives PSNR and SSIM over the whole
    frame and over the edit region (where the quadmask is not 255: all that the pipeline may change), and the
    relative L2 of the difference. The means run over every pixel of every frame (not a mean of per-frame
    figures), so a clip given whole in one frame-sized loop and the same clip given frame by frame agree."""

    def __init__(self) -> None:
        self._sq = {"frame": 0.0, "edit": 0.0}  # summed squared differences (over the 3 channels)
        self._ssim = {"frame": 0.0, "edit": 0.0}
        self._pixels = {"frame": 0, "edit": 0}
        self._ref_sq = 0.0
        self.frames = 0

    def add(self, frame: np.ndarray, reference: np.ndarray, edit: Optional[np.ndarray] = None) -> None:
        """One frame (H, W, 3) and its reference; `edit` (H, W) bool marks the edit region (None: none)."""
        if frame.shape != reference.shape:
            raise ValueError("frame %s and reference %s differ in shape" % (frame.shape, reference.shape))
        a = np.asarray(frame, np.float64)[..., :3]
        b = np.asarray(reference, np.float64)[..., :3]
        sq = ((a - b) ** 2).sum(axis=-1)  # per pixel, over the channels
        smap = ssim_map(frame, reference)
        edit = np.zeros(sq.shape, bool) if edit is None else np.asarray(edit, bool)
        self._sq["frame"] += float(sq.sum())
        self._sq["edit"] += float(sq[edit].sum())
        self._ssim["frame"] += float(smap.sum(dtype=np.float64))
        self._ssim["edit"] += float(smap[edit].sum(dtype=np.float64))
        self._pixels["frame"] += sq.size
        self._pixels["edit"] += int(edit.sum())
        self._ref_sq += float((b ** 2).sum())
        self.frames += 1

    def result(self) -> Dict[str, float]:
        """psnr_db, psnr_edit_db, ssim, ssim_edit, rel_l2 (NaN where a region had no pixels)."""
        out: Dict[str, float] = {}
        for region, suffix in (("frame", ""), ("edit", "_edit")):
            p = self._pixels[region]
            out["psnr%s_db" % suffix] = psnr_db(self._sq[region] / (3 * p)) if p else float("nan")
            out["ssim%s" % suffix] = self._ssim[region] / p if p else float("nan")
        out["rel_l2"] = math.sqrt(self._sq["frame"] / self._ref_sq) if self._ref_sq else float("nan")
        return out


def compare_clips(clip: np.ndarray, reference: np.ndarray, quadmask: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Two whole clips (T, H, W, 3), the edit region from a (T, H, W) quadmask (!= 255): ClipDifference's result."""
    diff = ClipDifference()
    for i in range(len(clip)):
        diff.add(clip[i], reference[i], None if quadmask is None else quadmask[i] != 255)
    return diff.result()
