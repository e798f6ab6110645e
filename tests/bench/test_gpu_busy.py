"""bench/gpu_busy.py: the GPU's busy time per stage from profiler intervals (the arithmetic; the profiler itself runs
on the device)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import gpu_busy  # noqa: E402

MS = 1_000_000


def test_overlapping_kernels_on_two_streams_count_once():
    assert gpu_busy.merge([(5, 9), (0, 3), (2, 4), (9, 10), (12, 13)]) == [(0, 4), (5, 10), (12, 13)]
    assert gpu_busy.merge([(0, 10), (2, 3)]) == [(0, 10)]


def test_busy_time_is_clipped_to_the_span():
    merged = [(0, 4), (5, 10), (12, 13)]
    assert gpu_busy.busy_within(merged, 3, 12) == 1 + 5
    assert gpu_busy.busy_within(merged, 10, 12) == 0


def test_gaps_include_the_edges_and_skip_short_ones():
    merged = [(2, 4), (5, 10), (20, 25)]
    assert gpu_busy.gaps(merged, 0, 30, at_least_ns=2) == [(0, 2), (10, 20), (25, 30)]
    assert gpu_busy.gaps(merged, 3, 22, at_least_ns=2) == [(10, 20)]


def test_the_table_splits_a_job_into_stages_and_names_where_each_gap_began():
    merged = [(0 * MS, 90 * MS), (100 * MS, 200 * MS), (260 * MS, 300 * MS)]
    spans = [("pass1.encode", 0, 95 * MS), ("pass1.denoise", 95 * MS, 200 * MS), ("pass1", 0, 200 * MS),
             ("pass2_noise", 200 * MS, 300 * MS)]
    table = gpu_busy.busy_table(merged, spans, (0, 300 * MS))
    assert table["job"]["wall_s"] == pytest.approx(0.3) and table["job"]["gpu_idle_s"] == pytest.approx(0.07)
    assert table["stages"]["pass1.encode"]["gpu_idle_s"] == pytest.approx(0.005)
    assert table["stages"]["pass1"]["gpu_busy_s"] == pytest.approx(0.19)
    assert table["stages"]["pass2_noise"]["gpu_idle_s"] == pytest.approx(0.06)
    # longest first; a gap is named by the innermost stage it began in
    assert [(round(g["idle_s"], 3), g["stage"]) for g in table["longest_gaps"]] == [(0.06, "pass2_noise"),
                                                                                    (0.01, "pass1.encode")]


def test_stage_spans_record_each_stage_and_put_the_clock_back():
    from void_server.pipelines.stage_clock import StageClock

    original = StageClock.__call__
    clock = StageClock()
    with gpu_busy.stage_spans() as spans:
        with clock("quadmask"):
            pass
        with clock.child("pass1")("denoise"):
            pass
    assert [name for name, _, _ in spans] == ["quadmask", "pass1.denoise"]
    assert all(start <= end for _, start, end in spans)
    assert set(clock.timings) == {"quadmask", "pass1.denoise"}  # the clock still keeps its own table
    assert StageClock.__call__ is original


def test_the_profilers_clock_is_found():
    import time

    assert gpu_busy.clock_shift(time.time_ns()) == 0
    shift = gpu_busy.clock_shift(time.monotonic_ns())
    assert abs(time.time_ns() + shift - time.monotonic_ns()) < 1e9
