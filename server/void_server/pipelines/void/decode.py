"""VAE decode in the reference's chunking (docs/void-reference-details.md §3.3, §11.2).

diffusers' `AutoencoderKLCogVideoX.decode` batches latents two at a time from the start, which gives 88 frames for
22 latents. The reference decodes latent 0 alone (spatial upsampling only), then pairs of latents carrying the
causal conv cache, and a trailing single latent upsampled x4 in time (nearest): 1 + 4 (T_lat - 1) frames. This is
a short loop over diffusers' own decoder modules; the only change inside is how a 1-frame chunk after the first is
upsampled in time.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterator, List, Optional

import torch
import torch.nn.functional as F
from diffusers.models.upsampling import CogVideoXUpsample3D

from .loading import execution_device


def decoded_frames(t_lat: int) -> int:
    return 1 + 4 * (t_lat - 1)


def decode_chunks(t_lat: int) -> List[tuple]:
    """[0:1], [1:3], [3:5], ... and a trailing [T-1:T] when T_lat is even."""
    chunks = [(0, 1)]
    s = 1
    while s < t_lat:
        chunks.append((s, min(s + 2, t_lat)))
        s += 2
    return chunks


def _upsample_time_and_space(self: CogVideoXUpsample3D, inputs: torch.Tensor) -> torch.Tensor:
    # The reference's single-frame chunk after the first: nearest x2 in time, height and width, then the 2-D conv.
    inputs = F.interpolate(inputs, scale_factor=2.0)
    b, c, t, h, w = inputs.shape
    x = self.conv(inputs.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return x.reshape(b, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)


@contextlib.contextmanager
def _single_frame_time_upsampling(decoder: torch.nn.Module) -> Iterator[None]:
    # accelerate's offload hooks keep the module's own forward in `_old_forward`; replace whichever is called.
    patched = []
    for m in decoder.modules():
        if isinstance(m, CogVideoXUpsample3D) and m.compress_time:
            attr = "_old_forward" if hasattr(m, "_hf_hook") else "forward"
            patched.append((m, attr, m.__dict__.get(attr)))
            setattr(m, attr, types.MethodType(_upsample_time_and_space, m))
    try:
        yield
    finally:
        for m, attr, saved in patched:
            if saved is None:
                delattr(m, attr)
            else:
                setattr(m, attr, saved)


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor,
                   on_chunk: Optional[Callable[[int, torch.Tensor], None]] = None) -> torch.Tensor:
    """(B, T_lat, 16, h, w) scaled latents -> (B, 3, 1 + 4 (T_lat - 1), 8h, 8w) float32 in [0, 1].

    `on_chunk(first_frame, frames)` gets each chunk's frames as soon as they are queued on the device (the same
    values the result holds), so a consumer can start on them while the next chunk decodes."""
    z = latents.permute(0, 2, 1, 3, 4).to(execution_device(vae), vae.dtype) / vae.config.scaling_factor
    cache = None
    out = []
    done = 0
    for s, e in decode_chunks(z.shape[2]):
        chunk = z[:, :, s:e]
        if vae.post_quant_conv is not None:
            chunk = vae.post_quant_conv(chunk)
        ctx = _single_frame_time_upsampling(vae.decoder) if (s > 0 and e - s == 1) else contextlib.nullcontext()
        with ctx:
            frames, cache = vae.decoder(chunk, conv_cache=cache)
        frames = (frames.float() / 2 + 0.5).clamp(0, 1)  # per chunk: elementwise, so the same as on the whole
        if on_chunk is not None:
            on_chunk(done, frames)
        done += frames.shape[2]
        out.append(frames)
    return torch.cat(out, dim=2)
