"""StageClock: per-stage wall time, nested names, accumulation over repeated stages."""
import time

import pytest

from void_server.pipelines.stage_clock import StageClock


def test_stages_nest_and_accumulate():
    clock = StageClock()
    with clock("pass1"):
        inner = clock.child("pass1")
        with inner("denoise"):
            time.sleep(0.02)
        with inner("denoise"):
            time.sleep(0.02)
    assert set(clock.timings) == {"pass1", "pass1.denoise"}
    assert clock.timings["pass1.denoise"] >= 0.04
    assert clock.timings["pass1"] >= clock.timings["pass1.denoise"]


def test_a_failing_stage_is_still_timed():
    clock = StageClock()
    with pytest.raises(RuntimeError):
        with clock("decode"):
            raise RuntimeError("boom")
    assert "decode" in clock.timings
