"""Variants of FlashAttention-4's Hopper forward softmax, for bench_fusions.py's `--exp-splits` (an experiment, not
used by the server).

At head dim 64 a tile's exponentials (one per score, on the SM's special-function unit, 16 a clock) take about as
long as its two matrix products on the tensor cores by arithmetic, and the kernel runs at ~60% of the matmul peak on
an H100. FlashAttention-4's Blackwell forward moves a share of its exponentials to the FMA units as a degree-3
polynomial (`flash_attn.cute.utils.ex2_emulation`); its Hopper forward does not. `Variant` patches the Hopper
forward's `Softmax` (flash_attn.cute.flash_fwd_sm90) with:
- the same split (`E/P[/D]`: E of every P columns' exp2 by a polynomial of degree D);
- `skip`: a warp whose rows all kept their running max skips the output's rescaling (each scale exactly 1.0);
- `sumN`: the row sum as N interleaved partial sums instead of one dependent chain.
Measured on H100s (seventeenth session, docs/performance.md): every split is slower (1/16 of the columns -4%,
1/4 -15%), `skip` and `sumN` change nothing beyond run-to-run spread. The SASS shows why: the loop issues ~418
instructions a warp per key block, and the time follows the instruction count, not the special-function unit's
load; an emulated exponential costs nine instructions for the one it saves.

The polynomial's relative error (~9e-5 at degree 3) is a twentieth of a bfloat16 rounding step: every variant is
as close to float32 attention as flash-attn-4's own (the bench prints both). Compiled kernels are cached by
flash-attn-4 under a fingerprint of its own sources, which this patch does not change, so a patched forward gets
a cache of its own, named by the variant and by this file's contents.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple


class Variant(NamedTuple):
    """How the Hopper forward's softmax differs from flash-attn-4's: of every `period` columns of a score row, the
    first `emulated` get their exp2 by a polynomial of `degree`; `skip_unit_rescale`: a warp whose rows all kept
    their running max skips the output's rescaling (exactly 1.0 each)."""
    period: int = 1
    emulated: int = 0
    degree: int = 3
    skip_unit_rescale: bool = False
    sum_chains: int = 1  # the row sum as this many interleaved partial sums (flash-attn-4's Hopper path: one chain)


DEGREES = (3, 4, 5)  # degree 2's error (1.7e-3) is a whole bfloat16 rounding step: not offered

_installed: Optional[Variant] = None
_original: Optional[Tuple[Any, Any]] = None  # flash_fwd_sm90.Softmax and the forward's compile cache, to restore


def check_variant(variant: Variant) -> Variant:
    if variant.period < 1 or not 0 <= variant.emulated <= variant.period:
        raise ValueError("%s: want 0 <= emulated <= period, period >= 1" % (variant,))
    if variant.sum_chains not in (1, 2, 4, 8):
        raise ValueError("%s: sum_chains must be 1, 2, 4 or 8" % (variant,))
    if variant.degree not in DEGREES:
        raise ValueError("%s: polynomial degree must be one of %s" % (variant, DEGREES))
    return variant


def parse_variant(text: str) -> Optional[Variant]:
    """'off' -> None (flash-attn-4 as it is); 'E/P' or 'E/P/D' (E of every P columns' exp2 by a polynomial of
    degree D, default 3), 'skip' (the unit rescale skipped), 'sumN' (the row sum in N partial sums), joined by '+'
    -> a variant."""
    fields: Dict[str, Any] = {}
    for part in text.strip().lower().split("+"):
        part = part.strip()
        if part in ("", "off", "none"):
            continue
        if part == "skip":
            fields["skip_unit_rescale"] = True
            continue
        if part.startswith("sum") and part[3:].isdigit():
            fields["sum_chains"] = int(part[3:])
            continue
        nums = part.split("/")
        if len(nums) not in (2, 3) or not all(n.isdigit() for n in nums):
            raise ValueError("FA4 softmax variant %r: want off, skip, sumN, E/P or E/P/D, joined by +" % text)
        fields.update(emulated=int(nums[0]), period=int(nums[1]), degree=int(nums[2]) if len(nums) == 3 else 3)
    variant = check_variant(Variant(**fields))
    return None if variant == Variant() else variant


