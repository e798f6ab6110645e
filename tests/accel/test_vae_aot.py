"""The VAE's parts compiled ahead of time (vae_aot.py): same frames as eager, the weights lent not copied, packages
rebound when they move, reloaded by a new process without compiling, and a part that cannot export falls back to torch.compile.

The one test that compiles builds two packages on the CPU (~1 minute each on two cores): a decoder's first latent
and a pair carrying the conv cache. On the GPU every chunk shape of a job is measured by bench/bench_vae_start.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from void_server.pipelines.void.tiny import VAE_CONFIGS

ROOT = Path(__file__).resolve().parents[2]
# Two levels instead of four: fewer kernels to compile (CI's time), the same CogVideoX modules, a time upsampling
# and the conv cache.
SMALL_VAE = dict(VAE_CONFIGS["tiny"], block_out_channels=[8, 16],
                 down_block_types=VAE_CONFIGS["tiny"]["down_block_types"][:2],
                 up_block_types=VAE_CONFIGS["tiny"]["up_block_types"][:2])

BUILD = textwrap.dedent("""
    import json, sys, torch
    from diffusers import AutoencoderKLCogVideoX
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.decode import decode_latents
    from void_server.pipelines.void.vae_aot import package_events

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(**json.loads(sys.argv[1])).eval().requires_grad_(False)
    compile_vae(vae, "decoder", unit="aot")
    z = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    torch.save({"frames": decode_latents(vae, z), "events": package_events(vae)}, sys.argv[2])
