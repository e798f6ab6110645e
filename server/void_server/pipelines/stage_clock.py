"""Wall-clock time per pipeline stage, for RunSummary.timings and the benchmarks.

GPU work is asynchronous: without a synchronise at the end of a stage its kernels would be billed to whichever
later stage first waits on them. One synchronise per stage costs nothing next to the stages themselves.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator, Optional

import torch


def top_level(timings: Dict[str, float]) -> Dict[str, float]:
    """The stages of a timings table without their sub-stages (`pass1`, not `pass1.denoise`, which it includes)."""
    return {k: v for k, v in timings.items() if "." not in k}


class StageClock:
    def __init__(self, timings: Optional[Dict[str, float]] = None, prefix: str = "") -> None:
        self.timings: Dict[str, float] = timings if timings is not None else {}
        self.prefix = prefix

    def child(self, prefix: str) -> "StageClock":
        """A clock writing into the same table under `prefix.` (e.g. pass1.denoise)."""
        return StageClock(self.timings, self.prefix + prefix + ".")

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
            key = self.prefix + stage
            self.timings[key] = self.timings.get(key, 0.0) + time.monotonic() - start
