"""Per-frame work on a thread pool, results in frame order, a bounded number in flight; and one call on a thread
of its own (`on_thread`).

The plate-resolution merge is numpy/OpenCV work that releases the GIL, so threads scale it over the cores; the
bound keeps memory flat on 4K plates (each result is a whole frame, ~100 MB at 4K float).
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Iterator, List, Optional, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1)))


def ordered_map(fn: Callable[[int], T], count: int, workers: Optional[int] = None,
                ahead: Optional[int] = None) -> Iterator[T]:
    """Yield fn(0), fn(1), ... fn(count - 1) in order, computing up to `ahead` of them concurrently."""
    from collections import deque

    workers = workers or default_workers()
    ahead = ahead or 2 * workers
    if workers == 1:
        for i in range(count):
            yield fn(i)
        return
    pending: Deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frame") as pool:
        try:
            nxt = 0
            while nxt < count or pending:
                while nxt < count and len(pending) < ahead:
                    pending.append(pool.submit(fn, nxt))
                    nxt += 1
                yield pending.popleft().result()
        finally:
            # A consumer that stops early (cancel, error) must not leave queued frames running.
            for f in pending:
                f.cancel()


def map_frames(frames: Sequence[T], fn: Callable[[T], R]) -> List[R]:
    """[fn(frames[i]) for each i], in order, on the pool: each item is fetched on the worker too (a lazy plate
    frame is a read from disk)."""
    return list(ordered_map(lambda i: fn(frames[i]), len(frames)))


def on_thread(name: str, fn: Callable[..., T], *args) -> "Future[T]":
    """fn(*args) started now on a thread of its own (named `name`), its result a future; the thread ends with it."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)
