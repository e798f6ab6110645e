"""bench/bench_transformer.py's profile split: kernels ranked by time with their calls per forward (on the CPU the
profiler's CPU ops stand in for kernels, as in the bench's smoke path)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_transformer  # noqa: E402


def test_top_kernels_carry_their_calls_per_forward():
    a = torch.randn(256, 256)

    def fwd() -> torch.Tensor:
        b = a @ a
        b = b @ a
        return torch.relu(b)

    out = bench_transformer.profile_split(fwd, seconds_per_forward=10.0, reps=2, top_n=3)
    assert len(out["top_kernels"]) == 3
    assert list(out["calls_per_forward"]) == list(out["top_kernels"])
    times = list(out["top_kernels"].values())
    assert times == sorted(times, reverse=True)
    assert out["calls_per_forward"]["aten::mm"] == 2
    assert out["seconds"]["gaps (no kernel running)"] > 0
