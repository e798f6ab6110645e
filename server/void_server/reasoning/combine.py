"""Target and affected mattes -> the 4-level quadmask, and back.

Values (the reference's): 0 remove (the target), 63 overlap of target and affected, 127 affected, 255 keep.
The three one-bit regions below are what the result EXRs carry as channels, so the raw quadmask can always be
rebuilt exactly from them (`from_regions(*to_regions(q)) == q`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

REMOVE, OVERLAP, AFFECTED, KEEP = 0, 63, 127, 255
QUADMASK_VALUES = (REMOVE, OVERLAP, AFFECTED, KEEP)
# The reference's thresholds for lossy (video-coded or resized) values: up to each bound, that level; above all, KEEP.
QUANTISE_BOUNDS = ((31, REMOVE), (95, OVERLAP), (191, AFFECTED))
MATTE_THRESHOLD = 0.5  # a matte pixel counts as set above this (soft roto edges split down the middle)


def combine(target: np.ndarray, affected: Optional[np.ndarray] = None, dilation: int = 0) -> np.ndarray:
    """Binary or soft mattes (H, W) -> uint8 quadmask (H, W). `dilation` grows the affected region (pixels)."""
    t = np.asarray(target) > MATTE_THRESHOLD
    if affected is None:
        a = np.zeros_like(t)
    else:
        if affected.shape != target.shape:
            raise ValueError("affected matte is %s but target matte is %s" % (affected.shape, target.shape))
        a = np.asarray(affected) > MATTE_THRESHOLD
        if dilation > 0 and a.any():
            import cv2

            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilation + 1, 2 * dilation + 1))
            a = cv2.dilate(a.astype(np.uint8), k) > 0
    q = np.full(t.shape, KEEP, np.uint8)
    q[a] = AFFECTED
    q[t] = REMOVE
    q[t & a] = OVERLAP
    return q


def quantise(values: np.ndarray) -> np.ndarray:
    """Lossy (video-coded or resized) quadmask values -> exact levels, with the reference's thresholds."""
    v = np.asarray(values, dtype=np.float32)
    q = np.full(v.shape, KEEP, np.uint8)
    for bound, level in reversed(QUANTISE_BOUNDS):
        q[v <= bound] = level
    return q


def to_regions(quadmask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 quadmask -> float32 0/1 mattes (remove, overlap, affected), each viewable alone."""
    q = np.asarray(quadmask)
    return ((q == REMOVE).astype(np.float32), (q == OVERLAP).astype(np.float32), (q == AFFECTED).astype(np.float32))


def from_regions(remove: np.ndarray, overlap: np.ndarray, affected: np.ndarray) -> np.ndarray:
    """The inverse of `to_regions`: exact for anything `to_regions` produced."""
    q = np.full(np.shape(remove), KEEP, np.uint8)
    q[np.asarray(affected) > 0.5] = AFFECTED
    q[np.asarray(overlap) > 0.5] = OVERLAP
    q[np.asarray(remove) > 0.5] = REMOVE
    return q
