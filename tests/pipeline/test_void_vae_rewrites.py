"""The compiled VAE's lossless rewrites (vae_rewrites.py): the same values, the layout and classes they claim, only on
the modules that compile, and precompiled keys that tell the layouts apart."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXSpatialNorm3D  # noqa: E402

from void_server.pipelines.void.accel import compile_vae  # noqa: E402
from void_server.pipelines.void.conditioning import vae_encode  # noqa: E402
from void_server.pipelines.void.decode import decode_latents  # noqa: E402
from void_server.pipelines.void.loading import VoidModels, load_vae  # noqa: E402
from void_server.pipelines.void.precompiled import module_signature  # noqa: E402
from void_server.pipelines.void.vae_rewrites import (ContiguousEncoder3D, ContiguousResnetBlock3D,  # noqa: E402
                                                     LatentSizeSpatialNorm3D, channels_last_convolutions,
                                                     latent_size_spatial_norms, rewrite_for_compilation)
from void_server.pipelines.void.weights import resolve_layout  # noqa: E402


@pytest.mark.parametrize("frames, latents", [(8, 2), (9, 3), (5, 2), (1, 1)])
def test_the_latent_size_norm_gives_diffusers_values_bit_for_bit(frames, latents):
    # 9 and 5 frames take diffusers' odd-clip path (the first frame upsampled apart), as a decode's first chunk does.
    torch.manual_seed(0)
    norm = CogVideoXSpatialNorm3D(f_channels=8, zq_channels=4, groups=4)
    f, zq = torch.randn(1, 8, frames, 12, 16), torch.randn(1, 4, latents, 3, 4)
    with torch.no_grad():
        want, _ = norm(f, zq)
        assert latent_size_spatial_norms(norm) == 1
        assert type(norm) is LatentSizeSpatialNorm3D
        got, cache = norm(f, zq, conv_cache={})
        again, _ = norm(f, zq, conv_cache=cache)  # a later chunk hands the caches back: they change nothing
    assert torch.equal(got, want) and torch.equal(again, want)


def test_rewritten_vae_modules_encode_and_decode_as_before(tiny_model_dir):
    layout = resolve_layout(tiny_model_dir)
    plain = load_vae(layout, torch.float32)
    vae = load_vae(layout, torch.float32)
    assert channels_last_convolutions(vae) > 0 and latent_size_spatial_norms(vae) > 0
    weights = [p for p in vae.parameters() if p.dim() == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    assert not any(p.is_contiguous() for p in weights if p.shape[2:].numel() > 1)  # 1x1x1 kernels: either layout
    assert not any(type(m) is CogVideoXSpatialNorm3D for m in vae.modules())
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(1, 6, 16, 2, 3, generator=gen)
    video = torch.rand(1, 3, 21, 16, 24, generator=gen)
    with torch.no_grad():
        assert torch.allclose(decode_latents(vae, z), decode_latents(plain, z), atol=1e-5)
        assert torch.allclose(vae_encode(vae, video), vae_encode(plain, video), atol=1e-5)


def test_compile_vae_rewrites_only_what_it_compiles_and_can_leave_it_plain(tiny_model_dir):
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXResnetBlock3D

    layout = resolve_layout(tiny_model_dir)
    z = torch.randn(1, 6, 16, 2, 3, generator=torch.Generator().manual_seed(2))
    plain = decode_latents(load_vae(layout, torch.float32), z)
    vae = compile_vae(load_vae(layout, torch.float32), "both", backend="eager")  # encoder whole, decoder's blocks
    blocks = [m for m in vae.decoder.modules() if isinstance(m, CogVideoXResnetBlock3D)]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for b in blocks for p in b.parameters()
               if p.dim() == 5)
    assert all(type(b.norm1) is LatentSizeSpatialNorm3D and type(b) is ContiguousResnetBlock3D for b in blocks)
    assert type(vae.encoder._orig_mod) is ContiguousEncoder3D
    # a rewritten block hands back diffusers' layout, caches included: what follows would otherwise copy them apart
    block = blocks[-1]
    # (a channels-last input: the CPU's convolutions follow their input's layout, the GPU's their weights')
    x = torch.randn(1, block.in_channels, 4, 8, 12).contiguous(memory_format=torch.channels_last_3d)
    zq = torch.randn(1, vae.decoder.conv_in.conv.in_channels, 1, 2, 3)
    with torch.no_grad():
        hidden, cache = block(x, None, zq)
        tensors = [hidden] + [t for t in cache.values() if isinstance(t, torch.Tensor)]
        tensors += [t for d in cache.values() if isinstance(d, dict) for t in d.values() if t is not None]
    assert len(tensors) > 3 and all(t.is_contiguous() for t in tensors)
    assert not any(p.is_contiguous() for p in vae.encoder.parameters() if p.dim() == 5 and p.shape[2:].numel() > 1)
    # the decoder's parts outside its blocks run eager: as diffusers has them
    assert vae.decoder.conv_in.conv.weight.is_contiguous()
    assert type(vae.decoder.norm_out) is CogVideoXSpatialNorm3D
    assert torch.allclose(decode_latents(vae, z), plain, atol=1e-5)
    untouched = compile_vae(load_vae(layout, torch.float32), "both", backend="eager", rewrites=False)
    assert all(p.is_contiguous() for p in untouched.parameters())
    assert not any(isinstance(m, LatentSizeSpatialNorm3D) for m in untouched.modules())


def test_only_modules_whose_outputs_it_can_hand_back_contiguous_are_rewritten():
    conv = torch.nn.Conv3d(4, 4, 3)
    with pytest.raises(TypeError, match="Conv3d"):
        rewrite_for_compilation(conv)
    assert conv.weight.is_contiguous()  # refused before anything changed


def test_only_the_gpu_mode_rewrites_its_compiled_vae(tiny_model_dir):
    layout = resolve_layout(tiny_model_dir)
    cpu = torch.device("cpu")
    assert VoidModels(layout, cpu, compile_vae="both").describe()["vae_rewrites"] is True
    assert VoidModels(layout, cpu).vae_rewrites is False  # nothing compiled on the CPU by default
    assert VoidModels(layout, cpu, memory_mode="model_offload", compile_vae="both").vae_rewrites is False
    assert VoidModels(layout, cpu, compile_vae="both", vae_rewrites=False).vae_rewrites is False


def test_the_pipeline_option_reaches_the_models_and_must_be_a_flag(tiny_model_dir):
    from void_server.pipelines.base import PipelineUnavailable
    from void_server.pipelines.void.pipeline import VoidPipeline

    class Config:
        model_dir, memory_mode, device = tiny_model_dir, "gpu", "cpu"
        options = {"compile_vae": "both", "vae_rewrites": False}

    assert VoidPipeline.from_config(Config()).models.vae_rewrites is False
    Config.options = {"compile_vae": "both", "vae_rewrites": "off"}
    with pytest.raises(PipelineUnavailable, match="vae_rewrites option is true or false"):
        VoidPipeline.from_config(Config())


def test_a_precompiled_key_tells_channels_last_weights_apart_and_keeps_contiguous_keys():
    conv = torch.nn.Conv3d(4, 4, 3)
    before = module_signature(conv)
    # the key contiguous weights had before strides counted: existing files on disk stay valid
    assert json.loads(before)["tensors"] == [[n, list(t.shape), str(t.dtype)] for n, t in conv.named_parameters()]
    channels_last_convolutions(conv)
    assert module_signature(conv) != before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's channels-last kernels, bf16, inductor on the GPU")
def test_on_a_gpu_the_rewritten_vae_is_as_close_to_float32_as_the_plain_one(tmp_path, monkeypatch):
    # The real channel widths (the full config) on a small clip, compiled as the server compiles them (precompiled,
    # bf16): the rewrites may round differently, never further from the float32 result than plain compilation.
    from diffusers import AutoencoderKLCogVideoX

    from void_server.pipelines.void.tiny import VAE_CONFIGS

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    dev = torch.device("cuda")
    torch.manual_seed(0)
    base = AutoencoderKLCogVideoX(**VAE_CONFIGS["full"]).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(1)
    video = torch.rand(1, 3, 9, 64, 112, generator=gen).to(dev)
    z = torch.randn(1, 4, 16, 8, 14, generator=gen).to(dev)

    def run(vae):
        return vae_encode(vae, video).float(), decode_latents(vae, z).float()

    import copy

    want = run(copy.deepcopy(base).to(dev))  # float32, eager
    got = {}
    for rewrites in (False, True):
        vae = compile_vae(copy.deepcopy(base).to(dev, torch.bfloat16), "both", rewrites=rewrites)
        got[rewrites] = run(vae)
    for i in (0, 1):  # encode, decode
        plain, rewritten = ((got[r][i] - want[i]).norm() / want[i].norm() for r in (False, True))
        assert rewritten <= plain * 1.2 + 1e-4, (i, float(plain), float(rewritten))
