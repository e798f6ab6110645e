"""Helpers for the reasoning tests: sample decoding and recorded VLM answers."""
from __future__ import annotations

import os

from pathlib import Path

import numpy as np

SAMPLES = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples"
ANSWERS = Path(__file__).parent / "answers"


def decode_quadmask(path: Path) -> np.ndarray:
    """Lossless-coded quadmask video -> (T, H, W) uint8 exact levels."""
    import cv2

    from void_server.reasoning.combine import quantise

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(quantise(frame[..., 0]))
    cap.release()
    if not frames:
        raise RuntimeError("could not decode %s" % path)
    return np.stack(frames)


def answer(name: str) -> str:
    return (ANSWERS / name).read_text()
