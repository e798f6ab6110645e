"""The tolerant parser on recorded well-formed and malformed answers."""
from __future__ import annotations

import pytest

from reasoning_helpers import ANSWERS, answer
from void_server.reasoning.schema import MAX_NAME, MAX_OBJECTS, ParseError, parse_answer

ROWS, COLS, FRAMES = 8, 14, 24


def parse(name: str):
    return parse_answer(answer(name), ROWS, COLS, FRAMES)


def test_good_shadow():
    a = parse("good_shadow.txt")
    assert len(a.objects) == 1 and a.scene == "An empty pavement in sunlight."
    o = a.objects[0]
    assert (o.name, o.kind, o.will_move, o.frames) == ("shadow of the man", "shadow", False, [0, 10])
    assert o.locations[0].cells == [(5, 3), (5, 4), (6, 4)]


def test_good_fenced_mover():
    a = parse("good_fenced_mover.txt")
    cup, ripples = a.objects
    assert cup.kind == "held" and cup.will_move
    assert [(p.frame, p.row, p.col) for p in cup.path] == [(5, 3, 6), (12, 4, 6), (20, 7, 6)]  # sorted by frame
    assert cup.locations[0].points == [(500, 400), (520, 430)] and cup.locations[0].box == (450, 350, 560, 480)
    assert ripples.locations[0].cells == [(7, 2), (7, 3)]  # {"row", "col"} cells as the reference writes them
    assert not ripples.will_move and ripples.path == []


def test_good_empty():
    assert parse("good_empty.txt").objects == []


def test_overlong_is_clipped_and_clamped():
    a = parse("good_overlong.txt")
    assert len(a.objects) == MAX_OBJECTS
    o = a.objects[0]
    assert len(o.name) == MAX_NAME and o.name == o.name.lower() and o.kind == "shadow"
    loc = o.locations[0]
    assert loc.frame == FRAMES - 1
    assert loc.cells == [(0, 0), (0, 12), (7, 11)]  # off-grid cells dropped
    assert loc.points == [(0, 1000)] and loc.box == (100, 800, 900, 1000)
    assert o.path == []  # a path only counts for movers
    assert a.objects[1].locations == [] and a.objects[2].locations == []  # a zero-width box is no location


def test_hostile_names_are_just_strings():
    a = parse("good_hostile_names.txt")
    assert a.objects[0].name == "../../etc/passwd"
    assert "\n" not in a.objects[1].name and len(a.objects[1].name) <= MAX_NAME
    assert a.scene == "<script>alert(1)</script>"


@pytest.mark.parametrize("name, message", [
    ("bad_truncated.txt", "no JSON object|invalid JSON"),
    ("bad_kind.txt", "kind is 'vehicle'; it must be one of shadow"),
    ("bad_prose.txt", "no JSON object"),
    ("bad_no_affected.txt", "no \"affected\" list"),
    ("bad_will_move.txt", "will_move must be true or false"),
])
def test_malformed(name, message):
    with pytest.raises(ParseError, match=message):
        parse(name)


def test_every_recorded_answer_is_covered():
    names = {p.name for p in ANSWERS.iterdir()}
    assert {n for n in names if n.startswith("good_")} and {n for n in names if n.startswith("bad_")}
    for n in names:
        if n.startswith("good_"):
            parse(n)
        else:
            with pytest.raises(ParseError):
                parse(n)


@pytest.mark.parametrize("text", ["", "{}", "[1, 2]", "{\"affected\": 3}", "{\"affected\": [7]}",
                                  "{\"affected\": [{\"kind\": \"shadow\"}]}"])
def test_junk(text):
    with pytest.raises(ParseError):
        parse_answer(text, ROWS, COLS, FRAMES)
