"""Per-row float8 quantisation of a linear's input (lossy `fp8_matmul` option, fp8_linear.py), and the feed-forward's
first bias and tanh GELU with the quantisation of their output as one pass.

The feed-forward's hidden state is 4d wide (12,288 values a token). Compiled, GELU and its quantisation for the
second linear were one inductor reduction kernel that looped over each row twice (the absolute maximum, then the
scaled values), recomputing GELU: 430 us a block on an H100 at batch 1 where reading and writing the tensor once
takes ~140 us (docs/performance.md, "Nineteenth session"). Here a Triton kernel holds a row in registers: one read
of the GEMM's output, one write of float8 values and the row's scale. The torch custom op
`void::gelu_quantise_rows` runs it on CUDA and `gelu_quantise_reference` elsewhere (the same math in torch).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import triton_support

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_op = None  # the registered custom op


def quantise_rows(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(R, K) -> (float8 (R, K), float32 scales (R, 1)) with x ~= q * scale; each row's absmax maps to 448."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def gelu_quantise_reference(h: torch.Tensor, bias: Optional[torch.Tensor] = None
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """`quantise_rows` of tanh-GELU(h + bias), the add and GELU in float32 (not rounded to h's dtype in between)."""
    x = h.float() if bias is None else h.float() + bias.float()
    return quantise_rows(F.gelu(x, approximate="tanh"))


@functools.lru_cache(maxsize=None)  # jitted once, on first use: Triton is imported only then
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def gelu_quantise_kernel(h_ptr, bias_ptr, q_ptr, scale_ptr, width, FP8_MAX: tl.constexpr,
                             HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        live = cols < width
        x = tl.load(h_ptr + row * width + cols, mask=live, other=0.0).to(tl.float32)
        if HAS_BIAS:  # the previous linear's bias, left out of its GEMM (whose epilogue it would slow)
            x += tl.load(bias_ptr + cols, mask=live, other=0.0).to(tl.float32)
        # 0.5 x (1 + tanh(u)) = x * sigmoid(2u): tanh's form without a tanh instruction (GELU(0) = 0 for the padding)
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        g = x / (1.0 + tl.exp(-2.0 * u))
        scale = tl.maximum(tl.max(tl.abs(g), axis=0), 1e-12) / FP8_MAX
        q = tl.minimum(tl.maximum(g / scale, -FP8_MAX), FP8_MAX)
        tl.store(q_ptr + row * width + cols, q.to(q_ptr.dtype.element_ty), mask=live)
        tl.store(scale_ptr + row, scale)

    return gelu_quantise_kernel


def triton_gelu_quantise(h: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         out_dtype: torch.dtype = FP8) -> Tuple[torch.Tensor, torch.Tensor]:
    """`gelu_quantise_reference` by the Triton kernel: one program a row, the row in registers. `out_dtype`
    float32 keeps the scaled values before their float8 cast (tests: Triton's CPU interpreter casts to float8
    without carrying a rounding into the exponent, 1.97 -> 1.0)."""
    import triton

    rows, width = h.shape
    h = h.contiguous()
    q = torch.empty((rows, width), device=h.device, dtype=out_dtype)
    scale = torch.empty((rows, 1), device=h.device, dtype=torch.float32)
    block = triton.next_power_of_2(width)
    warps = max(4, min(16, block // 1024))  # 12,288 -> 16,384 lanes over 16 warps: 32 values a thread
    if bias is not None:
        bias = bias.contiguous()
    _kernel()[(rows,)](h, h if bias is None else bias, q, scale, width, FP8_MAX=FP8_MAX, HAS_BIAS=bias is not None,
                       BLOCK=block, num_warps=warps)
    return q, scale


def gelu_quantise_op():
    """Registers (once) and returns `void::gelu_quantise_rows`(h (R, K), bias (K,) or None) -> (float8 (R, K),
    float32 scales (R, 1))."""
    global _op
    if _op is None:
        @torch.library.custom_op("void::gelu_quantise_rows", mutates_args=())
        def gelu_quantise_rows(h: torch.Tensor, bias: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
            run = triton_gelu_quantise if triton_support.usable(h) else gelu_quantise_reference
            return run(h, bias)

        @gelu_quantise_rows.register_fake
        def _(h, bias):
            return h.new_empty(h.shape, dtype=FP8), h.new_empty((h.shape[0], 1), dtype=torch.float32)

        _op = gelu_quantise_rows
    return _op
