"""segment.py's geometry: prompts from locations, the proximity filter, movers' sweep."""
from __future__ import annotations

import numpy as np

from void_server.reasoning.grid import Grid
from void_server.reasoning.schema import AffectedObject, Location, PathPoint
from void_server.reasoning.segment import (keep_near, mask_prompts, near_target, prompts_for, proximity_radius,
                                          sweep_along_path)


def test_prompts_from_cells_points_and_boxes():
    g = Grid.for_size(80, 120)  # 10 px cells
    obj = AffectedObject("x", "shadow", [
        Location(0, cells=[(1, 2), (2, 4)]),
        Location(3, points=[(500, 500)], box=(0, 0, 1000, 500)),
        Location(4),
    ])
    p0, p3 = prompts_for(obj, g)
    assert (p0.frame, p0.box, p0.points) == (0, (20, 10, 49, 29), [])
    assert (p3.frame, p3.box, p3.points) == (3, (0, 0, 120, 40), [(60, 40)])


def test_mask_prompts_skip_keyframes_with_nothing_found():
    found = np.zeros((8, 8), bool)
    found[2:4, 3:6] = True
    prompts = mask_prompts({10: found, 0: np.zeros((8, 8), bool), 5: found.T.copy()})
    assert [(p.frame, p.box, p.points) for p in prompts] == [(5, None, []), (10, None, [])]  # in frame order
    assert np.array_equal(prompts[0].mask, found.T) and np.array_equal(prompts[1].mask, found)


def test_proximity_radius_scales_with_resolution():
    assert proximity_radius(2160, 3840) == 25 and proximity_radius(1080, 1920) == 12
    assert proximity_radius(360, 544) == 4 and proximity_radius(10, 10) == 2


def test_keep_near_keeps_whole_touching_pieces():
    target = np.zeros((2, 40, 40), bool)
    target[:, 10:20, 10:20] = True
    near = near_target(target, 3)
    mask = np.zeros_like(target)
    mask[0, 21:24, 5:35] = True  # a long shadow touching the target's neighbourhood
    mask[0, 35:38, 35:38] = True  # something far away
    kept = keep_near(mask, near)
    assert kept[0, 21:24, 5:35].all() and not kept[0, 35:38, 35:38].any() and not kept[1].any()


def test_near_target_includes_first_frame_area():
    target = np.zeros((3, 30, 30), bool)
    target[1, 5:8, 5:8] = True
    target[2, 20:23, 20:23] = True
    near = near_target(target, 2)
    assert near[0, 6, 6] and not near[0, 21, 21]  # frame 0 gets the first-present frame's area only
    assert near[2, 6, 6] and near[2, 21, 21] and near[2, 24, 21] and not near[2, 27, 27]


def test_sweep_follows_the_path():
    g = Grid.for_size(80, 120)
    mask = np.zeros((5, 80, 120), bool)
    mask[0, 12:18, 22:28] = True  # a 6 x 6 object
    box = sweep_along_path(mask, [PathPoint(1, 1, 2), PathPoint(3, 5, 2)], g)
    assert not box[0].any()
    for i, cy in ((1, 15), (2, 35), (3, 55), (4, 55)):  # linear between keyframes, held after the last
        ys, xs = np.nonzero(box[i])
        assert (ys.min(), ys.max(), xs.min(), xs.max()) == (cy - 3, cy + 2, 22, 27)
