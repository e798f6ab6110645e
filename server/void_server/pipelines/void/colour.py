"""Plate encoding <-> the model's display-referred [0, 1] RGB.

VOID was trained on 8-bit sRGB video, so a scene-linear plate goes through the sRGB OETF before it reaches the
model. That direction runs in torch on the model's device (it touches every plate pixel the model sees: ~0.2 s a
1080p frame in numpy on one core); the way back runs in numpy, in the CPU merge. Only what the model sees is
clipped to [0, 1]; the plate itself is never altered (the merge keeps every untouched pixel bit-identical, HDR
values and negatives included).
"""
from __future__ import annotations

import numpy as np
import torch

ENCODINGS = ("linear", "srgb")

# IEC 61966-2-1 piecewise sRGB curve.
_LIN_BREAK = 0.0031308
_ENC_BREAK = 0.04045


def _check(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError("unknown plate encoding %r (expected one of %s)" % (encoding, ", ".join(ENCODINGS)))


def srgb_oetf(linear: torch.Tensor) -> torch.Tensor:
    """Scene-linear [0, 1] -> sRGB-encoded [0, 1] (input must already be clipped), float32 on its own device: the
    model's inputs are prepared where the model runs (conditioning.prepare_video)."""
    x = linear.float()
    return torch.where(x <= _LIN_BREAK, x * 12.92, x.pow(1.0 / 2.4) * 1.055 - 0.055)


def srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear [0, 1]: the exact inverse of `srgb_oetf`."""
    v = np.asarray(encoded, dtype=np.float32)
    out = np.add(v, np.float32(0.055), out=np.empty_like(v))
    np.divide(out, np.float32(1.055), out=out)
    np.power(out, np.float32(2.4), out=out)
    np.divide(v, np.float32(12.92), out=out, where=v <= _ENC_BREAK)
    return out


def to_model(rgb: torch.Tensor, encoding: str = "linear") -> torch.Tensor:
    """Plate RGB (float, any range) -> display-referred float32 in [0, 1] for the model, on rgb's device.

    Out-of-range values (HDR highlights, negative ringing, NaN) are clipped here because the model only knows
    [0, 1]; NaN becomes 0 so it cannot poison a whole latent. Out of place: the plate is never altered.
    """
    _check(encoding)
    x = torch.nan_to_num(rgb.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    return srgb_oetf(x) if encoding == "linear" else x


def from_model(rgb01: np.ndarray, encoding: str = "linear") -> np.ndarray:
    """Model output in display [0, 1] -> the plate's encoding (the inverse of `to_model` inside [0, 1])."""
    _check(encoding)
    v = np.clip(np.asarray(rgb01, dtype=np.float32), 0.0, 1.0)
    return srgb_eotf(v) if encoding == "linear" else v
