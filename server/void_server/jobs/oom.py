"""GPU out of memory: which memory mode to fall back to, and how to recognise the error.

gpu (and fp8) -> model_offload -> sequential_offload: each step keeps less on the GPU and runs slower. A job that
runs out of memory is retried in the next mode from its last finished stage (the checkpoints stay); after
sequential_offload there is nothing lower and the job fails saying so.
"""
from __future__ import annotations

import sys
from typing import Any, Optional

FALLBACK = {"gpu": "model_offload", "fp8": "model_offload", "model_offload": "sequential_offload"}


def is_out_of_memory(e: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a pipeline that can run out of GPU memory has imported it
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def current_mode(pipeline: Any, configured: str) -> str:
    """The mode the loaded pipeline runs in ('auto' resolved by the pipeline when it says so)."""
    described = {}
    try:
        described = pipeline.describe() or {}
    except Exception:  # describe() is for health; a failing one must not hide the OOM
        pass
    mode = described.get("memory_mode")
    if isinstance(mode, str) and (mode in FALLBACK or mode == "sequential_offload"):
        return mode
    return "gpu" if configured == "auto" else configured


def next_mode(mode: str) -> Optional[str]:
    return FALLBACK.get(mode)
