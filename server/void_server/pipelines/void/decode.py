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
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

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
def _chunk_upsampling(decoder: torch.nn.Module, single: bool) -> Iterator[None]:
    """The decoder's time upsampling for a chunk: as it is, or the reference's for a single latent after the first."""
    # accelerate's offload hooks keep the module's own forward in `_old_forward`; replace whichever is called.
    patched = []
    for m in decoder.modules() if single else ():
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


# A decoder stage: (hidden, latent chunk, the previous chunk's conv caches, this chunk's to fill) -> hidden. Each has a
# `name` ("conv_in", "mid_block.resnet_0", "up_block_2.resnet_1", "up_block_2.upsample", "out").
Stage = Callable[[torch.Tensor, torch.Tensor, Dict[str, object], Dict[str, object]], torch.Tensor]


def _named(name: str, stage: Stage) -> Stage:
    stage.name = name  # type: ignore[attr-defined]
    return stage


def decoder_stages(decoder: torch.nn.Module) -> List[Stage]:
    """CogVideoXDecoder3D.forward as its stages, in order: conv_in, each resnet of the mid block and of every up block
    and each up block's upsampler, then the output norm, activation and conv. The same calls with the same
    arguments as the decoder's and its blocks' forwards (this VAE has no temb; no grad, so no checkpointing), each
    writing its conv caches under diffusers' own keys. Resnets one by one, so a cut can fall inside an up block:
    the full-resolution blocks hold most of the work."""
    def conv_in(h, z, old, new):
        h, new["conv_in"] = decoder.conv_in(h, conv_cache=old.get("conv_in"))
        return h

    def resnet(block_key: str, i: int, block: torch.nn.Module) -> Stage:
        def run(h, z, old, new):
            key = "resnet_%d" % i
            h, new.setdefault(block_key, {})[key] = block(h, None, z, conv_cache=old.get(block_key, {}).get(key))
            return h
        return _named("%s.resnet_%d" % (block_key, i), run)

    def upsample(block_key: str, block: torch.nn.Module) -> Stage:
        def run(h, z, old, new):
            for upsampler in block.upsamplers:
                h = upsampler(h)
            return h
        return _named(block_key + ".upsample", run)

    def out(h, z, old, new):
        h, new["norm_out"] = decoder.norm_out(h, z, conv_cache=old.get("norm_out"))
        h, new["conv_out"] = decoder.conv_out(decoder.conv_act(h), conv_cache=old.get("conv_out"))
        return h

    stages: List[Stage] = [_named("conv_in", conv_in)]
    for key, block in [("mid_block", decoder.mid_block)] + [("up_block_%d" % i, b) for i, b in enumerate(decoder.up_blocks)]:
        stages += [resnet(key, i, r) for i, r in enumerate(block.resnets)]
        if getattr(block, "upsamplers", None) is not None:
            stages.append(upsample(key, block))
    return stages + [_named("out", out)]


def split_after(stages: List[Stage], cut: Union[int, str]) -> int:
    """How many of a decoder's `stages` (`decoder_stages`) a pipelined decode runs on its first VAE: `cut` is that
    count, or the name of the last stage to run there. ValueError where it leaves either VAE nothing to do or names
    no stage."""
    names = [s.name for s in stages]  # type: ignore[attr-defined]
    if isinstance(cut, str) and not cut.lstrip("-").isdigit():
        if cut not in names:
            raise ValueError("the decoder has no stage %r (its stages: %s)" % (cut, ", ".join(names)))
        return names.index(cut) + 1
    if not 0 < int(cut) < len(names):
        raise ValueError("a pipelined decode splits the decoder's %d stages between 1 and %d, not at %r"
                         % (len(names), len(names) - 1, cut))
    return int(cut)


class _Half:
    """Some of a decoder's stages with their own conv caches, run chunk by chunk on that decoder's device."""

    def __init__(self, vae, stages: List[Stage]) -> None:
        self.decoder, self.stages = vae.decoder, stages
        self.device = execution_device(vae)
        self.cache: Dict[str, object] = {}

    def __call__(self, h: torch.Tensor, z: torch.Tensor, single: bool) -> torch.Tensor:
        new: Dict[str, object] = {}
        with _chunk_upsampling(self.decoder, single):
            for stage in self.stages:
                h = stage(h, z, self.cache, new)
        self.cache = new
        return h


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor,
                   on_chunk: Optional[Callable[[int, torch.Tensor], None]] = None,
                   pipelined: Optional[Tuple[object, Union[int, str]]] = None) -> torch.Tensor:
    """(B, T_lat, 16, h, w) scaled latents -> (B, 3, 1 + 4 (T_lat - 1), 8h, 8w) float32 in [0, 1].

    `on_chunk(first_frame, frames)` gets each chunk's frames as soon as they are queued on the device (the same
    values the result holds), so a consumer can start on them while the next chunk decodes. `pipelined=(second
    VAE, cut)`: the decoder's stages up to `cut` (`split_after`) run on this VAE, the rest on the second (same
    weights, another device), which returns the frames; chunk k's first half is queued before chunk k - 1's
    second, so two GPUs work at once."""
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
            with _chunk_upsampling(vae.decoder, single):
                frames, cache = vae.decoder(chunk, conv_cache=cache)
            emit(frames)
        return torch.cat(out, dim=2)

    second, cut = pipelined
    stages = decoder_stages(vae.decoder)
    split = split_after(stages, cut)
    first, last = _Half(vae, stages[:split]), _Half(second, decoder_stages(second.decoder)[split:])
    waiting = None  # the previous chunk's (hidden, latents, single) on the second device
    for chunk, single in chunks:
        h = first(chunk, chunk, single)
        if waiting is not None:
            emit(last(*waiting))
        waiting = (h.to(last.device, non_blocking=True), chunk.to(last.device, non_blocking=True), single)
    emit(last(*waiting))
    return torch.cat(out, dim=2)
