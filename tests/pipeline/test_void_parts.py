"""Units of the VOID pipeline: frame and window tables, decode lengths, loading errors, the model dir, download."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.pipelines.void import download  # noqa: E402
from void_server.pipelines.void.conditioning import apply_mask_rule, latent_frames, padded_length, pingpong_pad  # noqa: E402
from void_server.pipelines.void.decode import decode_latents, decoded_frames  # noqa: E402
from void_server.pipelines.void.denoise import temporal_windows, window_weights  # noqa: E402
from void_server.pipelines.void.latent_noise import aligned_noise_to_latents, reference_noise_to_latents  # noqa: E402
from void_server.pipelines.void.loading import WeightsError, adapt_patch_embed, load_transformer, load_vae  # noqa: E402
from void_server.pipelines.void.weights import MIN_SIZES, RANDOM_WEIGHTS_MARKER, check_model_dir, resolve_layout  # noqa: E402


@pytest.mark.parametrize("n, t_pad, windows", [  # docs/void-reference-details.md §2.3
    (1, 85, [(0, 22)]), (50, 85, [(0, 22)]), (85, 85, [(0, 22)]), (86, 93, [(0, 22), (18, 24)]),
    (89, 93, [(0, 22), (18, 24)]), (100, 101, [(0, 22), (18, 26)]), (120, 125, [(0, 22), (18, 32)]),
    (150, 157, [(0, 22), (18, 40)]), (170, 173, [(0, 22), (18, 40), (36, 44)]),
    (197, 197, [(0, 22), (18, 40), (36, 50)]), (300, 197, [(0, 22), (18, 40), (36, 50)]),
])
def test_reference_frame_and_window_tables(n, t_pad, windows):
    assert padded_length(n) == t_pad
    assert temporal_windows(latent_frames(t_pad)) == windows


def test_long_clips_past_the_cap_get_more_windows():
    length = padded_length(300, max_frames=None)
    assert length >= 300 and (length - 1) % 4 == 0 and latent_frames(length) % 2 == 0
    spans = temporal_windows(latent_frames(length))
    assert spans[0] == (0, 22) and spans[-1][1] == latent_frames(length)
    assert all(e - b == 22 for b, e in spans[:-1]) and all((e - b) % 2 == 0 for b, e in spans)
    assert all(b2 == e1 - 4 for (_, e1), (b2, _) in zip(spans, spans[1:]))


def test_blend_weights_sum_to_one_across_overlaps():
    t_lat = 50
    total = torch.zeros(t_lat)
    for b, e in temporal_windows(t_lat):
        w = window_weights(b, e, t_lat)
        total[b:e] += w
    assert torch.allclose(total[:18], torch.ones(18))
    assert torch.allclose(window_weights(18, 40, 50)[:4], torch.tensor([0.2, 0.4, 0.6, 0.8]))
    assert torch.allclose(window_weights(0, 22, 50)[-4:], torch.tensor([0.8, 0.6, 0.4, 0.2]))
    assert (total > 0).all()


def test_pingpong_padding():
    x = torch.arange(5).float().view(1, 1, 5, 1, 1)
    assert pingpong_pad(x, 12).flatten().tolist() == [0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 0, 1]
    assert pingpong_pad(x[:, :, :1], 4).flatten().tolist() == [0, 0, 0, 0]


def test_mask_rules():
    m = torch.tensor([0.0, 128 / 255, 192 / 255, 1.0])
    assert apply_mask_rule(m, "tri").tolist() == pytest.approx([0, 127 / 255, 1, 1])
    assert apply_mask_rule(m, "binary").tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError):
        apply_mask_rule(m, "dilated")


@pytest.mark.parametrize("t_lat", [1, 2, 6, 7])
def test_decode_gives_the_reference_frame_count(tiny_model_dir, t_lat):
    vae = load_vae(resolve_layout(tiny_model_dir), torch.float32)
    video = decode_latents(vae, torch.randn(1, t_lat, 16, 2, 3, generator=torch.Generator().manual_seed(0)))
    assert decoded_frames(22) == 85 and decoded_frames(50) == 197
    assert video.shape == (1, 3, decoded_frames(t_lat), 16, 24)
    assert 0 <= video.min() and video.max() <= 1
    # diffusers' own decode batches differently: 4 * T frames for even counts
    if t_lat % 2 == 0:
        assert vae.decode(torch.zeros(1, 16, t_lat, 2, 3)).sample.shape[2] != video.shape[2]


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_transformer_loads_48_channels_and_reports_bad_checkpoints(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    layout = resolve_layout(tiny_model_dir)
    model = load_transformer(layout, 1, torch.device("cpu"), torch.float32)
    assert model.patch_embed.proj.weight.shape[1] == 48 * 8
    assert not any(p.is_meta for p in model.parameters())

    root = _copy_model(tiny_model_dir, tmp_path / "m")
    state = load_file(str(root / "void_pass1.safetensors"))
    dropped = sorted(state)[0]
    save_file({k: v for k, v in state.items() if k != dropped}, str(root / "void_pass1.safetensors"))
    with pytest.raises(WeightsError, match="1 missing keys.*%s" % dropped.replace(".", r"\.")):
        load_transformer(resolve_layout(root), 1, torch.device("cpu"), torch.float32)
    save_file(dict(state, extra=torch.zeros(1)), str(root / "void_pass1.safetensors"))
    with pytest.raises(WeightsError, match="unexpected keys.*extra"):
        load_transformer(resolve_layout(root), 1, torch.device("cpu"), torch.float32)


def test_33_channel_checkpoint_is_adapted():
    w = torch.randn(5, 33 * 8)
    out = adapt_patch_embed({"patch_embed.proj.weight": w}, 8)["patch_embed.proj.weight"]
    assert out.shape == (5, 48 * 8)
    assert torch.equal(out[:, :128], w[:, :128]) and torch.equal(out[:, 256:], w[:, 136:])
    assert all(torch.equal(out[:, 128 + 8 * c: 136 + 8 * c], w[:, 128:136]) for c in range(16))
    with pytest.raises(WeightsError):
        adapt_patch_embed({"patch_embed.proj.weight": torch.zeros(5, 20 * 8)}, 8)


def test_reference_noise_resize_and_aligned_noise():
    raw = np.random.default_rng(0).standard_normal((72, 60, 90, 16)).astype(np.float16)
    lat = reference_noise_to_latents(raw, 22, 48, 84)
    assert lat.shape == (1, 22, 16, 48, 84)
    assert torch.equal(lat[0, 0, 3], torch.from_numpy(__import__("cv2").resize(raw[0, :, :, 3].astype(np.float32), (84, 48))))
    assert 0.55 < lat.std() < 0.75  # the reference's bilinear shrink
    pixel = torch.randn(85, 16, 384, 672, generator=torch.Generator().manual_seed(0))
    aligned = aligned_noise_to_latents(pixel, 22, 48, 84)
    assert aligned.shape == (1, 22, 16, 48, 84)
    assert 0.97 < aligned.std() < 1.03


def test_model_dir_check(tiny_model_dir, tmp_path):
    assert check_model_dir(tiny_model_dir) == []
    root = _copy_model(tiny_model_dir, tmp_path / "m")
    (root / "void_pass2.safetensors").unlink()
    problems = check_model_dir(root)
    assert len(problems) == 1 and "void_pass2.safetensors" in problems[0] and "void-server download --model-dir" in problems[0]
    assert check_model_dir(root, passes=1) == []
    # with real sizes checked, a small file is a truncated download
    (root / RANDOM_WEIGHTS_MARKER).unlink()
    assert any("void_pass1.safetensors is truncated" in p for p in check_model_dir(root, passes=1))
    # the parity fixtures' flat layout is accepted
    flat = tmp_path / "flat"
    shutil.copytree(root / "CogVideoX-Fun-V1.5-5b-InP", flat)
    shutil.copy(root / "void_pass1.safetensors", flat)
    shutil.copy(tiny_model_dir / "void_pass2.safetensors", flat)
    assert check_model_dir(flat) == [] and resolve_layout(flat).base == flat


def test_download_requests_the_right_files_and_reports_truncation(tmp_path, monkeypatch):
    import huggingface_hub
    import torch.hub

    asked = []

    def fake_snapshot(repo_id, local_dir, allow_patterns, token=None):
        asked.append((repo_id, tuple(allow_patterns)))
        base = Path(local_dir)
        for rel in ("transformer/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer/spiece.model",
                    "scheduler/scheduler_config.json"):
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_text("{}")
        with open(base / "vae" / "diffusion_pytorch_model.safetensors", "wb") as f:
            f.truncate(MIN_SIZES["vae/diffusion_pytorch_model.safetensors"])
        with open(base / "text_encoder" / "model.safetensors", "wb") as f:
            f.truncate(MIN_SIZES["text_encoder"])

    def fake_file(repo_id, filename, local_dir, token=None):
        asked.append((repo_id, filename))
        with open(Path(local_dir) / filename, "wb") as f:  # sparse: the size of a complete file, or a torn one
            f.truncate(MIN_SIZES[filename] if filename.endswith("1.safetensors") else 1000)

    def fake_url(url, dst, hash_prefix=None, progress=True):
        asked.append((url, hash_prefix))
        with open(dst, "wb") as f:
            f.truncate(MIN_SIZES["raft_large_C_T_SKHT_V2-ff5fadd5.pth"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_file)
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_url)
    problems = download.run_download(tmp_path, log=lambda s: None)
    assert asked[0][0] == "alibaba-pai/CogVideoX-Fun-V1.5-5b-InP" and "transformer/config.json" in asked[0][1]
    assert not any("diffusion_pytorch_model" in p and "transformer" in p for p in asked[0][1])
    assert asked[1:3] == [("netflix/void-model", "void_pass1.safetensors"), ("netflix/void-model", "void_pass2.safetensors")]
    assert asked[3] == ("https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth", "ff5fadd5")
    assert len(problems) == 1 and "void_pass2.safetensors is truncated" in problems[0]
    with pytest.raises(ValueError, match="unknown part"):
        download.run_download(tmp_path, parts=("weights",), log=lambda s: None)


@pytest.mark.parametrize("t_lat", [1, 6, 7])
def test_pipelined_decode_gives_the_same_frames_at_every_split(tiny_model_dir, t_lat):
    """The decoder cut into two halves (each with its own conv caches, chunk k's first half queued before chunk
    k - 1's second) gives the frames the whole decoder gives, bit for bit, and hands them over in the same order.
    Here both halves share the CPU; on two GPUs the second half runs on the second VAE's device."""
    from void_server.pipelines.void.decode import decoder_stages, split_after

    layout = resolve_layout(tiny_model_dir)
    vae, second = load_vae(layout, torch.float32), load_vae(layout, torch.float32)
    z = torch.randn(1, t_lat, 16, 2, 3, generator=torch.Generator().manual_seed(4))
    whole_chunks = []
    whole = decode_latents(vae, z, on_chunk=lambda start, f: whole_chunks.append((start, f.clone())))
    d = vae.decoder
    names = [s.name for s in decoder_stages(d)]
    # every resnet and upsampler its own stage, so a cut can fall inside an up block
    assert len(names) == 2 + len(d.mid_block.resnets) + sum(len(b.resnets) + (b.upsamplers is not None) for b in d.up_blocks)
    assert names[:2] == ["conv_in", "mid_block.resnet_0"] and names[-1] == "out"
    assert {"up_block_0.upsample", "up_block_2.resnet_1"} <= set(names) and "up_block_3.upsample" not in names
    ran = []  # which VAE ran the first and the last stage
    for name, model in (("first", vae), ("second", second)):
        for part in ("conv_in", "conv_out"):
            getattr(model.decoder, part).register_forward_hook(lambda m, a, o, n=name, p=part: ran.append((n, p)))
    for split in range(1, len(names)):
        chunks = []
        ran.clear()
        got = decode_latents(vae, z, on_chunk=lambda start, f: chunks.append((start, f.clone())),
                             pipelined=(second, split))
        assert sorted(set(ran)) == [("first", "conv_in"), ("second", "conv_out")]
        assert torch.equal(got, whole), split
        assert [s for s, _ in chunks] == [s for s, _ in whole_chunks]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(chunks, whole_chunks))
    # a cut by name: that stage is the first VAE's last
    assert split_after(decoder_stages(d), "up_block_2.resnet_1") == names.index("up_block_2.resnet_1") + 1
    assert torch.equal(decode_latents(vae, z, pipelined=(second, "up_block_2.resnet_1")), whole)
    for bad in (0, len(names), "-1"):
        with pytest.raises(ValueError, match="splits the decoder's %d stages" % len(names)):
            decode_latents(vae, z, pipelined=(second, bad))
    with pytest.raises(ValueError, match=r"no stage 'up_block_9.resnet_0' \(its stages: conv_in, mid_block.resnet_0"):
        decode_latents(vae, z, pipelined=(second, "up_block_9.resnet_0"))


