"""Plate encoding <-> the model's display-referred [0, 1] RGB.

VOID was trained on 8-bit sRGB video, so a scene-linear plate goes through the sRGB OETF before it reaches the
model. Only what the model sees is clipped to [0, 1]; the plate itself is never altered (the merge keeps every
untouched pixel bit-identical, HDR values and negatives included).
"""
from __future__ import annotations

import numpy as np

ENCODINGS = ("linear", "srgb")

# IEC 61966-2-1 piecewise sRGB curve.
_LIN_BREAK = 0.0031308
_ENC_BREAK = 0.04045


def _check(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError("unknown plate encoding %r (expected one of %s)" % (encoding, ", ".join(ENCODINGS)))


def srgb_oetf(linear: np.ndarray) -> np.ndarray:
    """Scene-linear [0, 1] -> sRGB-encoded [0, 1] (input must already be clipped)."""
    x = np.asarray(linear, dtype=np.float32)
    # The curve's two pieces written in place, each where it applies: the same float32 operations as
    # np.where(x <= break, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055), bit for bit, without its four temporaries
    # (this runs on every plate pixel the model sees).
    out = np.power(x, np.float32(1.0 / 2.4), out=np.empty_like(x))
    np.multiply(out, np.float32(1.055), out=out)
    np.subtract(out, np.float32(0.055), out=out)
    np.multiply(x, np.float32(12.92), out=out, where=x <= _LIN_BREAK)
    return out


def srgb_eotf(encoded: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] -> linear [0, 1]: the exact inverse of `srgb_oetf`."""
    v = np.asarray(encoded, dtype=np.float32)
    out = np.add(v, np.float32(0.055), out=np.empty_like(v))
    np.divide(out, np.float32(1.055), out=out)
    np.power(out, np.float32(2.4), out=out)
    np.divide(v, np.float32(12.92), out=out, where=v <= _ENC_BREAK)
    return out


def to_model(rgb: np.ndarray, encoding: str = "linear") -> np.ndarray:
    """Plate RGB (float32, any range) -> display-referred float32 in [0, 1] for the model.

    Out-of-range values (HDR highlights, negative ringing, NaN) are clipped here because the model only knows
    [0, 1]; NaN becomes 0 so it cannot poison a whole latent.
    """
    _check(encoding)
    x = np.array(rgb, dtype=np.float32)  # a copy: the plate is never altered
    # fmax/fmin ignore NaN where clip keeps it: NaN -> 0, +inf -> 1, -inf -> 0, all else clipped to [0, 1].
    np.fmax(x, np.float32(0.0), out=x)
    np.fmin(x, np.float32(1.0), out=x)
    return srgb_oetf(x) if encoding == "linear" else x


def from_model(rgb01: np.ndarray, encoding: str = "linear") -> np.ndarray:
    """Model output in display [0, 1] -> the plate's encoding (the inverse of `to_model` inside [0, 1])."""
    _check(encoding)
    v = np.clip(np.asarray(rgb01, dtype=np.float32), 0.0, 1.0)
    return srgb_eotf(v) if encoding == "linear" else v
