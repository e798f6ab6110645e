"""Region of interest: run the model on a crop around the edit region instead of the whole (squashed) frame.

The reference squashes every plate to 384x672, so a small object in a 4K plate is removed at a fraction of the
plate's resolution. When the edit region is small we crop a box around it at the model's aspect ratio instead.

Padding rule (why: the model fills the hole from what it sees around it, so it needs context on every side):
1. Union bounding box of every non-keep pixel over all frames (bw x bh).
2. Pad each side by half the box's longer side, at least `MIN_PAD_PX`: the region then fills at most about half
   of the crop in its longer direction.
3. Grow the shorter direction (about the centre) to the model's aspect (width / height, 1.75 for 384x672).
4. Never smaller than the model resolution itself (a smaller crop would be upscaled: no detail to gain).
5. If the box is wider or taller than `MAX_FRACTION` of the frame, return None (whole frame): the gain in
   resolution would be small and the lost context is not worth it. Otherwise shift it inside the frame.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ...reasoning.combine import KEEP

MIN_PAD_PX = 16
MAX_FRACTION = 0.8


def edit_bounds(quadmask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(x0, y0, x1, y1), ends exclusive, of all non-keep pixels over all frames; None if there are none.
    Reads one frame at a time, so a memory-mapped 4K quadmask is never copied whole."""
    q = quadmask
    if q.ndim != 3:
        raise ValueError("quadmask must be (T, H, W), got shape %s" % (q.shape,))
    rows = np.zeros(q.shape[1], bool)
    cols = np.zeros(q.shape[2], bool)
    for t in range(q.shape[0]):
        edit = np.asarray(q[t]) != KEEP
        rows |= edit.any(axis=1)
        cols |= edit.any(axis=0)
    if not rows.any():
        return None
    ys, xs = np.flatnonzero(rows), np.flatnonzero(cols)
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def choose_roi(
    quadmask: np.ndarray, model_hw: Tuple[int, int] = (384, 672), enabled: bool = True
) -> Optional[Tuple[int, int, int, int]]:
    """Crop box (x0, y0, x1, y1) in plate pixels, ends exclusive, at the model's aspect; None = whole frame."""
    if not enabled:
        return None
    bounds = edit_bounds(quadmask)
    if bounds is None:
        return None
    H, W = int(quadmask.shape[1]), int(quadmask.shape[2])
    mh, mw = model_hw
    aspect = mw / float(mh)
    x0, y0, x1, y1 = bounds
    bw, bh = x1 - x0, y1 - y0
    pad = max(0.5 * max(bw, bh), MIN_PAD_PX)
    w, h = bw + 2 * pad, bh + 2 * pad
    h = max(h, w / aspect, mh)
    h_px = int(round(h))
    w_px = int(round(h_px * aspect))
    if w_px > MAX_FRACTION * W or h_px > MAX_FRACTION * H:
        return None
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    bx = int(round(cx - w_px / 2.0))
    by = int(round(cy - h_px / 2.0))
    bx = min(max(bx, 0), W - w_px)
    by = min(max(by, 0), H - h_px)
    return bx, by, bx + w_px, by + h_px
