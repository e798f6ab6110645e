"""Full-size VOID models with random weights, built straight on the GPU (no downloads on the device).

The configs are the real ones (`void_server.pipelines.void.tiny`, "full"). Random weights give real speed and memory; their outputs are meaningless, so benchmarks compare variants
against each other, never against images.
"""
from __future__ import annotations

import argparse
from typing import Dict, Tuple

import torch

from void_server.pipelines.void.conditioning import latent_frames
from void_server.pipelines.void.loading import VOID_IN_CHANNELS
from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

# The base model's config (one source: tiny.py) with VOID's 48 input channels, as the loader builds it.
FULL_TRANSFORMER: Dict[str, object] = dict(TRANSFORMER_CONFIGS["full"], in_channels=VOID_IN_CHANNELS)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float32: how the benches compare a variant's output with its yardstick."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def random_init_(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """Fill a meta-initialised model with small random weights directly on `device` (norm weights 1, biases 0),
    scaled so 42 residual blocks stay finite."""
    from accelerate.utils import set_module_tensor_to_device

    g = torch.Generator(device).manual_seed(seed)
    for name, p in list(model.named_parameters()):
        t = torch.empty(p.shape, device=device, dtype=dtype)
        if name.endswith("bias"):
            t.zero_()
        elif "norm" in name and p.ndim == 1:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=g)
        set_module_tensor_to_device(model, name, device, value=t, dtype=dtype)
    return model.to(device).eval().requires_grad_(False)


def random_transformer(cfg: Dict[str, object], device: torch.device, dtype: torch.dtype, seed: int = 0):
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    with init_empty_weights():
        model = CogVideoXTransformer3DModel(**cfg)
    return random_init_(model, device, dtype, seed)


def random_vae(device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The full-size CogVideoX VAE (the real config's defaults, scaling factor 0.7) with random weights."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX

    with init_empty_weights():
        model = AutoencoderKLCogVideoX(scaling_factor=0.7)
    return random_init_(model, device, dtype, seed)


def rotary(t_lat: int, h: int, w: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=64, crops_coords=None, grid_size=(h // 2, w // 2), temporal_size=t_lat // 2, grid_type="slice",
        max_size=(int(FULL_TRANSFORMER["sample_height"]) // 2, int(FULL_TRANSFORMER["sample_width"]) // 2),
        device=device)
    return cos, sin


def forward_flops(t_lat: int, h: int, w: int, layers: int = 42, d: int = 3072, text: int = 226) -> float:
    """24*N*d^2 + 4*N^2*d per layer (projections, MLP, attention), N = video + text tokens."""
    n = (t_lat // 2) * (h // 2) * (w // 2) + text
    return layers * (24 * n * d * d + 4 * n * n * d)


def add_clip_args(ap: argparse.ArgumentParser) -> None:
    """--frames, --height, --width: the clip a transformer bench runs at (VOID's 85 frames at 384x672)."""
    ap.add_argument("--frames", type=int, default=85)
    ap.add_argument("--height", type=int, default=384)
    ap.add_argument("--width", type=int, default=672)


def latent_grid(frames: int, height: int, width: int) -> Tuple[int, int, int]:
    """(latent frames, height, width) the transformer sees: the VAE's 4x in time, padded to even for the 2x temporal
    patches, and 8x in space."""
    t_lat = latent_frames(frames)
    return t_lat + t_lat % 2, height // 8, width // 8
