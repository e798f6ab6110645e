"""File kinds and frame-sequence patterns (`shot.####.exr`, `shot.%04d.exr`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Sequence

EXR_EXTS = frozenset([".exr"])
IMAGE_EXTS = frozenset([".png", ".tif", ".tiff", ".jpg", ".jpeg"])
VIDEO_EXTS = frozenset([".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"])

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%0?(\d*)d")


class MediaError(ValueError):
    """An input file that cannot be used; the message names the file and the problem."""


def kind_of(path: str) -> str:
    """'exr', 'image' or 'video', from the extension."""
    ext = Path(path).suffix.lower()
    if ext in EXR_EXTS:
        return "exr"
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    raise MediaError(
        "%s: unsupported file type '%s' (image sequences: .exr, .png, .tif; video: %s)"
        % (path, ext or "no extension", ", ".join(sorted(VIDEO_EXTS)))
    )


def is_pattern(path: str) -> bool:
    return bool(_HASHES.search(path) or _PRINTF.search(path))


def expand_pattern(pattern: str, frames: Sequence[int]) -> List[str]:
    """One path per frame number: '####' pads to the number of hashes, '%04d' as printf does."""
    if _HASHES.search(pattern):
        return [_HASHES.sub(lambda m: "%0*d" % (len(m.group(0)), f), pattern, count=1) for f in frames]
    m = _PRINTF.search(pattern)
    if m:
        return [pattern[: m.start()] + (m.group(0) % f) + pattern[m.end():] for f in frames]
    raise MediaError("%s is not a frame pattern: use #### or %%04d where the frame number goes" % pattern)
