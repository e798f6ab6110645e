"""Reference preprocessing (docs/void-reference-details.md §2): resize, quantise, pad, mask rules, VAE conditioning.

Everything here works on torch tensors laid out like the reference's pipeline inputs: video (1, 3, T, H, W) in
[0, 1], mask (1, 1, T, H, W) with the inverted quadmask `(255 - q) / 255`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ...reasoning.combine import KEEP, QUANTISE_BOUNDS
from ..frame_pool import map_frames
from .colour import to_model
from .host_copy import pinned_empty
from .loading import execution_device

MODEL_SIZE = (384, 672)  # (H, W) the model was trained at
WINDOW_FRAMES = 85  # one temporal window: 22 latent frames
MAX_REFERENCE_FRAMES = 197  # the reference's cap; our pipeline lifts it (windows over every latent frame)
NOISE_AUG_RATIO = 0.0563


def padded_length(n: int, window_frames: int = WINDOW_FRAMES, max_frames: Optional[int] = MAX_REFERENCE_FRAMES) -> int:
    """Frames the reference generates for an n-frame clip: 4k+1 with k odd (an even latent count, as patch_size_t
    = 2 needs), at least one window. `max_frames=None` lifts the reference's 197 cap."""
    if n < 1:
        raise ValueError("a clip needs at least one frame")
    if max_frames is not None:
        n = min(n, max_frames)
    m = (n // 4) * 4 + 1
    if m < n:
        m += 4
    if (m // 4) % 2 == 0:
        m += 4
    if max_frames is not None:
        m = min(m, max_frames)
    return max(window_frames, m)


def latent_frames(video_frames: int) -> int:
    return (video_frames - 1) // 4 + 1


def pingpong_pad(x: torch.Tensor, length: int, dim: int = 2) -> torch.Tensor:
    """Cut to `length` frames along `dim`, then extend by appending the clip mirrored (a, b, c, c, b, a, a, ...)."""
    x = x.narrow(dim, 0, min(length, x.shape[dim]))
    while x.shape[dim] < length:
        x = torch.cat([x, x.flip(dim)], dim=dim)
    return x.narrow(dim, 0, length)


def area_resize(frames: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, *size) with torch's 'area' mode (a box filter when shrinking), no aspect kept."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode="area")


def _tensor(f: np.ndarray, device: Optional[torch.device]) -> torch.Tensor:
    """A frame as a tensor on `device`, in its own dtype (a half-float plate uploads half the bytes). To a GPU
    through page-locked memory: one host copy from whatever strides the frame has (a crop, a read-only map), then
    a copy at the bus's full rate that the frame's GPU work queues behind. From pageable memory the driver copies
    through its own staging buffer, one copy at a time: a 1080p plate's 85 float frames (2.1 GB) took most of the
    0.45 s model-inputs stage so (docs/performance.md, seventeenth session). Elsewhere the frame is shared where
    torch can, copied where it cannot."""
    if device is not None and torch.device(device).type == "cuda":
        host = pinned_empty(f.shape, torch.from_numpy(np.empty(0, f.dtype)).dtype)
        if host is not None:  # else page-locked memory was refused: the pageable path below
            np.copyto(host.numpy(), f)
            # The caching host allocator keeps the block from reuse until this copy is done, after `host` is gone.
            return host.to(device, non_blocking=True)
    return torch.from_numpy(np.require(f, requirements=("C", "W"))).to(device or "cpu")


def _video_frame(f: np.ndarray, size: Tuple[int, int], encoding: Optional[str], device: Optional[torch.device]) -> torch.Tensor:
    v = _tensor(f[..., :3], device)
    v = v.float() / 255.0 if v.dtype == torch.uint8 else v.float()
    if encoding is not None:
        v = to_model(v, encoding)
    return area_resize(v.permute(2, 0, 1).unsqueeze(0), size)[0]


def quantise_levels(q: torch.Tensor) -> torch.Tensor:
    """`reasoning.combine.quantise` for a float tensor on any device: the four quadmask levels, as floats."""
    out = torch.full_like(q, float(KEEP))
    for bound, level in reversed(QUANTISE_BOUNDS):
        out = torch.where(q <= bound, float(level), out)
    return out


def _mask_frame(f: np.ndarray, size: Tuple[int, int], device: Optional[torch.device]) -> torch.Tensor:
    q = area_resize(_tensor(f, device).float()[None, None], size)[0, 0]
    return 255.0 - quantise_levels(q)


def prepare_video(frames: Union[np.ndarray, Sequence[np.ndarray]], size: Tuple[int, int], length: int,
                  encoding: Optional[str] = None, device: Optional[torch.device] = None) -> torch.Tensor:
    """T frames (H, W, >=3) uint8, or float -> (1, 3, length, *size) float32 in [0, 1] on `device` (default CPU),
    stretched and ping-pong padded. `encoding` ("linear", "srgb": colour.to_model) converts a plate to what the
    model sees, at plate resolution, before the resize; None takes frames already in [0, 1]. Frames are fetched,
    converted and resized one at a time on the frame pool (a 4K clip never sits in memory whole); torch's area
    resize works per plane, so this equals the reference's whole-clip call."""
    out = map_frames(frames, lambda f: _video_frame(np.asarray(f), size, encoding, device))
    return pingpong_pad(torch.stack(out, dim=1).unsqueeze(0), length, dim=2)


def prepare_mask(quadmask: Union[np.ndarray, Sequence[np.ndarray]], size: Tuple[int, int], length: int,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """T quadmask frames (H, W), values 0..255 -> (1, 1, length, *size) inverted mask (255 - q) / 255 on `device`,
    values in {0, .502, .753, 1}. Area-resized first, then quantised to the four levels (so object edges gain thin
    63/127 rings, as in the reference)."""
    out = map_frames(quadmask, lambda f: _mask_frame(np.asarray(f), size, device))
    return pingpong_pad(torch.stack(out)[None, None], length, dim=2) / 255.0


def apply_mask_rule(mask: torch.Tensor, rule: str) -> torch.Tensor:
    """'tri' (pass 1): >0.75 -> 1 (overlap counts as remove), 0.25..0.75 -> 127/255, <0.25 -> 0.
    'binary' (pass 2): >0.5 -> 1 (remove, overlap and affected all regenerate), else 0.
    'quad': unchanged (what pass 2 was trained with; offered for measurement)."""
    if rule == "tri":
        out = torch.zeros_like(mask)
        out[(mask >= 0.25) & (mask <= 0.75)] = 127.0 / 255.0
        out[mask > 0.75] = 1.0
        return out
    if rule == "binary":
        return (mask > 0.5).to(mask.dtype)
    if rule == "quad":
        return mask
    raise ValueError("unknown mask rule %r (tri, binary, quad)" % rule)


def augmentation_noise(shape: Tuple[int, int, int, int, int], seed: int) -> torch.Tensor:
    """The noise of `augment_video` for a (B, C, T, H, W) video: what `torch.manual_seed(seed);
    torch.randn_like(video)` gives on the CPU (the parity contract), from a private generator so the process-wide
    RNG is left alone.

    The reference's video is a (B, T, C, H, W) buffer viewed as (B, C, T, H, W); torch fills such a non-contiguous
    tensor element by element in memory order with its scalar Box-Muller (`at::normal_distribution<double>`: per
    pair two 53-bit uniforms u1, u2 from the generator, r = sqrt(-2 log1p(-u2)), then r cos(2 pi u1) and
    r sin(2 pi u1)), which took 2.5-4 s at 85 frames on one core. Here only the uniforms are drawn serially (the
    same `random64` draws, by `uniform_` on float64) and the transform runs vectorised on every core: the same
    values (bit for bit in the tests; at most a rare last-bit difference where a vectorised sin, cos or log1p
    rounds a double differently from the C library). It depends only on the shape and the seed, which is why the
    pipeline draws it on a thread while the plate is still being prepared."""
    gen = torch.Generator("cpu").manual_seed(seed)
    b, c, t, h, w = shape
    n = b * c * t * h * w
    u = torch.empty(((n + 1) // 2, 2), dtype=torch.float64).uniform_(0.0, 1.0, generator=gen)
    r = torch.log1p(-u[:, 1]).mul_(-2.0).sqrt_()
    theta = u[:, 0] * (2.0 * math.pi)
    u[:, 0] = r * torch.cos(theta)
    u[:, 1] = r.mul_(torch.sin(theta))
    return u.reshape(-1)[:n].to(torch.float32).reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def augment_video(video_pm1: torch.Tensor, seed: int, ratio: float = NOISE_AUG_RATIO,
                  noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gaussian noise augmentation of the [-1, 1] conditioning video, skipped where a value is exactly -1.
    `noise` is `augmentation_noise(video.shape, seed)` when it was drawn ahead."""
    if noise is None:
        noise = augmentation_noise(tuple(video_pm1.shape), seed)
    elif tuple(noise.shape) != tuple(video_pm1.shape):
        raise ValueError("augmentation noise %s does not fit the video %s" % (tuple(noise.shape), tuple(video_pm1.shape)))
    noise = noise.to(video_pm1.device, video_pm1.dtype)
    noise = torch.where(video_pm1 == -1, torch.zeros_like(noise), noise * ratio)
    return video_pm1 + noise


@torch.no_grad()
def vae_encode(vae, x: torch.Tensor) -> torch.Tensor:
    """(1, 3, T, H, W) -> (1, T_lat, 16, h, w): the distribution's mode times the scaling factor."""
    lat = vae.encode(x.to(execution_device(vae), vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    return lat.permute(0, 2, 1, 3, 4)


@torch.no_grad()
def encode_mask(vae, mask: torch.Tensor) -> torch.Tensor:
    """The mask's latents (1, T_lat, 16, h, w): VAE(1 - mask) of the 3-channel image, not rescaled."""
    return vae_encode(vae, (1.0 - mask).expand(-1, 3, -1, -1, -1))


@torch.no_grad()
def encode_conditioning(
    vae,
    video01: Optional[torch.Tensor],
    mask: Optional[torch.Tensor],
    add_noise: bool,
    seed: int,
    video_latents: Optional[torch.Tensor] = None,
    augment_noise: Optional[Callable[[], torch.Tensor]] = None,
    mask_latents: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """-> (inpaint latents (1, T_lat, 32, h, w): VAE(1 - mask) then VAE(video), the augmented [-1, 1] video).

    The video is the full, unmasked plate (the reference's zero_out_mask_region=False); the mask image is
    3-channel `1 - mask` in [0, 1], not rescaled. Both passes condition on the same plate with the same seeded
    augmentation, so pass 2 can hand in pass 1's `video_latents` (exactly what it would encode); then the
    augmented video is not rebuilt (`video01` may be None then) and None is returned for it. `mask_latents` are
    `encode_mask(vae, mask)` when the caller encoded them ahead (`mask` may be None then). `augment_noise` gives the augmentation noise drawn ahead
    (`augmentation_noise`); it is asked for only after the mask is encoded, so a draw still running on its thread
    overlaps that encode."""
    if mask_latents is None:
        mask_latents = encode_mask(vae, mask)
    video = None
    if video_latents is None:
        video_latents, video = encode_plate(vae, video01, add_noise, seed, augment_noise)
    return torch.cat([mask_latents, video_latents.to(mask_latents.device, mask_latents.dtype)], dim=2), video


@torch.no_grad()
def encode_plate(vae, video01: torch.Tensor, add_noise: bool, seed: int,
                 augment_noise: Optional[Callable[[], torch.Tensor]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The plate's conditioning latents (1, T_lat, 16, h, w) on the VAE's device, and the [-1, 1] video they
    encode: seeded Gaussian augmentation where the model was trained with it (`encode_conditioning`)."""
    video = video01.to(execution_device(vae)) * 2.0 - 1.0
    if add_noise:
        video = augment_video(video, seed, noise=None if augment_noise is None else augment_noise())
    return vae_encode(vae, video), video