def test_decode_under_accelerate_offload_hooks_matches(tiny_model_dir):
    """sequential_offload wraps each module's forward; the trailing-latent upsampling patch must still apply."""
    from accelerate import cpu_offload

    layout = resolve_layout(tiny_model_dir)
    z = torch.randn(1, 6, 16, 2, 3, generator=torch.Generator().manual_seed(1))
    plain = decode_latents(load_vae(layout, torch.float32), z)
    hooked_vae = load_vae(layout, torch.float32)
    cpu_offload(hooked_vae, execution_device=torch.device("cpu"))
    hooked = decode_latents(hooked_vae, z)
    assert hooked.shape == plain.shape == (1, 3, 21, 16, 24)
    assert torch.allclose(hooked, plain, atol=1e-6)


def test_prompt_embeddings_run_t5_once_per_distinct_text(tiny_model_dir):
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.weights import resolve_layout

    models = VoidModels(resolve_layout(tiny_model_dir), torch.device("cpu"))
    _, encoder = models.text
    calls = []
    encoder.register_forward_hook(lambda *a: calls.append(1))
    ids_a, emb_a = models.prompt_embeddings("a calm river")
    ids_b, emb_b = models.prompt_embeddings("a calm river")
    models.prompt_embeddings("")
    assert len(calls) == 2
    assert torch.equal(ids_a, ids_b) and torch.equal(emb_a, emb_b)
    assert not models.park_text_encoder  # parking only pays on a GPU