def _source_tag() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def _softmax_class(variant: Variant) -> type:
    """A subclass of flash-attn-4's `Softmax` (the one its SM80/SM90 forwards use) whose online step is the
    original's with the chosen columns' exp2 by polynomial. Built on demand: it needs the CuTe DSL."""
    import cutlass
    import cutlass.cute as cute
    from cutlass import Float32
    from quack import layout_utils
    import flash_attn.cute.utils as utils
    from flash_attn.cute.softmax import Softmax

    period, emulated, degree, skip_unit_rescale, sum_chains = variant

    def row_sum_of(row: cute.Tensor, init_val):
        # plain Python, unrolled at trace time (not @cute.jit: its loops would be staged)
        if sum_chains == 1:
            return utils.fadd_reduce(row.load(), init_val=init_val, arch=80)
        parts = [row[i] for i in range(sum_chains)]
        for c in range(sum_chains, cute.size(row)):
            parts[c % sum_chains] = parts[c % sum_chains] + row[c]
        width = sum_chains
        while width > 1:
            width //= 2
            for i in range(width):
                parts[i] = parts[i] + parts[i + width]
        return parts[0] if init_val is None else parts[0] + init_val

    @dataclass
    class VariantSoftmax(Softmax):
        @cute.jit
        def rescale_O(self, acc_O: cute.Tensor, row_scale: cute.Tensor) -> None:
            # Softmax.rescale_O, skipped by a warp whose rows all kept their max (each scale exactly 1.0, so the
            # products would change nothing): after the first key blocks most rows' running max stands still.
            acc_O_mn = layout_utils.reshape_acc_to_mn(acc_O)
            if cutlass.const_expr(not skip_unit_rescale):
                for r in cutlass.range(cute.size(row_scale), unroll_full=True):
                    acc_O_mn[r, None].store(acc_O_mn[r, None].load() * row_scale[r])
            else:
                changed = row_scale[0] != 1.0
                for r in cutlass.range_constexpr(1, cute.size(row_scale)):
                    changed = changed | (row_scale[r] != 1.0)
                if cute.arch.vote_any_sync(changed):
                    for r in cutlass.range(cute.size(row_scale), unroll_full=True):
                        acc_O_mn[r, None].store(acc_O_mn[r, None].load() * row_scale[r])

        @staticmethod
        def create(scale_log2, num_rows: cutlass.Constexpr[int], arch: cutlass.Constexpr[int] = 80,
                   softmax_scale=None):
            row_max = cute.make_rmem_tensor(num_rows, Float32)
            row_sum = cute.make_rmem_tensor(num_rows, Float32)
            return VariantSoftmax(scale_log2, num_rows, row_max, row_sum, arch, softmax_scale)

        @cute.jit
        def online_softmax(self, acc_S: cute.Tensor, is_first: cutlass.Constexpr[bool] = False,
                           check_inf: cutlass.Constexpr[bool] = True) -> cute.Tensor:
            # Softmax.online_softmax, step for step, but for how each exponential is computed.
            acc_S_mn = layout_utils.reshape_acc_to_mn(acc_S)
            row_scale = cute.make_fragment_like(self.row_max, Float32)
            row_max = self.row_max
            row_sum = self.row_sum
            scale_log2 = self.scale_log2
            arch = self.arch
            for r in cutlass.range(cute.size(row_max), unroll_full=True):
                acc_S_row = acc_S_mn[r, None].load()
                row_max_cur = utils.fmax_reduce(
                    acc_S_row, init_val=row_max[r] if cutlass.const_expr(not is_first) else None, arch=arch)
                row_max_cur = cute.arch.warp_reduction_max(row_max_cur, threads_in_group=4)
                row_max_prev = row_max[r]
                row_max[r] = row_max_cur
                if cutlass.const_expr(check_inf):
                    row_max_cur = 0.0 if row_max_cur == -Float32.inf else row_max_cur
                row_max_cur_scaled = row_max_cur * scale_log2
                acc_S_mn[r, None].store(acc_S_row * scale_log2 - row_max_cur_scaled)
                for c in cutlass.range_constexpr(cute.size(acc_S_mn, mode=[1])):
                    if cutlass.const_expr(c % period < emulated):
                        acc_S_mn[r, c] = utils.ex2_emulation(acc_S_mn[r, c], poly_degree=degree)
                    else:
                        acc_S_mn[r, c] = cute.math.exp2(acc_S_mn[r, c], fastmath=True)
                if cutlass.const_expr(is_first):
                    acc_S_row_sum = row_sum_of(acc_S_mn[r, None], None)
                    row_scale[r] = 1.0
                else:
                    row_scale[r] = cute.math.exp2((row_max_prev - row_max_cur) * scale_log2, fastmath=True)
                    acc_S_row_sum = row_sum_of(acc_S_mn[r, None], row_sum[r] * row_scale[r])
                row_sum[r] = acc_S_row_sum
            return row_scale

    VariantSoftmax.__qualname__ = VariantSoftmax.__name__ = "VariantSoftmax_%d_%d_%d_%d_%d" % variant
    return VariantSoftmax


def install(variant: Optional[Variant]) -> Optional[Variant]:
    """Make this process's FlashAttention-4 Hopper forward use `variant` (None: flash-attn-4's own). Takes effect for
    kernels compiled after it (flash-attn-4 compiles per settings at first call), so call it before attention runs.
    Returns the variant now installed."""
    global _installed, _original
    from flash_attn.cute import cache_utils, flash_fwd_sm90, interface

    variant = check_variant(variant) if variant is not None else None
    if variant == _installed:
        return _installed
    if _original is None:
        _original = (flash_fwd_sm90.Softmax, interface._flash_attn_fwd.compile_cache)
    if variant is None:
        flash_fwd_sm90.Softmax, interface._flash_attn_fwd.compile_cache = _original
    else:
        flash_fwd_sm90.Softmax = _softmax_class(variant)
        # a cache of its own: flash-attn-4's keys name neither the patch nor its variant
        interface._flash_attn_fwd.compile_cache = cache_utils.get_jit_cache(
            "fwd-softmax-%d-%d-%d-%d-%d-%s" % (variant + (_source_tag(),)))
    _installed = variant
    return _installed


def installed() -> Optional[Variant]:
    return _installed
