"""Random-weight VOID model folders in exactly the real on-disk layout, for tests ("tiny") and GPU benchmarks
("full": the real CogVideoX-Fun-V1.5-5b-InP / T5 v1.1 XXL configs, random weights, no download).

    build_random_model_dir(path, size="tiny")  ->  path/CogVideoX-Fun-V1.5-5b-InP/{transformer,vae,text_encoder,
                                                   tokenizer,scheduler}/ + void_pass1/2.safetensors

Weights are written as state dicts built from the config on meta tensors, so the "full" folder (about 22 GB of
transformer weights plus a 9.5 GB T5) is never materialised as a model object. The loader then reads the folder
through the same code path as real weights.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from .weights import BASE_DIRNAME, PASS_FILES, RANDOM_WEIGHTS_MARKER

TOKENIZER_DIR = Path(__file__).with_name("testing_tokenizer")  # a tiny T5 sentencepiece tokenizer (64 ids)

TRANSFORMER_CONFIGS = {
    # CogVideoX-Fun-V1.5-5b-InP (docs/void-reference-details.md §1). sample_height/width fix only the RoPE table
    # cap; 96x170 latents is what the reference harness used (check a downloaded config.json).
    "full": dict(activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=64, dropout=0.0,
                 flip_sin_to_cos=True, freq_shift=0, in_channels=33, max_text_seq_length=226,
                 norm_elementwise_affine=True, norm_eps=1e-05, num_attention_heads=48, num_layers=42, out_channels=16,
                 patch_bias=False, patch_size=2, patch_size_t=2, sample_frames=81, sample_height=96, sample_width=170,
                 spatial_interpolation_scale=1.875, temporal_compression_ratio=4, temporal_interpolation_scale=1.0,
                 text_embed_dim=4096, time_embed_dim=512, timestep_activation_fn="silu",
                 use_learned_positional_embeddings=False, use_rotary_positional_embeddings=True),
}
TRANSFORMER_CONFIGS["tiny"] = dict(TRANSFORMER_CONFIGS["full"], attention_head_dim=16, num_attention_heads=2,
                                   num_layers=2, sample_frames=21, sample_height=8, sample_width=14,
                                   text_embed_dim=32, time_embed_dim=32)
_BLOCKS = ["CogVideoXDownBlock3D"] * 4
VAE_CONFIGS = {
    "full": dict(act_fn="silu", block_out_channels=[128, 256, 256, 512], down_block_types=_BLOCKS,
                 force_upcast=True, in_channels=3, invert_scale_latents=False, latent_channels=16,
                 latents_mean=None, latents_std=None, layers_per_block=3, norm_eps=1e-06, norm_num_groups=32,
                 out_channels=3, sample_height=480, sample_width=720, scaling_factor=0.7, shift_factor=None,
                 temporal_compression_ratio=4, up_block_types=["CogVideoXUpBlock3D"] * 4,
                 use_post_quant_conv=False, use_quant_conv=False),
}
VAE_CONFIGS["tiny"] = dict(VAE_CONFIGS["full"], block_out_channels=[8, 8, 16, 16], layers_per_block=1,
                           norm_num_groups=4, sample_height=64, sample_width=112)
T5_CONFIGS = {
    # google/t5-v1_1-xxl encoder as CogVideoX ships it
    "full": dict(architectures=["T5EncoderModel"], classifier_dropout=0.0, d_ff=10240, d_kv=64, d_model=4096,
                 dense_act_fn="gelu_new", dropout_rate=0.1, eos_token_id=1, feed_forward_proj="gated-gelu",
                 initializer_factor=1.0, is_encoder_decoder=False, is_gated_act=True, layer_norm_epsilon=1e-06,
                 model_type="t5", num_decoder_layers=24, num_heads=64, num_layers=24, pad_token_id=0,
                 relative_attention_max_distance=128, relative_attention_num_buckets=32, tie_word_embeddings=False,
                 use_cache=False, vocab_size=32128),
}
T5_CONFIGS["tiny"] = dict(T5_CONFIGS["full"], d_ff=64, d_kv=8, d_model=32, num_decoder_layers=2, num_heads=4,
                          num_layers=2, vocab_size=64)
SCHEDULER_CONFIG = dict(_class_name="CogVideoXDDIMScheduler", beta_end=0.012, beta_schedule="scaled_linear",
                        beta_start=0.00085, clip_sample=False, clip_sample_range=1.0, num_train_timesteps=1000,
                        prediction_type="v_prediction", rescale_betas_zero_snr=True, sample_max_value=1.0,
                        set_alpha_to_one=True, snr_shift_scale=1.0, steps_offset=0, timestep_spacing="trailing",
                        trained_betas=None)


def _write_json(path: Path, data: Dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def random_state_dict(model: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype,
                      device: Union[str, torch.device] = "cpu") -> Dict[str, torch.Tensor]:
    """Random weights for every entry of a (meta) model's state dict: fan-in-scaled Gaussians for matrices and
    kernels, ones for norm scales, zeros for biases; tame enough that a random model's outputs stay finite."""
    out = {}
    for name, ref in model.state_dict().items():
        shape = tuple(ref.shape)
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=generator, device=device) / math.sqrt(fan_in)
        elif name.endswith("bias"):
            t = torch.zeros(shape, device=device)
        else:
            t = torch.ones(shape, device=device)
        out[name] = t.to(dtype).cpu().contiguous()
    return out