def test_handing_pass_1s_video_latents_to_pass_2_changes_nothing(tiny_model_dir):
    """Both passes encode the same plate with the same seeded augmentation, so reusing the latents is exact."""
    from void_server.pipelines.void.conditioning import encode_conditioning
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.weights import resolve_layout

    models = VoidModels(resolve_layout(tiny_model_dir), torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    video = torch.rand(1, 3, 9, 64, 112, generator=g)
    mask = (torch.rand(1, 1, 9, 64, 112, generator=g) > 0.7).float()
    first, augmented = encode_conditioning(models.vae, video, mask * 0.5, True, seed=11)
    again, none = encode_conditioning(models.vae, video, mask, True, seed=11)
    reused, skipped = encode_conditioning(models.vae, video, mask, True, seed=11, video_latents=first[:, :, 16:])
    assert augmented is not None and skipped is None
    assert torch.equal(reused, again)
    assert not torch.equal(first[:, :, :16], again[:, :, :16])  # the masks differ, so must their latents


def test_augmentation_noise_given_ahead_is_the_inline_noise():
    from void_server.pipelines.void.conditioning import augment_video, augmentation_noise

    video = torch.rand(1, 3, 5, 8, 12) * 2 - 1
    video[0, :, 0, :2] = -1.0  # exactly -1 stays unaugmented
    ahead = augment_video(video, 11, noise=augmentation_noise(tuple(video.shape), 11))
    assert torch.equal(ahead, augment_video(video, 11))
    assert torch.equal(ahead[0, :, 0, :2], video[0, :, 0, :2])
    with pytest.raises(ValueError, match="does not fit"):
        augment_video(video, 11, noise=torch.zeros(1, 3, 4, 8, 12))


@pytest.mark.parametrize("shape", [(1, 3, 5, 7, 9), (1, 3, 9, 64, 112), (2, 3, 13, 24, 40)])
def test_augmentation_noise_is_torchs_randn_like_on_the_references_layout(shape):
    # The parity contract: torch.manual_seed(seed); torch.randn_like(video) for the reference's (B, T, C, H, W)
    # buffer viewed as (B, C, T, H, W), which torch fills serially in memory order. The vectorised transform must
    # give those values bit for bit (an odd element count included: the last pair's second value is unused).
    from void_server.pipelines.void.conditioning import augmentation_noise

    b, c, t, h, w = shape
    torch.manual_seed(23)
    want = torch.randn_like(torch.empty((b, t, c, h, w)).permute(0, 2, 1, 3, 4))
    got = augmentation_noise(shape, 23)
    assert got.shape == shape and got.stride() == want.stride()
    assert torch.equal(got, want)


def test_mask_latents_and_noise_handed_in_ahead_give_the_same_conditioning(tiny_model_dir):
    """The pipeline encodes every pass's mask before pass 1 and hands the augmentation noise in as a future's
    `result`, asked for after the mask: the conditioning must be what encoding inline gives."""
    from void_server.pipelines.void.conditioning import augmentation_noise, encode_conditioning, encode_mask
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.weights import resolve_layout

    models = VoidModels(resolve_layout(tiny_model_dir), torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    video = torch.rand(1, 3, 9, 64, 112, generator=g)
    mask = (torch.rand(1, 1, 9, 64, 112, generator=g) > 0.6).float()
    inline, _ = encode_conditioning(models.vae, video, mask, True, seed=4)
    asked = []

    def noise():
        asked.append(1)
        return augmentation_noise(tuple(video.shape), 4)

    ahead, _ = encode_conditioning(models.vae, video, mask, True, seed=4, augment_noise=noise,
                                   mask_latents=encode_mask(models.vae, mask))
    assert asked == [1]
    assert torch.equal(ahead, inline)


def test_passes_share_a_mask_encode_only_where_their_masks_are_equal(tiny_model_dir, monkeypatch):
    """Pass 2's binary mask is pass 1's tri-level one when the quadmask has no affected-only (127) pixel: one encode
    serves both. With an affected region the two masks differ and each pass gets its own."""
    from void_server.pipelines.void import conditioning, passes
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.passes import PASS1, PASS2, pass_mask_latents, passes_mask_latents

    models = VoidModels(resolve_layout(tiny_model_dir), torch.device("cpu"))
    quad = torch.full((1, 1, 5, 64, 112), 255.0)
    quad[..., 10:30, 20:50] = 0.0  # the object
    quad[..., 25:35, 45:60] = 63.0  # object and affected region overlap: "remove" under both rules
    encodes = []
    real = conditioning.encode_mask
    monkeypatch.setattr(passes, "encode_mask", lambda vae, mask: encodes.append(mask) or real(vae, mask))
    for affected, n_encodes in ((False, 1), (True, 2)):
        if affected:
            quad[..., 40:60, 20:50] = 127.0  # its shadow, say: pass 1 sees grey, pass 2 regenerates it
        inverted = (255.0 - quad) / 255.0
        encodes.clear()
        both = passes_mask_latents(models.vae, [PASS1, PASS2], inverted)
        assert len(encodes) == n_encodes
        for cfg in (PASS1, PASS2):  # what each pass encoding its own mask gives
            assert torch.equal(both[cfg.index], pass_mask_latents(models.vae, cfg, inverted))
    assert not torch.equal(both[PASS1.index], both[PASS2.index])


def test_vae_compile_parts_wrap_the_modules_and_keep_the_output(tiny_model_dir):
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.loading import VoidModels

    layout = resolve_layout(tiny_model_dir)
    z = torch.randn(1, 6, 16, 2, 3, generator=torch.Generator().manual_seed(2))
    plain = decode_latents(load_vae(layout, torch.float32), z)
    # rewrites=False: bit-equal frames (the rewrites' own values are checked in test_void_vae_rewrites.py)
    vae = compile_vae(load_vae(layout, torch.float32), "decoder", backend="eager", unit="whole", rewrites=False)
    assert isinstance(vae.decoder, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(vae.encoder, torch._dynamo.eval_frame.OptimizedModule)
    assert torch.equal(decode_latents(vae, z), plain)  # the trailing latent's patched upsampling still applies
    with pytest.raises(ValueError, match="compile"):
        compile_vae(vae, "all")
    with pytest.raises(ValueError, match="unit"):
        compile_vae(vae, "both", unit="layers")
    # Cut up by default as the precompiled unit is (another backend than inductor has nothing to precompile): the
    # encoder whole, the decoder's resnet blocks one by one (a shorter warm start).
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXResnetBlock3D

    vae = compile_vae(load_vae(layout, torch.float32), "both", backend="eager", rewrites=False)
    assert isinstance(vae.encoder, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(vae.decoder, torch._dynamo.eval_frame.OptimizedModule)
    blocks = [m for m in vae.decoder.modules() if isinstance(m, CogVideoXResnetBlock3D)]
    assert blocks and all(m._compiled_call_impl is not None for m in blocks)
    assert torch.equal(decode_latents(vae, z), plain)
    # The models' default follows block compilation in the `gpu` and `model_offload` modes: off on the CPU (whose
    # mode is `gpu` too), and where weights are cast or streamed per layer (fp8 storage, sequential offload).
    assert VoidModels(layout, torch.device("cpu")).compile_vae == "none"
    assert VoidModels(layout, torch.device("cpu"), compile_blocks=True).compile_vae == "both"
    for mode, compiled in (("model_offload", "both"), ("sequential_offload", "none"), ("fp8", "none")):
        assert VoidModels(layout, torch.device("cpu"), memory_mode=mode, compile_blocks=True).compile_vae == compiled
    assert VoidModels(layout, torch.device("cpu"), compile_vae="both").compile_vae == "both"
    with pytest.raises(ValueError, match="compile_vae"):
        VoidModels(layout, torch.device("cpu"), compile_vae="yes")


def test_the_models_take_the_vae_unit_option(tiny_model_dir):
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.precompiled import PrecompiledForward, wrappers

    layout = resolve_layout(tiny_model_dir)
    with pytest.raises(ValueError, match="vae_unit"):
        VoidModels(layout, torch.device("cpu"), vae_unit="layers")
    models = VoidModels(layout, torch.device("cpu"), compile_vae="decoder", vae_unit="whole")
    assert isinstance(models.vae.decoder, torch._dynamo.eval_frame.OptimizedModule)
    assert models.describe()["vae_unit"] == "whole"
    # The default: precompiled, cut up as accel.VAE_COMPILE_UNIT says (here the decoder: its resnet blocks).
    models = VoidModels(layout, torch.device("cpu"), compile_vae="decoder")
    assert models.describe()["vae_unit"] is None
    wrapped = [w.module for w in wrappers(models.vae)]
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXResnetBlock3D

    assert wrapped and all(isinstance(m, CogVideoXResnetBlock3D) for m in wrapped)  # (vae_rewrites' subclass)
    assert not isinstance(models.vae.encoder.__dict__.get("forward"), PrecompiledForward)


def test_models_take_the_attention_option(tiny_model_dir, monkeypatch):
    from void_server.pipelines.void import accel
    from void_server.pipelines.void.loading import VoidModels

    layout = resolve_layout(tiny_model_dir)
    assert VoidModels(layout, torch.device("cpu")).attention is None
    assert VoidModels(layout, torch.device("cpu")).describe()["attention"] == "sdpa"
    with pytest.raises(ValueError, match="unknown attention"):
        VoidModels(layout, torch.device("cpu"), attention="fastest")
    # A backend asked for is installed on every block, also without compilation.
    monkeypatch.setattr(accel, "_fa4_kernel", lambda q, k, v, causal: q)
    models = VoidModels(layout, torch.device("cpu"), attention="fa4")
    blocks = models.transformer(1).transformer_blocks
    assert all(b.attn1.processor.backend == "fa4" for b in blocks)
