"""VAE decode in the reference's chunking (docs/void-reference-details.md §3.3, §11.2).

diffusers' `AutoencoderKLCogVideoX.decode` batches latents two at a time from the start, which gives 88 frames for
22 latents. The reference decodes latent 0 alone (spatial upsampling only), then pairs of latents carrying the
causal conv cache, and a trailing single latent upsampled x4 in time (nearest): 1 + 4 (T_lat - 1) frames. This is
a short loop over diffusers' own decoder modules; the only change inside is how a 1-frame chunk after the first is
upsampled in time.

`decode_latents(..., pipelined=(second_vae, split))` runs the decoder's first `split` stages (`decoder_stages`) on
the VAE's device and the rest on a second VAE's (another GPU), chunk k's first part beside chunk k - 1's second:
the same calls in the same order per chunk, each half keeping its own conv caches, so the same frames.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Dict, Iterator, List, Optional, Tuple

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


# A decoder stage: (hidden, latent chunk, the previous chunk's conv caches, this chunk's to fill) -> hidden.
Stage = Callable[[torch.Tensor, torch.Tensor, Dict[str, object], Dict[str, object]], torch.Tensor]


def decoder_stages(decoder: torch.nn.Module) -> List[Stage]:
    """CogVideoXDecoder3D.forward as its stages, in order: conv_in, the mid block, each up block, then the output
    norm, activation and conv. The same calls with the same arguments (this VAE has no temb), each writing its conv
    caches under diffusers' own keys."""
    def conv_in(h, z, old, new):
        h, new["conv_in"] = decoder.conv_in(h, conv_cache=old.get("conv_in"))
        return h

    def mid(h, z, old, new):
        h, new["mid_block"] = decoder.mid_block(h, None, z, conv_cache=old.get("mid_block"))
        return h

    def up(i: int) -> Stage:
        def run(h, z, old, new):
            key = "up_block_%d" % i
            h, new[key] = decoder.up_blocks[i](h, None, z, conv_cache=old.get(key))
            return h
        return run

    def out(h, z, old, new):
        h, new["norm_out"] = decoder.norm_out(h, z, conv_cache=old.get("norm_out"))
        h, new["conv_out"] = decoder.conv_out(decoder.conv_act(h), conv_cache=old.get("conv_out"))
        return h

    return [conv_in, mid] + [up(i) for i in range(len(decoder.up_blocks))] + [out]


class _Half:
    """Some of a decoder's stages with their own conv caches, run chunk by chunk on that decoder's device."""

    def __init__(self, vae, stages: List[Stage]) -> None:
        self.decoder, self.stages = vae.decoder, stages
        self.device = execution_device(vae)
        self.cache: Dict[str, object] = {}

    def __call__(self, h: torch.Tensor, z: torch.Tensor, single: bool) -> torch.Tensor:
        new: Dict[str, object] = {}
        with _single_frame_time_upsampling(self.decoder) if single else contextlib.nullcontext():
            for stage in self.stages:
                h = stage(h, z, self.cache, new)
        self.cache = new
        return h


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor,
                   on_chunk: Optional[Callable[[int, torch.Tensor], None]] = None,
                   pipelined: Optional[Tuple[object, int]] = None) -> torch.Tensor:
    """(B, T_lat, 16, h, w) scaled latents -> (B, 3, 1 + 4 (T_lat - 1), 8h, 8w) float32 in [0, 1].

    `on_chunk(first_frame, frames)` gets each chunk's frames as soon as they are queued on the device (the same
    values the result holds), so a consumer can start on them while the next chunk decodes. `pipelined=(second
    VAE, split)`: the decoder's first `split` stages run on this VAE, the rest on the second (same weights, another
    device), which returns the frames; chunk k's first half is queued before chunk k - 1's second, so two GPUs work
    at once."""
    z = latents.permute(0, 2, 1, 3, 4).to(execution_device(vae), vae.dtype) / vae.config.scaling_factor
    chunks = []
    for s, e in decode_chunks(z.shape[2]):
        chunk = z[:, :, s:e]
        chunks.append((vae.post_quant_conv(chunk) if vae.post_quant_conv is not None else chunk, s > 0 and e - s == 1))
    out: List[torch.Tensor] = []

    def emit(frames: torch.Tensor) -> None:
        frames = (frames.float() / 2 + 0.5).clamp(0, 1)  # per chunk: elementwise, so the same as on the whole
        if on_chunk is not None:
            on_chunk(sum(f.shape[2] for f in out), frames)
        out.append(frames)

    if pipelined is None:
        cache = None
        for chunk, single in chunks:
            with _single_frame_time_upsampling(vae.decoder) if single else contextlib.nullcontext():
                frames, cache = vae.decoder(chunk, conv_cache=cache)
            emit(frames)
        return torch.cat(out, dim=2)

    second, split = pipelined
    stages = decoder_stages(vae.decoder)
    if not 0 < split < len(stages):
        raise ValueError("a pipelined decode splits the decoder's %d stages between 1 and %d, not at %r"
                         % (len(stages), len(stages) - 1, split))
    first, last = _Half(vae, stages[:split]), _Half(second, decoder_stages(second.decoder)[split:])
    waiting = None  # the previous chunk's (hidden, latents, single) on the second device
    for chunk, single in chunks:
        h = first(chunk, chunk, single)
        if waiting is not None:
            emit(last(*waiting))
        waiting = (h.to(last.device, non_blocking=True), chunk.to(last.device, non_blocking=True), single)
    emit(last(*waiting))
    return torch.cat(out, dim=2)
