"""In-memory frame sources and sinks: what tests and small clips use where the server uses files."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


class ArrayFrames:
    """A FrameSource over an array (T, H, W) or (T, H, W, C); 2-D frames gain a channel axis."""

    def __init__(self, frames: np.ndarray, frame_numbers: Optional[Sequence[int]] = None) -> None:
        a = np.asarray(frames, dtype=np.float32)
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4:
            raise ValueError("frames must be (T, H, W) or (T, H, W, C), got shape %s" % (a.shape,))
        self._frames = a
        self.frame_numbers: List[int] = list(frame_numbers) if frame_numbers is not None else list(range(len(a)))
        if len(self.frame_numbers) != len(a):
            raise ValueError("%d frame numbers for %d frames" % (len(self.frame_numbers), len(a)))
        self.height, self.width = int(a.shape[1]), int(a.shape[2])

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> np.ndarray:
        return self._frames[index]


class MemorySink:
    """A ResultSink that keeps every frame, for tests."""

    def __init__(self) -> None:
        self.clean: Dict[int, np.ndarray] = {}
        self.quadmask: Dict[int, np.ndarray] = {}
        self.layers: Dict[int, Dict[str, np.ndarray]] = {}

    def write_frame(self, index: int, clean: np.ndarray, quadmask: np.ndarray,
                    layers: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.clean[index] = np.asarray(clean)
        self.quadmask[index] = np.asarray(quadmask)
        self.layers[index] = dict(layers or {})
