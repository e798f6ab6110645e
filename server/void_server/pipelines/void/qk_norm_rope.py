"""CogVideoX's per-head query/key LayerNorm and its rotary embedding as one pass over q and k.

Compiled, a block runs these as three kernels: the query's norm, the key's norm (each reading and writing its
tensor), then RoPE on both (reading and writing both again), because RoPE pairs neighbouring elements of a norm's
output, which inductor cannot fuse into the norm's reduction. That is 200 us a layer on an H100 at batch 1
(docs/performance.md, "Eighteenth session"); one read and one write of q and k is ~95 us. Here a Triton kernel
does both in registers, as the torch custom op `void::qk_norm_rope` so compiled blocks call it whole.

Same math as the unfused path: the norm in float32, rounded to the tensor's dtype (what `nn.LayerNorm` hands
RoPE), then RoPE in float32 on the video tokens (the text tokens, first in the sequence, have no position),
rounded once. Off CUDA, or without Triton, the op runs `reference` (that unfused math).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import triton_support

_op = None  # the registered custom op
ROWS = 64  # rows (one token's one head each) a program: 2 x 58 us a layer at VOID's size on an H100


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """CogVideoX's rotary embedding (interleaved pairs, computed in float32), out of place."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs.unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(-2)
    return (x.float() * cos + rotated * sin).to(x.dtype)


def reference(x: torch.Tensor, heads: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
              cos: torch.Tensor, sin: torch.Tensor, text_len: int) -> torch.Tensor:
    """(B, S, heads * d) projection -> (B, S, heads, d): LayerNorm over each head's d values, then RoPE on the
    tokens from `text_len` on (`cos`, `sin`: (S - text_len, d) float32)."""
    b, s, _ = x.shape
    y = F.layer_norm(x.view(b, s, heads, -1), (x.shape[-1] // heads,), weight, bias, eps)
    video = rope(y[:, text_len:], cos[:, None, :], sin[:, None, :])
    return torch.cat([y[:, :text_len], video], dim=1)


@functools.lru_cache(maxsize=None)  # jitted once, on first use: Triton is imported only then
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def qk_norm_rope_kernel(x_ptr, out_ptr, w_ptr, b_ptr, cos_ptr, sin_ptr, rows, heads, tokens, text_len, eps,
                            HEAD_DIM: tl.constexpr, ROWS: tl.constexpr):
        # One row is one token's one head: HEAD_DIM contiguous values (a (B, S, heads, d) contiguous tensor).
        r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        live = r < rows
        d = tl.arange(0, HEAD_DIM)
        offs = r.to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
        x = tl.load(x_ptr + offs, mask=live[:, None], other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / HEAD_DIM
        xc = x - mean[:, None]
        var = tl.sum(xc * xc, axis=1) / HEAD_DIM
        rstd = 1.0 / tl.sqrt(var + eps)
        w = tl.load(w_ptr + d).to(tl.float32)
        b = tl.load(b_ptr + d).to(tl.float32)
        y = xc * rstd[:, None] * w[None, :] + b[None, :]
        y = y.to(out_ptr.dtype.element_ty).to(tl.float32)  # the norm's output as the unfused path stores it
        video = (r // heads) % tokens - text_len
        is_video = live & (video >= 0)
        table = tl.where(is_video, video, 0).to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
        c = tl.load(cos_ptr + table, mask=is_video[:, None], other=1.0)
        s = tl.load(sin_ptr + table, mask=is_video[:, None], other=0.0)
        real, imag = tl.split(tl.reshape(y, (ROWS, HEAD_DIM // 2, 2)))
        rotated = tl.reshape(tl.join(-imag, real), (ROWS, HEAD_DIM))
        out = y * c + rotated * s
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=live[:, None])

    return qk_norm_rope_kernel


def triton_qk_norm_rope(x: torch.Tensor, heads: int, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        cos: torch.Tensor, sin: torch.Tensor, text_len: int) -> torch.Tensor:
    """`reference` by the Triton kernel (any device Triton runs on, the CPU in its interpreter)."""
    b, s, width = x.shape
    d = width // heads
    if d & (d - 1) or width != heads * d:
        raise ValueError("head width %d is not a power of two" % d)
    x = x.contiguous()
    out = torch.empty((b, s, heads, d), device=x.device, dtype=x.dtype)
    rows = b * s * heads
    cos = cos.to(x.device, torch.float32).contiguous()
    sin = sin.to(x.device, torch.float32).contiguous()
    grid = ((rows + ROWS - 1) // ROWS,)
    _kernel()[grid](x, out, weight.contiguous(), bias.contiguous(), cos, sin, rows, heads, s, text_len, eps,
                    HEAD_DIM=d, ROWS=ROWS)
    return out


def qk_norm_rope_op():
    """Registers (once) and returns the custom op `void::qk_norm_rope`(q, k, heads, norm weights and biases, eps,
    cos, sin, text_len) -> (q, k) as (B, S, heads, d): `reference` for each, by Triton on CUDA."""
    global _op
    if _op is None:
        @torch.library.custom_op("void::qk_norm_rope", mutates_args=())
        def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, heads: int, wq: torch.Tensor, bq: torch.Tensor,
                         wk: torch.Tensor, bk: torch.Tensor, eps: float, cos: torch.Tensor, sin: torch.Tensor,
                         text_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
            run = triton_qk_norm_rope if triton_support.usable(q) else reference
            return (run(q, heads, wq, bq, eps, cos, sin, text_len), run(k, heads, wk, bk, eps, cos, sin, text_len))

        @qk_norm_rope.register_fake
        def _(q, k, heads, wq, bq, wk, bk, eps, cos, sin, text_len):
            b, s, width = q.shape
            shape = (b, s, heads, width // heads)
            return q.new_empty(shape), k.new_empty(shape)

        _op = qk_norm_rope
    return _op


def fusable(norm_q: Optional[torch.nn.Module], norm_k: Optional[torch.nn.Module]) -> bool:
    """Whether an attention's q/k norms are what the op computes: affine `nn.LayerNorm`s over one head."""
    return all(isinstance(n, torch.nn.LayerNorm) and n.weight is not None and n.bias is not None
               and len(n.normalized_shape) == 1 and n.eps == norm_q.eps for n in (norm_q, norm_k))


def applies(attn, rotary: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether `apply` computes this self-attention's q/k norms and RoPE (diffusers' `Attention` of a CogVideoX
    block: affine LayerNorms, RoPE on q and k)."""
    return rotary is not None and not attn.is_cross_attention and fusable(attn.norm_q, attn.norm_k)


def apply(attn, q: torch.Tensor, k: torch.Tensor, heads: int, text_len: int,
          rotary: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, S, heads * d) query and key projections -> normed and rotated q, k as (B, heads, S, d) views of
    (B, S, heads, d) tensors (FlashAttention-4's own layout), by the op (`qk_norm_rope_op` must have registered it
    outside any compiled region)."""
    cos, sin = (t.to(q.device) for t in rotary)
    q, k = torch.ops.void.qk_norm_rope(q, k, heads, attn.norm_q.weight, attn.norm_q.bias, attn.norm_k.weight,
                                       attn.norm_k.bias, attn.norm_q.eps, cos, sin, text_len)
    return q.transpose(1, 2), k.transpose(1, 2)
