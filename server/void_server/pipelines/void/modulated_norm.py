"""A CogVideoX block's first norm (AdaLN-zero: LayerNorm, then scale and shift from the timestep) over the text and
the video tokens, written straight into the attention's joint (text + video) input, as one Triton kernel.

Compiled, inductor makes this a looped reduction that reads each 3072-wide row twice: 118 µs a block at batch 1
and 257 µs at batch 2 on an H100, where one read and one write of the rows is ~45 / ~90 µs (docs/performance.md,
"Eighteenth session"). Here each row sits in registers once. **An experiment, off**: on an H100 the block was
slower with it (7.26 / 14.61 ms at batch 1 / 2 against 7.09-7.18 / 14.34-14.46 ms, "Nineteenth session"), so the
server does not use it; `bench/bench_block.py --variants qk,qk+norm1` measures it, `fuse_norm1(block)` swaps it in.

Same math as the compiled block: the norm, scale and shift in float32, rounded once (diffusers' eager block rounds
after the norm and after each step; inductor does not either). Off CUDA, or without Triton, the op runs `reference`.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock

from . import triton_support

_op = None  # the registered custom op


def reference(hidden: torch.Tensor, text: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
              modulation: torch.Tensor) -> torch.Tensor:
    """(B, S, D) video tokens, (B, L, D) text tokens, (B, 6 D) modulation (shift, scale, gate, text shift, text
    scale, text gate: `CogVideoXLayerNormZero.linear`'s output) -> the (B, L + S, D) joint input, text first."""
    shift, scale, _, text_shift, text_scale, _ = modulation.float().chunk(6, dim=1)

    def norm(x: torch.Tensor, sh: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps)
        return y * (1 + sc)[:, None, :] + sh[:, None, :]

    return torch.cat([norm(text, text_shift, text_scale), norm(hidden, shift, scale)], dim=1).to(hidden.dtype)


@functools.lru_cache(maxsize=None)  # jitted once, on first use: Triton is imported only then
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def modulated_norm_kernel(hidden_ptr, text_ptr, out_ptr, w_ptr, b_ptr, mod_ptr, text_len, video_len, dim, eps,
                              BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # of the (B, L + S) joint rows
        tokens = text_len + video_len
        batch = row // tokens
        t = row % tokens
        is_text = t < text_len
        src = tl.where(is_text, text_ptr + (batch * text_len + t) * dim,
                       hidden_ptr + (batch * video_len + (t - text_len)) * dim)
        cols = tl.arange(0, BLOCK)
        live = cols < dim
        x = tl.load(src + cols, mask=live, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=0) / dim
        xc = tl.where(live, x - mean, 0.0)
        var = tl.sum(xc * xc, axis=0) / dim
        y = xc / tl.sqrt(var + eps)
        y = y * tl.load(w_ptr + cols, mask=live, other=0.0).to(tl.float32) \
            + tl.load(b_ptr + cols, mask=live, other=0.0).to(tl.float32)
        # shift, scale: chunks 0, 1 of the row's batch for video tokens, 3, 4 for text tokens
        first = tl.where(is_text, 3, 0)
        mod = mod_ptr + batch * 6 * dim
        shift = tl.load(mod + first * dim + cols, mask=live, other=0.0).to(tl.float32)
        scale = tl.load(mod + (first + 1) * dim + cols, mask=live, other=0.0).to(tl.float32)
        out = y * (1.0 + scale) + shift
        tl.store(out_ptr + row * dim + cols, out.to(out_ptr.dtype.element_ty), mask=live)

    return modulated_norm_kernel


def triton_modulated_norm(hidden: torch.Tensor, text: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          eps: float, modulation: torch.Tensor) -> torch.Tensor:
    """`reference` by the Triton kernel (any device Triton runs on, the CPU in its interpreter)."""
    b, s, dim = hidden.shape
    text_len = text.shape[1]
    out = torch.empty((b, text_len + s, dim), device=hidden.device, dtype=hidden.dtype)
    block = 1 << (dim - 1).bit_length()
    _kernel()[(b * (text_len + s),)](hidden.contiguous(), text.contiguous(), out, weight.contiguous(),
                                     bias.contiguous(), modulation.contiguous(), text_len, s, dim, eps,
                                     BLOCK=block, num_warps=8 if block >= 2048 else 4)
    return out


def modulated_norm_op():
    """Registers (once) and returns the custom op `void::modulated_norm`(hidden, text, norm weight, norm bias, eps,
    modulation) -> the joint (B, L + S, D) input: `reference`, by Triton on CUDA."""
    global _op
    if _op is None:
        @torch.library.custom_op("void::modulated_norm", mutates_args=())
        def modulated_norm(hidden: torch.Tensor, text: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           eps: float, modulation: torch.Tensor) -> torch.Tensor:
            run = triton_modulated_norm if triton_support.usable(hidden) else reference
            return run(hidden, text, weight, bias, eps, modulation)

        @modulated_norm.register_fake
        def _(hidden, text, weight, bias, eps, modulation):
            b, s, dim = hidden.shape
            return hidden.new_empty((b, text.shape[1] + s, dim))

        _op = modulated_norm
    return _op


class FusedNorm1Block(CogVideoXBlock):
    """diffusers' `CogVideoXBlock` with its first norm by `void::modulated_norm` into the attention's joint input
    (the attention's processor must take it: `FastCogVideoXAttnProcessor.attend_joint`). A class of its own module,
    importable by name, so a block turned into one can be precompiled (as `direct_attention.DirectAttention`)."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                attention_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if attention_kwargs:
            raise NotImplementedError("the fused block passes no attention kwargs (got %s)" % sorted(attention_kwargs))
        text_len, dim = encoder_hidden_states.size(1), hidden_states.size(2)
        modulation = self.norm1.linear(self.norm1.silu(temb))
        gate_msa, enc_gate_msa = modulation[:, None, 2 * dim:3 * dim], modulation[:, None, 5 * dim:]
        x = torch.ops.void.modulated_norm(hidden_states, encoder_hidden_states, self.norm1.norm.weight,
                                          self.norm1.norm.bias, self.norm1.norm.eps, modulation)
        attn_hidden_states, attn_encoder_hidden_states = self.attn1.processor.attend_joint(
            self.attn1, x, text_len, image_rotary_emb)
        # the rest as diffusers' CogVideoXBlock.forward
        hidden_states = hidden_states + gate_msa * attn_hidden_states
        encoder_hidden_states = encoder_hidden_states + enc_gate_msa * attn_encoder_hidden_states
        norm_hidden_states, norm_encoder_hidden_states, gate_ff, enc_gate_ff = self.norm2(
            hidden_states, encoder_hidden_states, temb)
        ff_output = self.ff(torch.cat([norm_encoder_hidden_states, norm_hidden_states], dim=1))
        hidden_states = hidden_states + gate_ff * ff_output[:, text_len:]
        encoder_hidden_states = encoder_hidden_states + enc_gate_ff * ff_output[:, :text_len]
        return hidden_states, encoder_hidden_states


def fuse_norm1(block: torch.nn.Module) -> bool:
    """Turn a diffusers `CogVideoXBlock` whose attention runs our processor into a `FusedNorm1Block` in place (same
    weights); False, changing nothing, for any other block or a norm the op does not compute."""
    norm = getattr(getattr(block, "norm1", None), "norm", None)
    if (type(block) is not CogVideoXBlock or not isinstance(norm, torch.nn.LayerNorm) or norm.weight is None
            or norm.bias is None or not hasattr(block.attn1.processor, "attend_joint")):
        return False
    modulated_norm_op()  # registered now: dynamo cannot trace an op's registration
    block.__class__ = FusedNorm1Block
    return True
