"""A clip's frames as the VAE decodes them, chunk by chunk, readable on the host one frame at a time.

Why: the plate-resolution merge (CPU) used to wait for the whole final decode (GPU). With the decoder handing each
chunk here (decode.decode_latents' `on_chunk`), the merge thread starts on a chunk's frames while the decoder
works on the next: the two overlap instead of adding up. A chunk on the GPU is copied to pinned host memory
without blocking the decoder's thread; a reader waits for that copy's event only when it needs the frame.
"""
from __future__ import annotations

import threading
from typing import List, Optional, Tuple

import numpy as np
import torch

from .host_copy import pinned_empty


class StreamClosed(RuntimeError):
    """Frames were asked for that will never arrive (the pass failed or was cancelled before decoding them)."""


class DecodedFrames:
    """Chunks (1, 3, t, H, W) float32 in [0, 1] arrive in order through `add`; `frame(i)` -> (H, W, 3) float32."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: List[Tuple[int, torch.Tensor, Optional[torch.cuda.Event]]] = []
        self._received = 0  # frames [0, _received) have arrived (their copies may still be in flight)
        self._closed = False

    @property
    def received(self) -> int:
        return self._received

    def add(self, start: int, frames01: torch.Tensor) -> None:
        """The decoder's next chunk, frames start .. start + t - 1 of the clip."""
        if start != self._received:
            raise ValueError("chunk starts at frame %d, expected %d: chunks arrive in order" % (start, self._received))
        event = None
        host = pinned_empty(frames01.shape, torch.float32) if frames01.is_cuda else None
        if host is not None:
            host.copy_(frames01, non_blocking=True)
            # The copy runs on the frames' device's stream (a pipelined decode ends on another GPU than the caller's).
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(frames01.device))
        else:  # on the host already, or page-locked memory refused: copied now
            host = frames01.float().cpu()
        with self._cond:
            self._chunks.append((start, host, event))
            self._received = start + host.shape[2]
            self._cond.notify_all()

    def fill(self, video: torch.Tensor) -> None:
        """The frames of a whole clip that have not arrived as chunks (all of them for a pass resumed from its
        checkpoint, which decodes nothing)."""
        if video.shape[2] > self._received:
            self.add(self._received, video[:, :, self._received:])

    def close(self) -> None:
        """No more chunks: readers waiting for frames that never came raise StreamClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def frame(self, i: int) -> np.ndarray:
        with self._cond:
            while i >= self._received and not self._closed:
                self._cond.wait()
            if i >= self._received:
                raise StreamClosed("frame %d was never decoded" % i)
            start, host, event = next(c for c in reversed(self._chunks) if c[0] <= i)
        if event is not None:
            event.synchronize()
        return host[0, :, i - start].numpy().transpose(1, 2, 0)
