"""Where the result nodes and their backdrop go in the node graph. Pure Python, positions in DAG units.

Results sit to the right of the VOID node; a later version goes below any earlier backdrop it would overlap, so
previous results are never covered or moved.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

try:
    from dataclasses import dataclass
except ImportError:  # pragma: no cover
    raise

CELL_W = 120  # a node is ~80 wide; room for labels
CELL_H = 90
PAD = 30
LABEL_H = 60  # the backdrop's title area


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    def overlaps(self, other: "Rect") -> bool:
        return (self.x < other.x + other.w and other.x < self.x + self.w
                and self.y < other.y + other.h and other.y < self.y + self.h)

    def moved(self, dx: int, dy: int) -> "Rect":
        return Rect(self.x + dx, self.y + dy, self.w, self.h)


def result_cells(region_names: Sequence[str], extra: Sequence[str] = ()) -> Dict[str, Tuple[int, int]]:
    """Grid cells (column, row) of the result nodes: clean Read, quadmask Read, one Shuffle per region (+ extra
    layers such as pass1), the QC switch and the QC merge."""
    cells = {"clean": (0, 0), "quadmask": (1, 0)}  # type: Dict[str, Tuple[int, int]]
    for i, name in enumerate(list(region_names) + ["all"]):
        cells["shuffle_" + name] = (1 + i, 1)
    for i, name in enumerate(extra):
        cells["layer_" + name] = (0, 1 + i)
    cells["qc_switch"] = (1, 2)
    cells["qc_merge"] = (1, 3)
    return cells


def place(anchor: Rect, cells: Dict[str, Tuple[int, int]], obstacles: Iterable[Rect] = (),
          node_w: int = 80, node_h: int = 20) -> Tuple[Dict[str, Tuple[int, int]], Rect]:
    """Positions for `cells` and the backdrop rectangle around them, right of `anchor`, clear of `obstacles`."""
    cols = max(c for c, _ in cells.values()) + 1
    rows = max(r for _, r in cells.values()) + 1
    backdrop = Rect(anchor.x + anchor.w + 2 * PAD, anchor.y - LABEL_H,
                    cols * CELL_W + 2 * PAD - (CELL_W - node_w), rows * CELL_H + LABEL_H + PAD - (CELL_H - node_h))
    blockers = list(obstacles)  # type: List[Rect]
    moved = True
    while moved:  # step below whatever is in the way until the spot is free
        moved = False
        for other in blockers:
            if backdrop.overlaps(other):
                backdrop = Rect(backdrop.x, other.y + other.h + PAD, backdrop.w, backdrop.h)
                moved = True
    x0, y0 = backdrop.x + PAD, backdrop.y + LABEL_H
    positions = {name: (x0 + c * CELL_W, y0 + r * CELL_H) for name, (c, r) in cells.items()}
    return positions, backdrop
