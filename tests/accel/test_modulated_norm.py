"""modulated_norm (an experiment, off by default): a block's first norm into the attention's joint input equals
diffusers' `CogVideoXLayerNormZero` and its concatenation; the Triton kernel runs here in Triton's CPU interpreter
(float32: it truncates where a GPU rounds to bfloat16), and on a GPU where there is one."""
import pytest
import torch

from triton_interpreter import run_interpreted
from void_server.pipelines.void import modulated_norm


def _case(dtype: torch.dtype = torch.float32, batch: int = 2, text: int = 3, video: int = 5, dim: int = 48,
          seed: int = 0):
    from diffusers.models.normalization import CogVideoXLayerNormZero

    torch.manual_seed(seed)
    norm = CogVideoXLayerNormZero(16, dim, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.norm.weight.normal_(1.0, 0.2)
        norm.norm.bias.normal_(0.0, 0.2)
    g = torch.Generator().manual_seed(seed + 1)
    hidden = (torch.randn(batch, video, dim, generator=g) * 2 + 0.5).to(dtype)
    text_x = (torch.randn(batch, text, dim, generator=g) * 3 - 1).to(dtype)
    temb = torch.randn(batch, 16, generator=g).to(dtype)
    return norm, hidden, text_x, temb


def test_reference_is_diffusers_norm_and_concatenation():
    norm, hidden, text, temb = _case()
    with torch.no_grad():
        h, t, _, _ = norm(hidden, text, temb)
        expected = torch.cat([t, h], dim=1)
        modulation = norm.linear(norm.silu(temb))
        got = modulated_norm.reference(hidden, text, norm.norm.weight, norm.norm.bias, norm.norm.eps, modulation)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


_INTERPRETED = r"""
import json, torch
from test_modulated_norm import _case
from void_server.pipelines.void import modulated_norm as m
out = {}
for name, kw in [("dim48", {}), ("dim64_one_batch", dict(batch=1, dim=64, text=1, video=6))]:
    norm, hidden, text, temb = _case(**kw)
    with torch.no_grad():
        mod = norm.linear(norm.silu(temb))
        ref = m.reference(hidden, text, norm.norm.weight, norm.norm.bias, norm.norm.eps, mod)
        got = m.triton_modulated_norm(hidden, text, norm.norm.weight, norm.norm.bias, norm.norm.eps, mod)
    out[name] = [list(got.shape) == list(ref.shape), float((got - ref).abs().max()), float(ref.abs().max())]
print(json.dumps(out))
"""


def test_triton_kernel_in_the_interpreter():
    out = run_interpreted(_INTERPRETED)
    for name, (shape_ok, err, scale) in out.items():
        assert shape_ok, name
        assert scale > 1.0 and err < 1e-5 * scale, (name, err, scale)


def test_a_fused_block_equals_diffusers_block(monkeypatch):
    from test_attention_processor import _inputs, _run, _tiny_transformer

    from void_server.pipelines.void.accel import accelerate_transformer

    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    assert not modulated_norm.fuse_norm1(model.transformer_blocks[0])  # diffusers' processor takes no joint input
    accelerate_transformer(model, attention="math", compile_blocks=False)
    assert all(modulated_norm.fuse_norm1(b) for b in model.transformer_blocks)
    assert not modulated_norm.fuse_norm1(model.transformer_blocks[0])  # once only
    calls = []
    real = modulated_norm.reference
    monkeypatch.setattr(modulated_norm, "reference", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.testing.assert_close(_run(model, x, text, rot), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2  # one a block


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton's kernel on a GPU, bf16 rounded to nearest")
def test_triton_kernel_on_the_gpu_matches_the_reference():
    # VOID's width (3072: a power of two's 4096 lanes, masked), 226 text tokens, a few video tokens
    norm, hidden, text, temb = _case(torch.bfloat16, batch=2, text=226, video=300, dim=3072)
    norm, hidden, text, temb = norm.cuda(), hidden.cuda(), text.cuda(), temb.cuda()
    with torch.no_grad():
        mod = norm.linear(norm.silu(temb))
        args = (norm.norm.weight, norm.norm.bias, norm.norm.eps, mod)
        truth = modulated_norm.reference(hidden.float(), text.float(), *args[:3], mod.float()).float()
        ref = modulated_norm.reference(hidden, text, *args).float()
        got = modulated_norm.triton_modulated_norm(hidden, text, *args).float()
    # rounded once to bf16 like the reference: as close to the float32 math, and at most a bf16 step from it
    rel = lambda a: float((a - truth).norm() / truth.norm())  # noqa: E731
    assert rel(got) <= 1.1 * rel(ref) + 1e-6, (rel(got), rel(ref))
    assert float((got - ref).abs().max()) <= 2.0 ** -7 * float(ref.abs().max())