def _save(state: Dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def build_random_model_dir(path: Union[str, Path], size: str = "tiny", seed: int = 0, dtype: Optional[torch.dtype] = None,
                           device: Union[str, torch.device] = "cpu", raft: bool = False) -> Path:
    """Write a random-weight model dir at `path` (the --model-dir) and return it.

    dtype defaults to float32 for "tiny" and bfloat16 (the real files' dtype) for "full"; `device` is where the
    random numbers are drawn (a GPU makes "full" fast). `raft` also writes random RAFT-large weights."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    if size not in TRANSFORMER_CONFIGS:
        raise ValueError("size must be one of %s" % ", ".join(TRANSFORMER_CONFIGS))
    dtype = dtype or (torch.float32 if size == "tiny" else torch.bfloat16)
    root = Path(path)
    base = root / BASE_DIRNAME
    gen = torch.Generator(device).manual_seed(seed)

    tcfg = TRANSFORMER_CONFIGS[size]
    _write_json(base / "transformer" / "config.json",
                dict(tcfg, _class_name="CogVideoXTransformer3DModel", _diffusers_version="0.33.1",
                     add_noise_in_inpaint_model=True))
    with init_empty_weights():
        transformer = CogVideoXTransformer3DModel(**dict(tcfg, in_channels=48))
    for name in PASS_FILES.values():
        _save(random_state_dict(transformer, gen, dtype, device), root / name)
    del transformer

    vcfg = VAE_CONFIGS[size]
    _write_json(base / "vae" / "config.json", dict(vcfg, _class_name="AutoencoderKLCogVideoX", _diffusers_version="0.33.1"))
    with init_empty_weights():
        vae = AutoencoderKLCogVideoX(**vcfg)
    _save(random_state_dict(vae, gen, dtype, device), base / "vae" / "diffusion_pytorch_model.safetensors")
    del vae

    t5cfg = T5Config(**T5_CONFIGS[size])
    t5cfg.save_pretrained(base / "text_encoder")
    with init_empty_weights():
        t5 = T5EncoderModel(t5cfg)
    state = random_state_dict(t5, gen, dtype, device)
    state["encoder.embed_tokens.weight"] = state["shared.weight"]  # tied in T5: one tensor under both names
    _save({k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}, base / "text_encoder" / "model.safetensors")
    del t5

    (base / "tokenizer").mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copyfile(f, base / "tokenizer" / f.name)
    _write_json(base / "scheduler" / "scheduler_config.json", dict(SCHEDULER_CONFIG, _diffusers_version="0.33.1"))
    _write_json(base / "model_index.json", {
        "_class_name": "CogVideoXPipeline", "_diffusers_version": "0.33.1",
        "scheduler": ["diffusers", "CogVideoXDDIMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLCogVideoX"]})
    if raft:
        from torchvision.models.optical_flow import raft_large

        from .weights import RAFT_FILE

        torch.manual_seed(seed)
        torch.save(raft_large(weights=None, progress=False).state_dict(), root / RAFT_FILE)
    (root / RANDOM_WEIGHTS_MARKER).write_text("random weights written by void_server.pipelines.void.tiny (%s)\n" % size)
    return root
