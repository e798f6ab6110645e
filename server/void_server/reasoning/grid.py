"""The labelled grid the VLM answers in, and the drawing of what it is shown.

Geometry follows the reference: 8 cells along the short side, as many along the long side as keep cells about
square (16:9 -> 8x14, 544x360 -> 8x12). Cell (row, col) is 0-based from the top left. Cell edges are rounded
pixel positions, so the cells tile the frame exactly at any resolution.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Tuple

import numpy as np

SHORT_SIDE_CELLS = 8
GRID_COLOUR = (255, 255, 0)  # yellow, as in the reference (RGB)
TARGET_COLOUR = (255, 0, 0)
TARGET_TINT = 0.4  # the reference's red overlay opacity


@dataclasses.dataclass(frozen=True)
class Grid:
    rows: int
    cols: int
    height: int
    width: int

    @classmethod
    def for_size(cls, height: int, width: int, short_side: int = SHORT_SIDE_CELLS) -> "Grid":
        if width >= height:
            return cls(short_side, max(short_side, int(round(short_side * width / height))), height, width)
        return cls(max(short_side, int(round(short_side * height / width))), short_side, height, width)

    def scaled(self, height: int, width: int) -> "Grid":
        """The same cells over an image of another size."""
        return Grid(self.rows, self.cols, height, width)

    def _edges(self, n: int, size: int) -> np.ndarray:
        return np.round(np.arange(n + 1) * size / n).astype(int)

    def cell_box(self, row: int, col: int) -> Tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1), end exclusive."""
        ys, xs = self._edges(self.rows, self.height), self._edges(self.cols, self.width)
        return int(xs[col]), int(ys[row]), int(xs[col + 1]), int(ys[row + 1])

    def contains(self, row: int, col: int) -> bool:
        return 0 <= row < self.rows and 0 <= col < self.cols

    def cells_mask(self, cells: Iterable[Tuple[int, int]]) -> np.ndarray:
        m = np.zeros((self.height, self.width), bool)
        for r, c in cells:
            if self.contains(r, c):
                x0, y0, x1, y1 = self.cell_box(r, c)
                m[y0:y1, x0:x1] = True
        return m

    def gridify(self, mask: np.ndarray) -> np.ndarray:
        """Any set pixel fills its whole cell (the reference's grey-mask look, which VOID was trained on)."""
        ys, xs = self._edges(self.rows, self.height), self._edges(self.cols, self.width)
        out = np.zeros_like(mask, dtype=bool)
        for r in range(self.rows):
            for c in range(self.cols):
                if mask[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].any():
                    out[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = True
        return out


def draw_grid(image: np.ndarray, grid: Grid) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> a copy with grid lines and a "row,col" label in every cell."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    g = grid.scaled(h, w)
    thick = max(1, int(round(min(h, w) / 400)))
    scale = max(0.25, min(h, w) / 1000)
    for r in range(g.rows):
        for c in range(g.cols):
            x0, y0, x1, y1 = g.cell_box(r, c)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), GRID_COLOUR, thick)
            label = "%d,%d" % (r, c)
            org = (x0 + 2 * thick, y0 + int(14 * scale * 1.5) + thick)
            # Dark outline under the yellow text keeps labels legible on bright plates.
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, GRID_COLOUR, thick, cv2.LINE_AA)
    return out


def outline_target(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """uint8 RGB + bool mask (same H, W) -> a copy with the target tinted red and its outline drawn."""
    import cv2

    out = image.astype(np.float32)
    m = target.astype(bool)
    out[m] = out[m] * (1 - TARGET_TINT) + np.array(TARGET_COLOUR, np.float32) * TARGET_TINT
    out = np.clip(out, 0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, TARGET_COLOUR, max(1, int(round(min(m.shape) / 300))))
    return out


def label_frame(image: np.ndarray, text: str) -> np.ndarray:
    """Writes e.g. "frame 12" in the top right corner so the VLM can name the frame it means."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    scale = max(0.3, min(h, w) / 700)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    org = (w - tw - 6, th + 6)
    cv2.rectangle(out, (org[0] - 3, 2), (w - 2, th + 10), (0, 0, 0), -1)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
