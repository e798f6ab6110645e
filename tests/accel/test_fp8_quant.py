"""fp8_quant: the feed-forward's GELU with its float8 quantisation as one pass equals GELU then `quantise_rows`. Its
Triton kernel runs here in Triton's CPU interpreter up to the float8 cast (the interpreter's cast does not carry a
rounding into the exponent: 1.97 -> 1.0, where torch and a GPU give 2.0), so there it writes the scaled values in
float32; the cast itself is checked on a GPU."""
import pytest
import torch
import torch.nn.functional as F

from triton_interpreter import run_interpreted
from void_server.pipelines.void import fp8_quant
from void_server.pipelines.void.fp8_quant import FP8_MAX


def _hidden(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """A GEMM's output as the kernel gets it: bf16, rows of very different sizes, negatives GELU squashes."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, width, generator=g) * torch.logspace(-2, 2, rows).unsqueeze(1) - 0.3).to(torch.bfloat16)


def _dequantised(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale


def float8_steps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many representable float8 e4m3 values lie between a and b (sign-magnitude bits made ordinal; subnormals
    and the two zeros included)."""
    def ordinal(q: torch.Tensor) -> torch.Tensor:
        bits = q.view(torch.uint8).to(torch.int16)
        return torch.where(bits >= 128, -(bits - 128), bits)

    return (ordinal(a) - ordinal(b)).abs()


def _bias(width: int) -> torch.Tensor:
    return (torch.randn(width, generator=torch.Generator().manual_seed(7)) * 0.5).to(torch.bfloat16)


def test_reference_is_the_bias_and_gelu_then_row_quantisation():
    h, b = _hidden(6, 40), _bias(40)
    q, scale = fp8_quant.gelu_quantise_reference(h, b)
    g = F.gelu(h.float() + b.float(), approximate="tanh")
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (6, 1)
    torch.testing.assert_close(scale[:, 0], g.abs().amax(dim=1) / FP8_MAX)
    rel = float((_dequantised(q, scale) - g).norm() / g.norm())
    assert 1e-3 < rel < 0.05  # really quantised, within e4m3's three mantissa bits


_INTERPRETED = r"""
import json, torch
from test_fp8_quant import _bias, _hidden
from void_server.pipelines.void import fp8_quant as m
out = {}
for name, (rows, width, with_bias) in {"feed_forward_width": (3, 12288, True), "no_bias": (2, 12288, False),
                                       "width_not_a_power_of_two": (5, 200, True)}.items():
    h, b = _hidden(rows, width), (_bias(width) if with_bias else None)
    g = torch.nn.functional.gelu(h.float() + (0 if b is None else b.float()), approximate="tanh")
    s_ref = g.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / m.FP8_MAX
    scaled_ref = (g / s_ref).clamp(-m.FP8_MAX, m.FP8_MAX)  # quantise_rows's values before their cast
    scaled, s = m.triton_gelu_quantise(h, b, out_dtype=torch.float32)
    out[name] = [list(scaled.shape) == list(scaled_ref.shape), float(((s - s_ref) / s_ref).abs().max()),
                 float((scaled - scaled_ref).abs().max()), float(scaled.abs().amax(dim=1).min())]
print(json.dumps(out))
"""


def test_triton_kernel_in_the_interpreter():
    out = run_interpreted(_INTERPRETED)
    for name, (shape_ok, scale_err, err, row_max) in out.items():
        assert shape_ok, name
        assert scale_err < 1e-5, (name, scale_err)  # same absolute maximum (GELU's two forms agree to float32 ulps)
        assert err < 1e-3, (name, err)  # of values up to 448: float32 ulps, far below a float8 step (>= 2^-9)
        assert row_max > 447.99, (name, row_max)  # every row's largest value maps to float8's largest


def test_the_op_runs_the_reference_off_cuda_and_traces_whole():
    fp8_quant.gelu_quantise_op()
    h, b = _hidden(4, 48), _bias(48)
    for bias in (None, b):
        q, s = torch.ops.void.gelu_quantise_rows(h, bias)
        q_ref, s_ref = fp8_quant.gelu_quantise_reference(h, bias)
        assert torch.equal(q.float(), q_ref.float()) and torch.equal(s, s_ref)
    assert not torch.equal(torch.ops.void.gelu_quantise_rows(h, b)[1], torch.ops.void.gelu_quantise_rows(h, None)[1])
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.compile(lambda x: torch.ops.void.gelu_quantise_rows(x, b), fullgraph=True, backend=capture)(h)
    ops = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert [o for o in ops if "void.gelu_quantise_rows" in o]
    assert not [o for o in ops if "gelu" in o and "void" not in o]  # one opaque op, not split for inductor


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton's kernel on a GPU")
def test_triton_kernel_on_the_gpu_matches_the_reference():
    h, b = _hidden(64, 12288).cuda(), _bias(12288).cuda()
    q_ref, s_ref = fp8_quant.gelu_quantise_reference(h, b)
    q, s = fp8_quant.triton_gelu_quantise(h, b)
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=0)
    assert float((q.float() != q_ref.float()).float().mean()) < 1e-3  # GELU's two float32 forms: ulps apart
    assert int(float8_steps(q, q_ref).max()) <= 1
