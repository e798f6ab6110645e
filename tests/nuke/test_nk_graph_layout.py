from nuke_void import graph_layout as gl


def test_results_sit_right_of_the_node_inside_the_backdrop():
    anchor = gl.Rect(100, 200, 80, 18)
    cells = gl.result_cells(["remove", "overlap", "affected"])
    pos, bd = gl.place(anchor, cells)
    assert bd.x > anchor.x + anchor.w
    for x, y in pos.values():
        assert bd.x < x and x + 80 < bd.x + bd.w and bd.y < y and y + 20 < bd.y + bd.h
    assert len(set(pos.values())) == len(pos)  # no two nodes on top of each other


def test_next_version_goes_below_earlier_backdrops():
    anchor = gl.Rect(0, 0, 80, 18)
    cells = gl.result_cells(["remove"])
    _, first = gl.place(anchor, cells)
    _, second = gl.place(anchor, cells, [first])
    _, third = gl.place(anchor, cells, [first, second])
    assert not second.overlaps(first) and not third.overlaps(second) and not third.overlaps(first)
    assert first.y < second.y < third.y
