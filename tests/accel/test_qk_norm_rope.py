"""qk_norm_rope: the query/key norms and RoPE as one op equal the unfused path; its Triton kernel runs here in
Triton's CPU interpreter (which rounds to bfloat16 by truncation, so bf16 is checked there to a tolerance and
exactly on a GPU)."""
import pytest
import torch

from triton_interpreter import run_interpreted
from void_server.pipelines.void import qk_norm_rope
from void_server.pipelines.void.accel import FastCogVideoXAttnProcessor, rope_video_tokens


def _case(dtype: torch.dtype, batch: int = 2, text: int = 3, video: int = 5, heads: int = 3, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(batch, text + video, heads * d, generator=g) * 3 + 1).to(dtype)
    w = (1 + 0.2 * torch.randn(d, generator=g)).to(dtype)
    b = (0.2 * torch.randn(d, generator=g)).to(dtype)
    cos, sin = torch.randn(video, d, generator=g), torch.randn(video, d, generator=g)
    return x, heads, w, b, 1e-6, cos, sin, text


def _unfused(x, heads, w, b, eps, cos, sin, text):
    """What the processor does without the op: nn.LayerNorm on (B, heads, S, d), then RoPE on the video tokens."""
    bsz, s, _ = x.shape
    norm = torch.nn.LayerNorm(w.numel(), eps=eps, dtype=x.dtype, device=x.device)
    norm.weight.data.copy_(w)
    norm.bias.data.copy_(b)
    with torch.no_grad():
        q = norm(x.view(bsz, s, heads, -1).transpose(1, 2))
        q, _ = rope_video_tokens(q, q, text, (cos, sin))
    return q.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_is_the_unfused_path(dtype):
    case = _case(dtype)
    assert torch.equal(qk_norm_rope.reference(*case), _unfused(*case))


_INTERPRETED = r"""
import json, torch
from test_qk_norm_rope import _case
from void_server.pipelines.void import qk_norm_rope as m
out = {}
for name, dtype, kw in [("f32", torch.float32, {}), ("f32_no_text", torch.float32, dict(text=0, video=7)),
                        ("f32_one_batch_odd_rows", torch.float32, dict(batch=1, heads=5, d=32)),
                        ("bf16", torch.bfloat16, {})]:
    case = _case(dtype, **kw)
    ref = m.reference(*case).float()
    got = m.triton_qk_norm_rope(*case)
    out[name] = [list(got.shape) == list(ref.shape), float((got.float() - ref).abs().max()), float(ref.abs().max())]
print(json.dumps(out))
"""


def test_triton_kernel_in_the_interpreter():
    out = run_interpreted(_INTERPRETED)
    for name, (shape_ok, err, scale) in out.items():
        assert shape_ok, name
        assert scale > 1.0, name
        if name.startswith("f32"):
            assert err < 1e-5 * scale, (name, err)
        else:  # the interpreter truncates twice where a GPU rounds: a few bf16 steps (2^-8 relative each)
            assert err <= 4 * 2.0 ** -8 * scale, (name, err)


def test_only_affine_layer_norms_of_one_head_are_fused():
    ln = torch.nn.LayerNorm(16, eps=1e-6)
    assert qk_norm_rope.fusable(ln, torch.nn.LayerNorm(16, eps=1e-6))
    assert not qk_norm_rope.fusable(ln, torch.nn.LayerNorm(16, eps=1e-5))
    assert not qk_norm_rope.fusable(ln, torch.nn.LayerNorm(16, elementwise_affine=False))
    assert not qk_norm_rope.fusable(None, ln)
    assert not qk_norm_rope.fusable(ln, torch.nn.RMSNorm(16))


def test_the_processor_takes_the_op_and_falls_back_without_it(monkeypatch):
    from test_attention_processor import _inputs, _run, _tiny_transformer

    from void_server.pipelines.void.accel import accelerate_transformer

    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    accelerate_transformer(model, attention="math", compile_blocks=False)
    calls = []
    real = qk_norm_rope.reference
    monkeypatch.setattr(qk_norm_rope, "reference", lambda *a: calls.append(a[0].shape) or real(*a))
    torch.testing.assert_close(_run(model, x, text, rot), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2 * 2  # q and k of both blocks
    for block in model.transformer_blocks:
        block.attn1.set_processor(FastCogVideoXAttnProcessor("math", fuse_qk_rope=False))
    calls.clear()
    torch.testing.assert_close(_run(model, x, text, rot), expected, rtol=1e-5, atol=1e-5)
    assert calls == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton's kernel on a GPU, bf16 rounded to nearest")
def test_triton_kernel_on_the_gpu_matches_the_unfused_path():
    # VOID's shapes: 48 heads of 64, 226 text tokens; a few video tokens
    case = _case(torch.bfloat16, batch=2, text=226, video=300, heads=48, d=64)
    dev = [t.cuda() if isinstance(t, torch.Tensor) else t for t in case]
    truth = qk_norm_rope.reference(*[t.float() if isinstance(t, torch.Tensor) else t for t in dev])
    ref = _unfused(*dev).float()
    got = qk_norm_rope.triton_qk_norm_rope(*dev).float()

    def rel(a: torch.Tensor) -> float:
        return float((a - truth).norm() / truth.norm())

    # As close to the float32 math as the unfused bf16 path is (both round the norm's output and the result to
    # bf16; the norm's sums run in another order), and never more than a few bf16 steps from it.
    assert rel(got) <= 1.1 * rel(ref) + 1e-6, (rel(got), rel(ref))
    assert float((got - ref).abs().max()) <= 2.0 ** -6 * float(ref.abs().max())
    qk_norm_rope.qk_norm_rope_op()
    q, k = torch.ops.void.qk_norm_rope(dev[0], dev[0], 48, dev[2], dev[3], dev[2], dev[3], 1e-6, dev[5], dev[6], 226)
    assert torch.equal(q, k) and torch.equal(q.float(), got)