""")


def _small_vae():
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    return AutoencoderKLCogVideoX(**SMALL_VAE).eval().requires_grad_(False)


def test_package_key_follows_shapes_cache_variant_and_config():
    from void_server.pipelines.void.vae_aot import package_key

    x, cache = torch.zeros(1, 16, 2, 4, 6), {"a": torch.zeros(1, 8, 2, 4, 6)}
    key = package_key("decoder", SMALL_VAE, (x,), {"conv_cache": cache})
    assert key == package_key("decoder", dict(SMALL_VAE), (torch.ones(1, 16, 2, 4, 6),), {"conv_cache": cache})
    others = [
        package_key("decoder", SMALL_VAE, (torch.zeros(1, 16, 1, 4, 6),), {"conv_cache": cache}),  # chunk length
        package_key("decoder", SMALL_VAE, (x,), {"conv_cache": None}),  # the first chunk: no cache
        package_key("decoder", SMALL_VAE, (x,), {"conv_cache": cache}, "patched-upsampling"),
        package_key("decoder", SMALL_VAE, (x.bfloat16(),), {"conv_cache": cache}),
        package_key("encoder", SMALL_VAE, (x,), {"conv_cache": cache}),
        package_key("decoder", dict(SMALL_VAE, layers_per_block=2), (x,), {"conv_cache": cache}),
        package_key("decoder", SMALL_VAE, (x,), {"conv_cache": cache}, baked="another model's RGB bias"),
    ]
    assert len({key, *others}) == 1 + len(others)


def test_the_values_inductor_writes_into_a_package_are_part_of_its_key():
    from void_server.pipelines.void.vae_aot import baked_digest

    vae = _small_vae()
    before = baked_digest(vae.decoder)
    with torch.no_grad():
        vae.decoder.conv_in.conv.weight.add_(1.0)  # lent at run time: not in the key
    assert baked_digest(vae.decoder) == before
    with torch.no_grad():
        vae.decoder.conv_out.conv.bias.add_(1.0)  # 3 values: inductor inlines them into the code
    assert baked_digest(vae.decoder) != before


def test_aot_decoder_matches_eager_follows_moved_weights_and_reloads_in_a_new_process(tmp_path, monkeypatch):
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.decode import decode_latents
    from void_server.pipelines.void.vae_aot import package_events

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    vae = _small_vae()
    z = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    eager = decode_latents(vae, z)
    compile_vae(vae, "decoder", unit="aot")
    frames = decode_latents(vae, z)
    part = vae.decoder
    assert not part.fell_back
    # the first latent alone, then a pair with the cache; the encoder is not compiled here
    assert package_events(vae) == {"decoder": ["built", "built"]}
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "void-aot").glob("*.pt2")) == ["decoder"] * 2
    assert list((tmp_path / "cache" / "void-aot").glob("loader-*.ok"))  # a child process loaded the first package
    assert torch.allclose(frames, eager, atol=1e-5), (frames - eager).abs().max()

    # Weights that moved (new storage, as an offloading memory mode makes) are lent to the packages again.
    conv = part.module.conv_out.conv
    keep = conv.weight.data
    conv.weight.data = keep * 1.5
    moved = decode_latents(vae, z)
    vae_eager = _small_vae()
    with torch.no_grad():
        vae_eager.decoder.conv_out.conv.weight.mul_(1.5)
    want = decode_latents(vae_eager, z)
    assert not torch.allclose(moved, frames, atol=1e-3)
    assert torch.allclose(moved, want, atol=1e-5), (moved - want).abs().max()
    assert len(part.events) == 2  # nothing rebuilt: the weight is lent, not baked in
    conv.weight.data = keep

    # A new process with the same cache folder loads both packages and compiles nothing.
    out = tmp_path / "child.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "server"))
    subprocess.run([sys.executable, "-c", BUILD, json.dumps(SMALL_VAE), str(out)], check=True, env=env, timeout=300)
    child = torch.load(out)
    assert child["events"] == {"decoder": ["loaded", "loaded"]}
    assert torch.equal(child["frames"], frames)


def test_a_part_that_does_not_export_falls_back_to_torch_compile(tmp_path, monkeypatch):
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.decode import decode_latents

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(torch.export, "export", refuse)
    vae = _small_vae()
    z = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    eager = decode_latents(vae, z)
    compile_vae(vae, "decoder", backend="eager", unit="aot")
    assert torch.equal(decode_latents(vae, z), eager)
    assert vae.decoder.fell_back and not list(tmp_path.rglob("*.pt2"))


def test_a_package_that_does_not_load_is_removed_for_a_rebuild(tmp_path):
    from void_server.pipelines.void.vae_aot import AheadOfTimePart

    vae = _small_vae()
    part = AheadOfTimePart(vae.decoder, "decoder", dict(vae.config), fallback=lambda m: m, folder=tmp_path)
    torn = tmp_path / "decoder-0123.pt2"
    torn.write_bytes(b"PK\x03\x04 not a package")
    assert part._load(torn, torch.device("cpu")) is None
    assert not torn.exists()
    with pytest.raises(Exception):
        AheadOfTimePart._load(part, tmp_path / "absent.pt2", torch.device("cpu"), must=True)


def test_a_loader_that_crashes_in_a_child_process_makes_the_part_fall_back_and_is_remembered(tmp_path, monkeypatch):
    from void_server.pipelines.void import vae_aot
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.decode import decode_latents

    folder = tmp_path / "void-aot"
    folder.mkdir()
    package = folder / "decoder-0123.pt2"
    package.write_bytes(b"stand-in")
    monkeypatch.setattr(vae_aot, "_LOADER_OK", {})
    # What torch 2.11.0+cu130's loader did on the device machine: the process dies of SIGSEGV, no exception.
    monkeypatch.setattr(vae_aot, "_LOAD_IN_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(RuntimeError, match="SIGSEGV"):
        vae_aot.check_loader(folder, package)
    broken = list(folder.glob("loader-*.broken"))
    assert len(broken) == 1 and "SIGSEGV" in broken[0].read_text()

    # A later process (the verdict read from disk): the part falls back before it exports anything.
    monkeypatch.setattr(vae_aot, "_LOAD_IN_CHILD", "raise SystemExit('must not run again')")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))

    exported = []
    monkeypatch.setattr(torch.export, "export", lambda *a, **k: exported.append(1))
    vae = _small_vae()
    z = torch.randn(1, 3, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    eager = decode_latents(vae, z)
    compile_vae(vae, "decoder", backend="eager", unit="aot")
    assert torch.equal(decode_latents(vae, z), eager)
    assert vae.decoder.fell_back and not vae.decoder.events and not exported

