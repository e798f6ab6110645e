"""Pass 2's starting noise at latent size.

`reference_noise_to_latents` is the reference's conversion (docs/void-reference-details.md §4.4): evenly spaced
frames of the noise maker's (72, 60, 90, 16) output, then a bilinear OpenCV resize per channel to the latent grid.
That resize shrinks the standard deviation to about 0.66 and the noise covers a centre crop only; it is kept for
parity. `aligned_noise_to_latents` is the variance-preserving alternative training used: area-pool pixel-space
noise onto the latent grid, times the pooling factor, for every latent frame.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def reference_noise_to_latents(raw_thwc: np.ndarray, t_lat: int, h: int, w: int) -> torch.Tensor:
    """(T_src, H_src, W_src, 16) noise (float16 on disk, used as float32) -> (1, t_lat, 16, h, w) float32."""
    raw = np.asarray(raw_thwc, dtype=np.float32)
    idx = np.linspace(0, raw.shape[0] - 1, t_lat).astype(int)
    frames = []
    for i in idx:
        chans = [cv2.resize(raw[i, :, :, c], (w, h), interpolation=cv2.INTER_LINEAR) for c in range(raw.shape[-1])]
        frames.append(np.stack(chans, axis=0))
    return torch.from_numpy(np.stack(frames)).unsqueeze(0)


def aligned_noise_to_latents(noise: torch.Tensor, t_lat: int, h: int, w: int) -> torch.Tensor:
    """(T_src, C, H, W) unit-variance pixel-space noise aligned with the model frame -> (1, t_lat, C, h, w).

    Frames are picked evenly (every latent frame gets one); space is area-pooled and multiplied by the square root
    of the pooled area, so independent unit-variance noise stays unit variance."""
    if noise.ndim != 4:
        raise ValueError("noise must be (T, C, H, W), got %s" % (tuple(noise.shape),))
    t_src = noise.shape[0]
    idx = torch.from_numpy(np.linspace(0, t_src - 1, t_lat).astype(np.int64))
    picked = noise.float()[idx]
    if tuple(picked.shape[-2:]) != (h, w):
        gain = math.sqrt((picked.shape[-2] * picked.shape[-1]) / (h * w))
        picked = F.adaptive_avg_pool2d(picked, (h, w)) * gain
    return picked.unsqueeze(0)
