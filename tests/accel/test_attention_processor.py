"""The lean attention processor is a drop-in for diffusers': same outputs on a tiny CogVideoX-1.5 transformer."""
import pytest
import torch

from void_server.pipelines.void.accel import FastCogVideoXAttnProcessor, accelerate_transformer, rope


def _tiny_transformer() -> torch.nn.Module:
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=48, out_channels=16, num_layers=2,
        sample_width=28, sample_height=16, sample_frames=9, patch_size=2, patch_size_t=2, text_embed_dim=24,
        time_embed_dim=32, max_text_seq_length=7, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    ).eval()


def _inputs(t_lat: int = 4, h: int = 8, w: int = 14):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, t_lat, 48, h, w, generator=g)
    text = torch.randn(1, 7, 24, generator=g)
    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=16, crops_coords=None, grid_size=(h // 2, w // 2), temporal_size=t_lat // 2,
        grid_type="slice", max_size=(8, 14))
    return x, text, (cos, sin)


def _run(model, x, text, rot):
    with torch.no_grad():
        return model(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([500]),
                     image_rotary_emb=rot, return_dict=False)[0]


def test_processor_matches_diffusers():
    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    accelerate_transformer(model, attention="math", compile_blocks=False)
    assert all(isinstance(b.attn1.processor, FastCogVideoXAttnProcessor) for b in model.transformer_blocks)
    got = _run(model, x, text, rot)
    assert got.shape == expected.shape == (1, 4, 16, 8, 14)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_rope_matches_diffusers_apply_rotary_emb():
    from diffusers.models.embeddings import apply_rotary_emb

    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 10, 16, generator=g)
    cos, sin = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    torch.testing.assert_close(rope(x, cos, sin), apply_rotary_emb(x, (cos, sin)))


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown attention backend"):
        FastCogVideoXAttnProcessor("fastest")


def _bshd_attention(q, k, v):
    """Exact attention in FlashAttention-4's own layout, (B, S, heads, d) in and out: its stand-in on the CPU (the
    kernel itself needs a GPU)."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def test_fa4_backend_is_wired_in_its_own_layout(monkeypatch):
    # FlashAttention-4 takes and returns (B, S, heads, d): with the stand-in, the processor must still match diffusers.
    from void_server.pipelines.void import accel

    calls = []

    def bshd_attention(q, k, v, causal):
        assert causal is False
        calls.append(q.shape)
        return _bshd_attention(q, k, v)

    # the kernel the registered op calls (the op itself is the real one, called by name)
    monkeypatch.setattr(accel, "_fa4_kernel", bshd_attention)
    model = _tiny_transformer()
    x, text, rot = _inputs()
    expected = _run(model, x, text, rot)
    accelerate_transformer(model, attention="fa4", compile_blocks=False)
    got = _run(model, x, text, rot)
    assert calls and calls[0] == (1, 7 + 2 * 4 * 7, 2, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_fa4_backend_without_its_package_is_a_clear_error(monkeypatch):
    import sys

    from void_server.pipelines.void import accel

    monkeypatch.setattr(accel, "_fa4_kernel", None)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match="flash-attn-4"):
        FastCogVideoXAttnProcessor("fa4")


def test_attention_option_resolves(monkeypatch):
    from void_server.pipelines.void import accel

    cpu = torch.device("cpu")
    assert accel.resolve_attention("auto", cpu) is None  # diffusers' processor where FlashAttention-4 cannot run
    assert accel.resolve_attention("sdpa", cpu) is None
    assert accel.resolve_attention("cudnn", cpu) == "cudnn"
    with pytest.raises(ValueError, match="unknown attention 'fastest'"):
        accel.resolve_attention("fastest", cpu)
    monkeypatch.setattr(accel, "fa4_usable", lambda device: True)
    assert accel.resolve_attention("auto", torch.device("cuda")) == "fa4"


def test_sequence_parallel_keeps_the_transformers_attention(monkeypatch):
    # Ulysses replaces the processors for a pass; it must run the attention the transformer had (FlashAttention-4
    # on a GPU that has it), not fall back to SDPA, and give the old processors back afterwards.
    from void_server.pipelines.void import accel
    from void_server.pipelines.void.parallel.plan import Axis
    from void_server.pipelines.void.parallel.ulysses import UlyssesAttnProcessor, sequence_parallel

    monkeypatch.setattr(accel, "_fa4_kernel", lambda q, k, v, causal: q)
    model = accelerate_transformer(_tiny_transformer(), attention="fa4", compile_blocks=False)
    before = [b.attn1.processor for b in model.transformer_blocks]
    with sequence_parallel(model, Axis(rank=0, size=2)):
        during = [b.attn1.processor for b in model.transformer_blocks]
        assert all(isinstance(p, UlyssesAttnProcessor) and p.attend is before[0].attend for p in during)
    assert [b.attn1.processor for b in model.transformer_blocks] == before
    plain = _tiny_transformer()
    with sequence_parallel(plain, Axis(rank=0, size=2)):
        assert plain.transformer_blocks[0].attn1.processor.attend.backend is None  # SDPA, torch's choice


def test_fa4_self_check_catches_a_failing_or_wrong_kernel(monkeypatch):
    from void_server.pipelines.void import accel

    cpu = torch.device("cpu")
    exact = _bshd_attention

    def broken(q, k, v, causal):
        raise RuntimeError("JIT compile failed")

    monkeypatch.setattr(accel, "_fa4_kernel", lambda q, k, v, causal: exact(q, k, v))
    assert accel.fa4_self_check(cpu) is None
    monkeypatch.setattr(accel, "_fa4_kernel", lambda q, k, v, causal: exact(q, k, v) * 1.1)
    assert "differs from SDPA" in accel.fa4_self_check(cpu)
    monkeypatch.setattr(accel, "_fa4_kernel", broken)
    assert "JIT compile failed" in accel.fa4_self_check(cpu)
    # auto then falls back to SDPA on that GPU (once per device, with a warning), instead of failing every job
    monkeypatch.setattr(accel, "_fa4_checked", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(accel, "fa4_self_check", lambda device: "JIT compile failed")
    assert accel.resolve_attention("auto", torch.device("cuda")) is None
    monkeypatch.setattr(accel, "fa4_self_check", lambda device: None)
    assert accel.resolve_attention("auto", torch.device("cuda")) is None  # the first verdict holds for the device
    monkeypatch.setattr(accel, "_fa4_checked", {})
    assert accel.resolve_attention("auto", torch.device("cuda")) == "fa4"
