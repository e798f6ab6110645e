"""The compiled VAE's lossless rewrites: the same math, laid out so its convolutions run faster.

Nearly all of the VAE's work is 3x3x3 convolutions (421 TFLOP a decode, 192 an encode at 85 frames of 384x672), and
it ran at ~300 TFLOP/s, under 40% of an H100's bf16 peak. Measured on an H100 at a decode chunk's shapes
(`bench/bench_conv.py`, docs/performance.md, sixteenth session):

1. **Channels-last convolution weights.** cuDNN's bf16 3x3x3 kernels run 20-30% faster on channels-last-3d (NDHWC)
   tensors than on NCDHW ones. Inside a compiled graph, weights in that layout make inductor lay each convolution's
   input out so in the fused kernel that makes it (the norm and SiLU before it): no extra pass. Eager, every
   convolution would convert its input and output instead (2-3x slower), so this is for compiled modules only.
2. **The decoder's spatial norms' 1x1x1 convolutions on the latent.** `CogVideoXSpatialNorm3D` computes
   `norm(f) * conv_y(up(zq)) + conv_b(up(zq))`, `up` a nearest upsampling of the 16-channel latent to f's size. A
   1x1x1 convolution and a nearest upsampling commute (each output pixel is the same per-pixel sum of the same
   input pixel), so the convolutions run at the latent's size and their outputs are upsampled: in a compiled graph
   an indexed read inside the norm's kernel, where before two C-channel tensors at full resolution were written and
   read back per norm.

Together 11-17% off the decoder's full-resolution resnet blocks and 13% off the encoder's, each as close to a
float32 run as before (bench_conv's "rel. L2 vs fp32" column). Applied by `accel.compile_vae` to the modules it
compiles, in the `gpu` memory mode. A rewritten module hands its outputs (hidden states and conv caches) back in
diffusers' contiguous layout, made so inside its graph: what runs after it (the decoder's eager upsamplers, the
precompiled store's canonical inputs) would otherwise copy each channels-last tensor apart, which made a whole
decode 0.54 s slower on an H100 rather than faster.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_cogvideox import (CogVideoXDecoder3D, CogVideoXEncoder3D,
                                                                    CogVideoXResnetBlock3D, CogVideoXSpatialNorm3D)


class LatentSizeSpatialNorm3D(CogVideoXSpatialNorm3D):
    """CogVideoXSpatialNorm3D with its 1x1x1 convolutions run before zq's nearest upsampling (module docstring)."""

    def forward(self, f: torch.Tensor, zq: torch.Tensor, conv_cache=None):
        conv_cache = conv_cache or {}
        new_conv_cache = {}
        # A kernel of 1 in time has no causal padding: these caches are never read (diffusers keeps its input).
        y, new_conv_cache["conv_y"] = self.conv_y(zq, conv_cache=conv_cache.get("conv_y"))
        b, new_conv_cache["conv_b"] = self.conv_b(zq, conv_cache=conv_cache.get("conv_b"))
        return self.norm_layer(f) * _upsampled_like(y, f) + _upsampled_like(b, f), new_conv_cache


def _upsampled_like(t: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """`t` upsampled (nearest) to f's frames, height and width as diffusers upsamples zq: an odd clip of several
    frames keeps its first frame apart."""
    if f.shape[2] > 1 and f.shape[2] % 2 == 1:
        first = F.interpolate(t[:, :, :1], size=(1,) + tuple(f.shape[-2:]))
        rest = F.interpolate(t[:, :, 1:], size=(f.shape[2] - 1,) + tuple(f.shape[-2:]))
        return torch.cat([first, rest], dim=2)
    return F.interpolate(t, size=f.shape[-3:])


def latent_size_spatial_norms(module: torch.nn.Module) -> int:
    """Every `CogVideoXSpatialNorm3D` in `module` made a `LatentSizeSpatialNorm3D` (same weights); returns how many."""
    norms = [m for m in module.modules() if type(m) is CogVideoXSpatialNorm3D]
    for m in norms:
        m.__class__ = LatentSizeSpatialNorm3D
    return len(norms)


def channels_last_convolutions(module: torch.nn.Module) -> int:
    """Every 5-D weight in `module` (the 3-D convolutions') in channels-last-3d memory; returns how many."""
    weights = [p for p in module.parameters() if p.dim() == 5]
    for p in weights:
        p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return len(weights)


def _contiguous(outputs):
    """A module's outputs (tensors, dicts of conv caches, None) with every tensor in contiguous memory."""
    if isinstance(outputs, torch.Tensor):
        return outputs.contiguous()
    if isinstance(outputs, dict):
        return {k: _contiguous(v) for k, v in outputs.items()}
    if isinstance(outputs, tuple):
        return tuple(_contiguous(v) for v in outputs)
    return outputs


# The compiled units' classes with contiguous outputs (module docstring). Each calls its base's forward by name, not
# through super(): a precompiled function is the class's forward, loaded with this module's globals.
class ContiguousResnetBlock3D(CogVideoXResnetBlock3D):
    def forward(self, inputs, temb=None, zq=None, conv_cache=None):
        return _contiguous(CogVideoXResnetBlock3D.forward(self, inputs, temb, zq, conv_cache))


class ContiguousEncoder3D(CogVideoXEncoder3D):
    def forward(self, sample, temb=None, conv_cache=None):
        return _contiguous(CogVideoXEncoder3D.forward(self, sample, temb, conv_cache))


class ContiguousDecoder3D(CogVideoXDecoder3D):
    def forward(self, sample, temb=None, conv_cache=None):
        return _contiguous(CogVideoXDecoder3D.forward(self, sample, temb, conv_cache))


_CONTIGUOUS = {CogVideoXResnetBlock3D: ContiguousResnetBlock3D, CogVideoXEncoder3D: ContiguousEncoder3D,
               CogVideoXDecoder3D: ContiguousDecoder3D}


def rewrite_for_compilation(module: torch.nn.Module) -> None:
    """Both rewrites, on a module about to be compiled (a VAE part, or one of its resnet blocks), which then hands
    back contiguous outputs. TypeError for a module of another class: its outputs' layout would leak out."""
    contiguous = _CONTIGUOUS.get(type(module))
    if contiguous is None:
        raise TypeError("vae_rewrites: no contiguous-output class for %s" % type(module).__name__)
    latent_size_spatial_norms(module)
    channels_last_convolutions(module)
    module.__class__ = contiguous
