"""combine.py exactly, and the manual round trip through the quadmask stage on the BigBen sample."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from void_server.media.frames import ArrayFrames
from void_server.pipelines.base import PipelineInputs, PipelineSettings
from void_server.reasoning.combine import (
    AFFECTED, KEEP, OVERLAP, REMOVE, combine, from_regions, quantise, to_regions,
)
from void_server.reasoning.quadmask import build_quadmask


def test_combine_truth_table():
    # Every (target, affected) pair of matte values around the 0.5 threshold.
    values = [0.0, 0.25, 0.5, 0.5001, 0.75, 1.0]
    pairs = list(itertools.product(values, values))
    t = np.array([[p[0] for p in pairs]], np.float32)
    a = np.array([[p[1] for p in pairs]], np.float32)
    q = combine(t, a)
    for (tv, av), got in zip(pairs, q[0]):
        want = {(True, True): OVERLAP, (True, False): REMOVE, (False, True): AFFECTED, (False, False): KEEP}
        assert got == want[(tv > 0.5, av > 0.5)], (tv, av, got)
    assert q.dtype == np.uint8


def test_combine_without_affected_and_shape_check():
    t = np.zeros((4, 5), np.float32)
    t[1:3, 1:3] = 1
    q = combine(t)
    assert set(np.unique(q)) == {REMOVE, KEEP} and (q == REMOVE).sum() == 4
    with pytest.raises(ValueError, match="affected matte"):
        combine(t, np.zeros((5, 4), np.float32))


def test_combine_dilation_grows_affected_only():
    t = np.zeros((21, 21), np.float32)
    a = np.zeros_like(t)
    a[10, 10] = 1
    t[10, 12] = 1
    q0, q2 = combine(t, a), combine(t, a, dilation=2)
    assert (q0 == AFFECTED).sum() == 1
    # The grown region is the 5x5 elliptical structuring element stamped on the affected pixel.
    import cv2

    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)) > 0
    grown = np.zeros(t.shape, bool)
    grown[8:13, 8:13] = disc
    assert np.array_equal((q2 == AFFECTED) | (q2 == OVERLAP), grown)
    assert q2[10, 12] == OVERLAP and (q2 == REMOVE).sum() == 0  # the target pixel inside it becomes overlap
    assert q2[10, 13] == KEEP and q2[5, 10] == KEEP


def test_quantise_levels():
    v = np.array([0, 31, 32, 95, 96, 191, 192, 255], np.float32)
    assert quantise(v).tolist() == [0, 0, 63, 63, 127, 127, 255, 255]


def test_bigben_is_a_real_quadmask(bigben_quadmask):
    q = bigben_quadmask
    assert q.shape == (50, 360, 544)
    assert set(np.unique(q)) == {REMOVE, AFFECTED, KEEP}


def test_regions_round_trip(bigben_quadmask):
    for q in bigben_quadmask[::7]:
        assert np.array_equal(from_regions(*to_regions(q)), q)


def test_manual_round_trip_through_build_quadmask(bigben_quadmask, tmp_path):
    q = bigben_quadmask[:12]
    remove, overlap, affected = (np.stack(r) for r in zip(*(to_regions(f) for f in q)))
    target = np.maximum(remove, overlap)  # what the artist's target roto covers
    affected_matte = np.maximum(overlap, affected)
    plate = ArrayFrames(np.zeros(q.shape + (3,), np.float32))
    inputs = PipelineInputs(
        plate=plate,
        settings=PipelineSettings(prompt="x", mask_mode="manual"),
        workdir=tmp_path / "job",
        target=ArrayFrames(target),
        affected=ArrayFrames(affected_matte),
    )
    notes = []
    out = np.asarray(build_quadmask(inputs, notes=notes))
    # Exact, except the reference's stage-4 rule: no affected (127) on the first frame.
    expected = q.copy()
    expected[0][expected[0] == AFFECTED] = KEEP
    assert (q[0] == AFFECTED).any() and np.array_equal(out, expected)
    assert any("first frame was cleared" in n for n in notes)


def test_a_ready_quadmask_keeps_its_first_frame(bigben_quadmask, tmp_path):
    q = bigben_quadmask[:3]
    inputs = PipelineInputs(plate=ArrayFrames(np.zeros(q.shape + (3,), np.float32)),
                            settings=PipelineSettings(prompt="x", mask_mode="quadmask"), workdir=tmp_path / "job",
                            quadmask=ArrayFrames(q.astype(np.float32)))
    assert np.array_equal(np.asarray(build_quadmask(inputs)), q)


def test_manual_round_trip_with_overlap(tmp_path):
    # BigBen has no 63: build a quadmask with all four levels and round-trip it the same way.
    rng = np.random.default_rng(0)
    q = rng.choice(np.array([REMOVE, OVERLAP, AFFECTED, KEEP], np.uint8), size=(3, 16, 24))
    remove, overlap, affected = (np.stack(r) for r in zip(*(to_regions(f) for f in q)))
    inputs = PipelineInputs(
        plate=ArrayFrames(np.zeros(q.shape + (3,), np.float32)),
        settings=PipelineSettings(prompt="x", mask_mode="manual"),
        workdir=tmp_path / "job",
        target=ArrayFrames(np.maximum(remove, overlap)),
        affected=ArrayFrames(np.maximum(overlap, affected)),
    )
    expected = q.copy()
    expected[0][expected[0] == AFFECTED] = KEEP  # the first frame's affected level is cleared; its overlap stays
    assert (q[0] == OVERLAP).any() and np.array_equal(np.asarray(build_quadmask(inputs)), expected)


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_quadmask_sealed_later_is_read_before_its_checkpoint_counts(bigben_quadmask, tmp_path, monkeypatch,
                                                                      in_memory):
    # The job reads the quadmask while its checkpoint is written elsewhere; only the seal writes the marker a
    # restart trusts, after the file, so a marker never stands for a file not yet on disk. Built in memory (a
    # short clip) or straight into the mapped file (a long one), the same.
    from void_server.reasoning import quadmask as stage
    from void_server.reasoning.quadmask import DONE_MARKER, open_checkpoint

    monkeypatch.setattr(stage, "IN_MEMORY_BYTES", 1 << 40 if in_memory else 0)

    q = bigben_quadmask[:3]
    inputs = PipelineInputs(plate=ArrayFrames(np.zeros(q.shape + (3,), np.float32)),
                            settings=PipelineSettings(prompt="x", mask_mode="quadmask"), workdir=tmp_path / "job",
                            quadmask=ArrayFrames(q.astype(np.float32)))
    seals = []
    out = build_quadmask(inputs, seal_later=seals.append)
    assert np.array_equal(np.asarray(out), q) and len(seals) == 1
    assert isinstance(out, np.memmap) is not in_memory and not out.flags.writeable
    assert not (tmp_path / "job" / DONE_MARKER).exists() and open_checkpoint(tmp_path / "job", q.shape) is None
    seals[0]()
    assert np.array_equal(np.asarray(open_checkpoint(tmp_path / "job", q.shape)), q)


@pytest.mark.parametrize("where", [None, 0, 2])
def test_a_quadmask_with_nothing_to_remove_is_refused_and_one_frame_of_content_is_enough(tmp_path, where):
    # The stage checks each frame as it is written (no pass over the whole clip after): content on any one frame,
    # the last included, must count.
    from void_server.reasoning.quadmask import build_quadmask

    q = np.full((3, 4, 6), KEEP, np.uint8)
    if where is not None:
        q[where, 1, 2] = 0
    inputs = PipelineInputs(plate=ArrayFrames(np.zeros(q.shape + (3,), np.float32)),
                            settings=PipelineSettings(prompt="x", mask_mode="quadmask"), workdir=tmp_path / "job",
                            quadmask=ArrayFrames(q.astype(np.float32)))
    if where is None:
        with pytest.raises(ValueError, match="empty on every frame"):
            build_quadmask(inputs)
    else:
        assert np.array_equal(np.asarray(build_quadmask(inputs)), q)
