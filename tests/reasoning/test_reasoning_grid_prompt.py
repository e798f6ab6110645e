"""Grid geometry and drawing, and the prompt text."""
from __future__ import annotations

import numpy as np
import pytest

from void_server.reasoning.grid import Grid, draw_grid, label_frame, outline_target
from void_server.reasoning.prompt import PROMPT_VERSION, SYSTEM_PROMPT, build_prompt, retry_prompt
from void_server.reasoning.schema import KINDS


@pytest.mark.parametrize("h, w, rows, cols", [
    (1080, 1920, 8, 14), (2160, 3840, 8, 14), (2160, 4096, 8, 15), (360, 544, 8, 12),
    (1000, 1000, 8, 8), (1920, 1080, 14, 8), (100, 50, 16, 8),
])
def test_grid_shape(h, w, rows, cols):
    g = Grid.for_size(h, w)
    assert (g.rows, g.cols) == (rows, cols)


def test_cells_tile_the_frame_exactly():
    g = Grid.for_size(360, 544)
    cover = np.zeros((360, 544), int)
    for r in range(g.rows):
        for c in range(g.cols):
            x0, y0, x1, y1 = g.cell_box(r, c)
            cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()
    assert g.cell_box(0, 0) == (0, 0, 45, 45)
    assert g.cell_box(7, 11) == (499, 315, 544, 360)


def test_cells_mask_and_gridify():
    g = Grid.for_size(80, 120)  # 8 x 12 cells of 10 x 10
    m = g.cells_mask([(1, 2), (7, 11), (8, 0), (-1, 3)])  # the last two are off the grid
    assert m.sum() == 200 and m[10:20, 20:30].all() and m[70:80, 110:120].all()
    dot = np.zeros((80, 120), bool)
    dot[35, 47] = True
    assert np.array_equal(g.gridify(dot), g.cells_mask([(3, 4)]))
    assert not g.gridify(np.zeros_like(dot)).any()


def test_drawing_changes_pixels_where_expected():
    img = np.full((90, 160, 3), 40, np.uint8)
    g = Grid.for_size(90, 160)
    gridded = draw_grid(img, g)
    assert gridded.shape == img.shape and gridded.dtype == np.uint8
    assert (gridded[0, :, :] == (255, 255, 0)).all(axis=-1).any()  # the top grid line is yellow
    assert np.array_equal(img, np.full((90, 160, 3), 40, np.uint8))  # the input is untouched
    target = np.zeros((90, 160), bool)
    target[30:60, 50:100] = True
    red = outline_target(img, target)
    assert red[45, 75, 0] > red[45, 75, 1] + 50  # tinted red inside
    assert np.array_equal(red[5, 5], img[5, 5])  # untouched outside
    assert not np.array_equal(label_frame(img, "frame 3"), img)


def test_prompt_carries_grid_frames_and_format():
    g = Grid.for_size(360, 544)
    p = build_prompt(g, [0, 5, 10], 11, instruction='remove the "tower"')
    assert "8 rows x 12 columns" in p and "rows 0..7" in p and "columns 0..11" in p
    assert "frame numbers 0, 5, 10" in p and "11 frames" in p
    assert "red" in p.lower() and "JSON" in p
    for kind in KINDS:
        assert '"%s"' % kind in p
    assert "remove the 'tower'" in p
    assert "{" in p and "{{" not in p  # format escapes resolved
    assert PROMPT_VERSION and "JSON" in SYSTEM_PROMPT
    assert "bad thing" in retry_prompt("bad thing")
