"""Pass-2 initial noise from the pass-1 video's motion: the reference's noise maker and our aligned variant.

reference_warped_noise reproduces the reference (docs/void-reference-details.md §4.2): 72 re-timed frames, cover
480x720 and centre-crop, flow at 240x360, warp at 8x that (1920x2880), area-downscale by 32 -> (72, 60, 90, 16).
Its noise covers only the crop and must later be bilinearly resized to the latent grid (the other engineer's
latent_noise.py), which shrinks its std to about 0.66 (docs/noise.md).

aligned_warped_noise is built the way training built it (§4.4): the whole frame, average-pooled straight onto the
latent grid (variance-preserving), one noise frame per latent frame however long the shot.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch

from ..frame_pool import map_frames
from .flow import _device, iter_flow_ahead, warm_up_flow
from .noise_warp import NoiseWarper, area_downscale

# The reference noise maker's framing: cover 480x720, flow at half that, the warp 8x the flow's size.
REFERENCE_COVER_HW = (480, 720)
REFERENCE_FRAME_SCALE = 0.5
REFERENCE_WARP_FACTOR = 8
REFERENCE_FRAMES = 72  # the re-timed clip it warps along


def retime_indices(n: int, frames: int) -> np.ndarray:
    """Nearest re-timing of n frames to `frames`, first and last kept: round(i (n-1) / (frames-1))."""
    if frames == 1:
        return np.zeros(1, np.int64)
    return np.round(np.arange(frames) * (n - 1) / (frames - 1)).astype(np.int64)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """HWC float image resize: area when shrinking, bilinear when enlarging."""
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def cover_and_crop(img: np.ndarray, cover_hw: Tuple[int, int]) -> np.ndarray:
    """Scale uniformly so the image covers cover_hw, then centre-crop to it (the reference's noise framing)."""
    ch, cw = cover_hw
    h, w = img.shape[:2]
    s = max(ch / h, cw / w)
    nh, nw = max(ch, int(round(h * s))), max(cw, int(round(w * s)))
    img = _resize(img, nh, nw)
    y0, x0 = (nh - ch) // 2, (nw - cw) // 2
    return img[y0:y0 + ch, x0:x0 + cw]


def _to_hwc(video01: torch.Tensor) -> List[np.ndarray]:
    if video01.ndim != 4 or video01.shape[1] != 3:
        raise ValueError("video must be (T, 3, H, W) in [0, 1], got %s" % (tuple(video01.shape),))
    return [f.permute(1, 2, 0).float().cpu().numpy() for f in video01]


def _to_tchw(frames: List[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _warp_through(frames: torch.Tensor, raft: torch.nn.Module, warper: NoiseWarper, keep: List[int],
                  factor: int) -> List[torch.Tensor]:
    """Warp the noise along every consecutive flow of `frames`; return the downscaled noise at frames `keep`."""
    wanted = set(keep)
    out = {}
    if 0 in wanted:
        out[0] = area_downscale(warper.noise, factor)
    last = max(keep)
    for i, flow in enumerate(iter_flow_ahead(raft, frames[:last + 1], to_device=warper.device), start=1):
        noise = warper.step(flow)
        if i in wanted:
            out[i] = area_downscale(noise, factor)
    return [out[i] for i in keep]


def _flow_hw(cover_hw: Tuple[int, int], frame_scale: float) -> Tuple[int, int]:
    return int(round(cover_hw[0] * frame_scale)), int(round(cover_hw[1] * frame_scale))


def warm_up_reference_flow(raft: torch.nn.Module) -> None:
    """RAFT's CUDA graphs for the reference noise maker's flows (flow.warm_up_flow), so a job finds them captured."""
    warm_up_flow(raft, REFERENCE_FRAMES, _flow_hw(REFERENCE_COVER_HW, REFERENCE_FRAME_SCALE))


@torch.no_grad()
def warm_up_reference_warp(device: torch.device, channels: int = 16) -> None:
    """One warp step at the reference noise maker's default size, on zeros: on a GPU the step is compiled
    (noise_warp._warp_fn), and this makes the first job's pass 2 find it ready."""
    fh, fw = _flow_hw(REFERENCE_COVER_HW, REFERENCE_FRAME_SCALE)
    f = REFERENCE_WARP_FACTOR
    warper = NoiseWarper(channels, fh * f, fw * f, torch.Generator("cpu").manual_seed(0), device)
    warper.step(torch.zeros((2, fh, fw), device=device))


@torch.no_grad()
def reference_warped_noise(
    video01: torch.Tensor,
    raft: torch.nn.Module,
    generator: torch.Generator,
    frames: int = REFERENCE_FRAMES,
    cover_hw: Tuple[int, int] = REFERENCE_COVER_HW,
    frame_scale: float = REFERENCE_FRAME_SCALE,
    warp_factor: int = REFERENCE_WARP_FACTOR,
    latent_factor: int = 8,
    channels: int = 16,
    device: Optional[torch.device] = None,
) -> np.ndarray:
    """The reference's noises.npy: float32 (frames, h, w, channels) THWC, h = cover_h * frame_scale * warp_factor /
    downscale with downscale = round(frame_scale * warp_factor) * latent_factor (60x90 at the defaults).
    Frame 0 is the initial noise. The noise is warped on `device` (default RAFT's), while RAFT computes the next
    flows; `generator` seeds every draw.
    Sizes are parameters only so tests can run it small; the defaults are the reference's."""
    clip = _to_hwc(video01)
    picked = [clip[i] for i in retime_indices(len(clip), frames)]
    fh, fw = _flow_hw(cover_hw, frame_scale)
    small = _to_tchw(map_frames(picked, lambda f: _resize(cover_and_crop(f, cover_hw), fh, fw)))
    downscale = int(round(frame_scale * warp_factor)) * latent_factor
    warper = NoiseWarper(channels, fh * warp_factor, fw * warp_factor, generator, device=device or _device(raft))
    noise = _warp_through(small, raft, warper, list(range(frames)), downscale)
    return torch.stack(noise).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def latent_frame_indices(n_frames: int, latent_t: int) -> np.ndarray:
    """Which video frame each latent frame takes its noise from: evenly spread, first and last kept
    (frame 4k for a clip of 4(latent_t - 1) + 1 frames, the VAE's own correspondence)."""
    return retime_indices(n_frames, latent_t)


@torch.no_grad()
def aligned_warped_noise(
    video01: torch.Tensor,
    raft: torch.nn.Module,
    latent_t: int,
    latent_hw: Tuple[int, int],
    generator: torch.Generator,
    pool: int = 32,
    warp_factor: int = 8,
    channels: int = 16,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Noise on the latent grid itself: (latent_t, channels, h, w) float32 on `device` (default RAFT's), unit
    variance.

    The whole frame is used (no crop), so the noise lines up with the latents; the state is `pool` state pixels
    per latent pixel and is average-pooled (x pool) onto the grid; flow is computed at state / warp_factor
    (192x336 for a 48x84 grid, i.e. half the model resolution, as the reference's flow is). Every video frame is
    warped through; latent frame k takes the frame `latent_frame_indices` gives."""
    lh, lw = latent_hw
    if pool % warp_factor:
        raise ValueError("pool (%d) must be a multiple of warp_factor (%d)" % (pool, warp_factor))
    fh, fw = lh * pool // warp_factor, lw * pool // warp_factor
    frames = _to_tchw(map_frames(_to_hwc(video01), lambda f: _resize(f, fh, fw)))
    warper = NoiseWarper(channels, lh * pool, lw * pool, generator, device=device or _device(raft))
    keep = [int(i) for i in latent_frame_indices(len(frames), latent_t)]
    return torch.stack(_warp_through(frames, raft, warper, keep, pool))
