"""Is a matte EXR empty? A standard-library reader for the few EXR flavours our temporary Writes produce.

Nuke has no numpy or OpenEXR bindings we can rely on, and the check must run before anything is uploaded, so this
reads single-part scanline EXRs (no compression, RLE-free ZIP and ZIPS) with `zlib`, `struct` and `array`.
Anything else raises `UnsupportedExr` and the caller skips the check rather than guess.
"""
from __future__ import annotations

import array
import itertools
import struct
import sys
import zlib
from typing import Dict, List, Tuple

MAGIC = 20000630
_NO, _ZIPS, _ZIP = 0, 2, 3
_LINES = {_NO: 1, _ZIPS: 1, _ZIP: 16}
_BYTES = {0: 4, 1: 2, 2: 4}  # UINT, HALF, FLOAT
HALF_HALF = 0x3800  # 0.5 as a half float
HALF_INF = 0x7C00


class UnsupportedExr(Exception):
    """A file this reader does not decode (tiled, multi-part, deep, or another compression)."""


def _cstring(data: bytes, pos: int) -> Tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("latin-1"), end + 1


def read_header(data: bytes) -> Tuple[Dict[str, object], int]:
    """Header attributes we need (channels, compression, dataWindow) and the offset of the offset table."""
    magic, version = struct.unpack_from("<ii", data, 0)
    if magic != MAGIC:
        raise UnsupportedExr("not an OpenEXR file")
    if version & (0x200 | 0x800 | 0x1000):
        raise UnsupportedExr("tiled, deep or multi-part EXR")
    pos = 8
    header = {}  # type: Dict[str, object]
    while True:
        name, pos = _cstring(data, pos)
        if not name:
            break
        kind, pos = _cstring(data, pos)
        (size,) = struct.unpack_from("<i", data, pos)
        pos += 4
        value = data[pos:pos + size]
        pos += size
        if name == "channels" and kind == "chlist":
            channels = []  # type: List[Tuple[str, int]]
            p = 0
            while value[p:p + 1] != b"\0":
                chan, p = _cstring(value, p)
                pixel_type, _linear, xs, ys = struct.unpack_from("<iB3xii", value, p)
                p += 16
                if xs != 1 or ys != 1:
                    raise UnsupportedExr("sub-sampled channels")
                channels.append((chan, pixel_type))
            header["channels"] = channels
        elif name == "compression":
            header["compression"] = value[0]
        elif name == "dataWindow":
            header["dataWindow"] = struct.unpack("<iiii", value)
    return header, pos


def _unzip(chunk: bytes, expected: int) -> bytes:
    if len(chunk) >= expected:  # EXR stores a chunk raw when compressing would not make it smaller
        return chunk
    raw = zlib.decompress(chunk)
    if raw[:1] == b"\0" and raw.count(0x80) == len(raw) - 1 and len(raw) == expected:
        return bytes(expected)  # the predictor's picture of all zeros: skip the slow path
    # Undo the predictor (running sum minus 128), then the byte interleaving of the two halves.
    t = bytes(itertools.accumulate(raw, lambda a, b: (a + b - 128) & 0xFF))
    half = (len(t) + 1) // 2
    out = bytearray(len(t))
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return bytes(out)


def _above(values: bytes, pixel_type: int, threshold: float) -> bool:
    if pixel_type == 1:
        halves = array.array("H", values)
        if sys.byteorder != "little":
            halves.byteswap()
        if threshold != 0.5:
            raise ValueError("half-float mattes are tested against 0.5 only")
        return any(HALF_HALF < h <= HALF_INF for h in halves)
    typecode = "f" if pixel_type == 2 else "I"
    numbers = array.array(typecode, values)
    if sys.byteorder != "little":
        numbers.byteswap()
    return any(v > threshold for v in numbers)


def channel_has_signal(path: str, channel: str, threshold: float = 0.5) -> bool:
    """True when some pixel of `channel` is above `threshold` (the server counts a matte above 0.5)."""
    with open(path, "rb") as f:
        data = f.read()
    header, pos = read_header(data)
    channels = header.get("channels") or []
    names = [c[0] for c in channels]  # type: ignore[union-attr]
    if channel not in names:
        raise KeyError("%s has no channel '%s' (it has %s)" % (path, channel, ", ".join(names)))
    compression = header.get("compression", _NO)
    if compression not in _LINES:
        raise UnsupportedExr("compression %s" % compression)
    x0, y0, x1, y1 = header["dataWindow"]  # type: ignore[misc]
    width, height = x1 - x0 + 1, y1 - y0 + 1
    lines = _LINES[compression]  # type: ignore[index]
    line_bytes = [width * _BYTES[t] for _, t in channels]  # type: ignore[union-attr]
    index = names.index(channel)
    before, size, pixel_type = sum(line_bytes[:index]), line_bytes[index], channels[index][1]  # type: ignore
    count = (height + lines - 1) // lines
    offsets = struct.unpack_from("<%dQ" % count, data, pos)
    for offset in offsets:
        y, packed = struct.unpack_from("<ii", data, offset)
        rows = min(lines, y1 - y + 1)
        chunk = data[offset + 8: offset + 8 + packed]
        raw = chunk if compression == _NO else _unzip(chunk, rows * sum(line_bytes))
        if not raw.strip(b"\0"):
            continue
        for row in range(rows):
            start = row * sum(line_bytes) + before
            if _above(raw[start:start + size], pixel_type, threshold):
                return True
    return False
