"""bench/bench_fp8_matmul.py's variants compute the layer they time (CPU `_scaled_mm`; the timings are the device's)."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_fp8_matmul  # noqa: E402


@pytest.mark.parametrize("variant", ["bf16", "row", "row+fast", "row+bias", "tensor", "tensor+fast"])
def test_each_scaling_multiplies_the_layer(variant):
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(32, 64, generator=g).to(torch.bfloat16)
    ref = F.linear(x.float(), linear.weight.float())  # the bare GEMMs leave the bias to the caller
    with torch.no_grad():
        try:
            out = bench_fp8_matmul._variant(variant, x, linear)().float()
        except RuntimeError as e:  # torch < 2.12's CPU _scaled_mm: per-tensor scales only (the device's 2.11)
            if "per-tensor" not in str(e):
                raise
            pytest.skip(str(e).splitlines()[0])
    if variant in ("bf16", "row+bias"):
        out = out - linear.bias.float()
    assert out.shape == ref.shape
    err = float((out - ref).norm() / ref.norm())
    assert err < 0.08, err  # float8 e4m3 keeps 3 mantissa bits: a few percent, not a wrong operand or scale
