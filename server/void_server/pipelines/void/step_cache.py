"""First-block step cache (lossy, off by default): skip the transformer's other blocks at a step where its first
block barely changed since the last step that ran them all.

Per call, block 0 runs; its video-token residual r = out - in is compared with the r_prev of the last fully
computed call of the same window: change = mean|r - r_prev| / mean|r_prev|. Under the threshold the remaining blocks
are skipped and what they added last time (their cached residuals, video and text tokens) is added to block 0's
output; otherwise they run and the cache is refreshed. This is diffusers' FirstBlockCache (ParaAttention's idea).

Why our own: diffusers' hooks replace each block's `forward`, which our per-block `torch.compile(fullgraph=True)`
(accel.py) would trace, and its decision (`.item()` under `torch.compiler.disable`) is a graph break there. Here
the decision runs in Python between compiled block calls, so the compiled blocks are untouched. Each window has its
own state (`context(key)`), and a cache lives for one `denoise` call, i.e. one pass.

Memory: per window, three residual tensors of one call's hidden states (about 0.4 GB for an 85-frame window with
the CFG pair in bf16), so it grows with the number of windows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Callable, Dict, Hashable, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

# Sums a small tensor over the ranks that must take the same decision (the guidance split's two halves).
Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class CacheStats:
    threshold: float
    hits: int = 0  # calls that skipped the remaining blocks
    calls: int = 0  # transformer calls (one per window per step)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.calls if self.calls else 0.0

    def note(self, stage: str) -> str:
        return ("%s: step cache (threshold %g) skipped the transformer's later blocks in %d of %d window steps (%.0f%%)"
                % (stage, self.threshold, self.hits, self.calls, 100.0 * self.hit_rate))


_NOTE = re.compile(r"step cache \(threshold [^)]*\) skipped the transformer's later blocks "
                   r"in (\d+) of (\d+) window steps")


def hit_rate_from_notes(notes: Sequence[str]) -> Optional[float]:
    """The step cache's hits over a job's passes, read back from its notes (`CacheStats.note`); None: no cache ran."""
    counts = [tuple(map(int, m.groups())) for m in (_NOTE.search(n) for n in notes) if m]
    calls = sum(c for _, c in counts)
    return sum(h for h, _ in counts) / calls if calls else None


@dataclasses.dataclass
class _State:
    head_residual: Optional[torch.Tensor] = None  # block 0's video residual at the last fully computed call
    tail_hidden: Optional[torch.Tensor] = None  # what blocks 1.. added to the video tokens then
    tail_text: Optional[torch.Tensor] = None  # ... and to the text tokens


class FirstBlockCache:
    """Per-window first-block caches of one denoising pass; `run` replaces the block loop."""

    def __init__(self, threshold: float, reduce: Optional[Reduce] = None, stats: Optional[CacheStats] = None) -> None:
        threshold = float(threshold)
        if not threshold >= 0.0:  # also refuses NaN
            raise ValueError("the step-cache threshold must be >= 0 (0 = off), got %r" % threshold)
        self.threshold = threshold
        self.stats = stats if stats is not None else CacheStats(threshold)
        self._reduce = reduce
        self._states: Dict[Hashable, _State] = {}
        self._key: Optional[Hashable] = None

    @contextlib.contextmanager
    def context(self, key: Hashable) -> Iterator[None]:
        """Calls inside use (and refresh) the cache of `key`, e.g. the window index."""
        previous, self._key = self._key, key
        try:
            yield
        finally:
            self._key = previous

    def run(self, blocks: Sequence[nn.Module], hidden: torch.Tensor, text: torch.Tensor,
            **kwargs: object) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._key is None:
            raise RuntimeError("the step cache was called outside a context (cache.context(window) is missing)")
        state = self._states.setdefault(self._key, _State())
        head_hidden, head_text = blocks[0](hidden_states=hidden, encoder_hidden_states=text, **kwargs)
        residual = head_hidden - hidden
        self.stats.calls += 1
        if self._reusable(state, residual):
            self.stats.hits += 1
            return head_hidden + state.tail_hidden, head_text + state.tail_text
        h, t = head_hidden, head_text
        for block in blocks[1:]:
            h, t = block(hidden_states=h, encoder_hidden_states=t, **kwargs)
        state.head_residual, state.tail_hidden, state.tail_text = residual, h - head_hidden, t - head_text
        return h, t

    def _reusable(self, state: _State, residual: torch.Tensor) -> bool:
        prev = state.head_residual
        if self.threshold <= 0.0 or prev is None or prev.shape != residual.shape:
            return False
        sums = torch.stack([(residual - prev).abs().float().sum(), prev.abs().float().sum()])
        if self._reduce is not None:
            sums = self._reduce(sums)
        change, scale = sums.tolist()  # one device sync per call: the decision is made here, outside the graphs
        return scale > 0.0 and change / scale < self.threshold


class _CachedBlocks(nn.Module):
    """Stands in for the whole block list inside diffusers' loop, which then makes exactly one call."""

    def __init__(self, blocks: nn.ModuleList, cache: FirstBlockCache) -> None:
        super().__init__()
        self.blocks = blocks
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                attention_kwargs: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.cache.run(self.blocks, hidden_states, encoder_hidden_states, temb=temb,
                              image_rotary_emb=image_rotary_emb, attention_kwargs=attention_kwargs)


@contextlib.contextmanager
def attach(transformer: nn.Module, cache: FirstBlockCache) -> Iterator[FirstBlockCache]:
    """`transformer` runs its blocks through `cache` inside the `with` (its block list is put back afterwards).
    The blocks themselves (compiled or not) are called unchanged."""
    blocks = transformer.transformer_blocks
    if len(blocks) < 2:
        raise ValueError("the step cache needs a transformer of at least two blocks")
    transformer.transformer_blocks = nn.ModuleList([_CachedBlocks(blocks, cache)])
    try:
        yield cache
    finally:
        transformer.transformer_blocks = blocks
