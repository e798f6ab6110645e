"""A video's frame count and size from its MP4 / QuickTime header, with the standard library only.

The `void` command checks a whole-video job against the server's frame limit before uploading it, and the client
may not import OpenCV (nothing the plugin ships needs numpy). This reads the first video track's sample count
(`stsz`) and size (`tkhd`); any other container, a fragmented MP4 (its samples live outside `moov`) or a file it
cannot follow gives None, and the server checks the video when the job starts, as before.
"""
from __future__ import annotations

import struct
from typing import BinaryIO, Iterator, Optional, Tuple

def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[Tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in [start, end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _find(f: BinaryIO, start: int, end: int, kind: bytes) -> Optional[Tuple[int, int]]:
    return next(((s, e) for k, s, e in _boxes(f, start, end) if k == kind), None)


def _read(f: BinaryIO, pos: int, fmt: str) -> tuple:
    f.seek(pos)
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))


def video_facts(path: str) -> Optional[Tuple[int, int, int]]:
    """(frames, width, height) of the first video track, or None where the header does not say."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            moov = _find(f, 0, f.tell(), b"moov")
            if moov is None:
                return None
            for kind, start, end in _boxes(f, *moov):
                if kind == b"trak":
                    found = _video_track(f, start, end)
                    if found is not None:
                        return found
    except (OSError, struct.error):
        pass
    return None


def _video_track(f: BinaryIO, start: int, end: int) -> Optional[Tuple[int, int, int]]:
    mdia = _find(f, start, end, b"mdia")
    hdlr = mdia and _find(f, mdia[0], mdia[1], b"hdlr")
    if not hdlr or _read(f, hdlr[0] + 8, ">4s")[0] != b"vide":
        return None
    tkhd = _find(f, start, end, b"tkhd")
    minf = _find(f, mdia[0], mdia[1], b"minf")
    stbl = minf and _find(f, minf[0], minf[1], b"stbl")
    stsz = stbl and _find(f, stbl[0], stbl[1], b"stsz")
    if not tkhd or not stsz:
        return None
    version = _read(f, tkhd[0], ">B")[0]
    width, height = _read(f, tkhd[0] + (88 if version == 1 else 76), ">II")  # 16.16 fixed point
    frames = _read(f, stsz[0] + 8, ">I")[0]
    if frames <= 0:  # fragmented: the samples are in moof boxes
        return None
    return frames, width >> 16, height >> 16
