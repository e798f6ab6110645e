"""Generated model-resolution frames -> the clean plate at plate resolution.

The model regenerates every pixel it sees (docs/void-reference.md: the reference composites nothing). We only
take its pixels inside the edit region (every quadmask value but keep), grown by a few pixels and feathered so
the seam is soft, and leave every other plate pixel bit-identical: HDR values, negatives, even NaN survive, as
do any channels beyond RGB.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ...reasoning.combine import KEEP
from .colour import from_model

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in plate pixels, ends exclusive

# Default seam, in model pixels (one model pixel covers box_width / model_width plate pixels): generation is
# least reliable right at the mask edge, so we take a little more than the mask and ramp over a few pixels.
DILATE_MODEL_PX = 2.0
FEATHER_MODEL_PX = 4.0


Crop = Tuple[int, int, int, int]  # r0, r1, c0, c1: rows and columns, ends exclusive


def edit_alpha_crop(quadmask: np.ndarray, dilate_px: float, feather_px: float) -> Optional[Tuple[Crop, np.ndarray]]:
    """uint8 quadmask (H, W) -> (crop, alpha) with alpha float32 over `crop`, the bounding box of its nonzero
    pixels, or None where nothing is edited: 1 on the edit region grown by `dilate_px`, ramping smoothly to exactly
    0 over the next `feather_px` pixels (Euclidean distance), 0 everywhere outside the crop.

    The distance transform runs only on the edit region's bounding box grown by the ramp's reach: every pixel
    farther away has alpha 0 whatever its distance, and every edit pixel lies inside that window, so the values are
    those of the whole-frame transform (a removal is usually a small part of a 4K frame)."""
    q = np.asarray(quadmask)
    if q.ndim != 2:
        raise ValueError("quadmask must be (H, W), got shape %s" % (q.shape,))
    edit = q != KEEP
    rows, cols = np.flatnonzero(edit.any(axis=1)), np.flatnonzero(edit.any(axis=0))
    if not len(rows):
        return None
    reach = int(np.ceil(dilate_px + max(feather_px, 0.0))) + 1
    H, W = q.shape
    y0, y1 = max(rows[0] - reach, 0), min(rows[-1] + 1 + reach, H)
    x0, x1 = max(cols[0] - reach, 0), min(cols[-1] + 1 + reach, W)
    # Exact Euclidean distance of every pixel to the nearest edit pixel (0 on the edit region itself). scipy's
    # transform works on integer squared distances, so it is bit-reproducible; OpenCV's precise mode differs by an
    # ulp between runs when frames are merged on several threads, which breaks "same seed, same result".
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~edit[y0:y1, x0:x1]).astype(np.float32)
    if feather_px <= 0:
        alpha = (dist <= dilate_px).astype(np.float32)
    else:
        t = np.clip((dilate_px + feather_px - dist) / feather_px, 0.0, 1.0)
        alpha = (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep: exact 0 and 1 at the ends
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return (y0 + r0, y0 + r1, x0 + c0, x0 + c1), alpha[r0:r1, c0:c1]


def edit_alpha(quadmask: np.ndarray, dilate_px: float, feather_px: float) -> np.ndarray:
    """`edit_alpha_crop` as a whole (H, W) float32 frame."""
    out = np.zeros(np.shape(quadmask), np.float32)
    found = edit_alpha_crop(quadmask, dilate_px, feather_px)
    if found is not None:
        (r0, r1, c0, c1), alpha = found
        out[r0:r1, c0:c1] = alpha
    return out


def _fit(generated01: np.ndarray, width: int, height: int, crop: Crop) -> np.ndarray:
    """Model-resolution frame -> (height, width), cubic up (sharper), area down (no aliasing); returns `crop` of it."""
    g = np.asarray(generated01, dtype=np.float32)
    if g.shape[:2] != (height, width):
        up = width * height > g.shape[0] * g.shape[1]
        g = cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
    r0, r1, c0, c1 = crop
    return np.clip(g[r0:r1, c0:c1], 0.0, 1.0)  # cubic overshoot; clipped where it is used only


def merge_frame(
    plate_rgb: np.ndarray,
    generated01: np.ndarray,
    quadmask: np.ndarray,
    box: Optional[Box],
    encoding: str,
    dilate_px: Optional[float] = None,
    feather_px: Optional[float] = None,
) -> np.ndarray:
    """Blend the generated frame over the plate inside the (dilated, feathered) edit region.

    plate_rgb (H, W, C>=3) in the plate's encoding; generated01 (h, w, 3) display-referred [0, 1] covering `box`
    (or the whole frame when None); quadmask (H, W) uint8. Returns an array shaped and typed like the plate.
    Alpha is cut at the box edge (the generated pixels stop there); the ROI padding keeps the seam inside it.
    """
    return merge_layers(plate_rgb, [generated01], quadmask, box, encoding, dilate_px, feather_px)[0]


Region = Optional[Tuple[Crop, np.ndarray]]  # edit_alpha_crop's result, in the box's coordinates
COMPUTE = object()  # merge_layers' `region` default: made from the quadmask there


def plate_box(box: Optional[Box], width: int, height: int) -> Box:
    """The plate rectangle a merge works in: `box`, or the whole plate where there is none (ROI off)."""
    return box if box is not None else (0, 0, width, height)


def edit_region(quadmask: np.ndarray, box: Optional[Box], model_width: int, dilate_px: Optional[float] = None,
                feather_px: Optional[float] = None) -> Region:
    """The edit alpha `merge_layers` blends one plate frame with: a function of its quadmask (H, W), the box and the
    model's width only, so it can be made before the generated frames exist (the merge makes the last frames'
    while the GPU denoises, pipeline._merge)."""
    q = np.asarray(quadmask)
    H, W = q.shape
    x0, y0, x1, y1 = plate_box(box, W, H)
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError("box %s is not inside the %dx%d plate" % ((x0, y0, x1, y1), W, H))
    scale = (x1 - x0) / float(model_width)  # plate pixels per model pixel
    dilate = DILATE_MODEL_PX * scale if dilate_px is None else dilate_px
    feather = FEATHER_MODEL_PX * scale if feather_px is None else feather_px
    return edit_alpha_crop(q[y0:y1, x0:x1], dilate, feather)


def merge_layers(
    plate_rgb: np.ndarray,
    generated01: Sequence[np.ndarray],
    quadmask: np.ndarray,
    box: Optional[Box],
    encoding: str,
    dilate_px: Optional[float] = None,
    feather_px: Optional[float] = None,
    region: object = COMPUTE,
) -> List[np.ndarray]:
    """`merge_frame` for several generated frames of the same plate frame (the clean plate and the pass-1 layer),
    all of one model resolution: the edit alpha is computed once for them all, or given (`region`: `edit_region`
    of this frame, box and the generated frames' width, made ahead)."""
    plate = np.asarray(plate_rgb)
    if plate.ndim != 3 or plate.shape[2] < 3:
        raise ValueError("plate must be (H, W, C>=3), got shape %s" % (plate.shape,))
    H, W = plate.shape[:2]
    if np.shape(quadmask) != (H, W):
        raise ValueError("quadmask is %s but the plate is %s" % (np.shape(quadmask), (H, W)))
    gens = [np.asarray(g) for g in generated01]
    for gen in gens:
        if gen.ndim != 3 or gen.shape[2] != 3:
            raise ValueError("generated frame must be (h, w, 3), got shape %s" % (gen.shape,))
        if gen.shape != gens[0].shape:
            raise ValueError("generated frames differ in size: %s and %s" % (gens[0].shape, gen.shape))
    found = edit_region(quadmask, box, gens[0].shape[1], dilate_px, feather_px) if region is COMPUTE else region
    if found is None:
        return [plate.copy() for _ in gens]
    x0, y0, x1, y1 = plate_box(box, W, H)
    # Colour conversion and blending only over the alpha's own bounding box: a removal is usually a small part
    # of the frame, and this is the per-frame cost that dominates the merge at plate resolution.
    (r0, r1, c0, c1), alpha = found
    a = alpha[..., None]
    under = plate[y0 + r0:y0 + r1, x0 + c0:x0 + c1, :3]
    out = []
    for gen in gens:
        fill = from_model(_fit(gen, x1 - x0, y1 - y0, (r0, r1, c0, c1)), encoding)
        blended = np.where(a >= 1.0, fill, under * (1.0 - a) + fill * a)
        merged = plate.copy()
        merged[y0 + r0:y0 + r1, x0 + c0:x0 + c1, :3] = np.where(a > 0.0, blended, under).astype(plate.dtype, copy=False)
        out.append(merged)
    return out
