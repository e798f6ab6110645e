"""Lazy FrameSources over files: EXR sequences, PNG/TIFF sequences and video files.

What a frame holds depends on the input's purpose:
- "plate": float32 (H, W, 3|4), R, G, B (and A when present);
- "matte": float32 (H, W, 1) in [0, 1], the spec's channel ("alpha", "red", ..., or an EXR channel name);
- "quadmask": float32 (H, W, 1) with raw 0..255 values.
Opening reads headers only (every EXR header, every PNG's IHDR) so a wrong size or channel is reported before a
job runs; pixels are read one frame at a time when the pipeline asks.
"""
from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sequences import MediaError, kind_of

PURPOSES = ("plate", "matte", "quadmask")
CHANNEL_NAMES = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}
LUMA = (0.2126, 0.7152, 0.0722)


def _pick(available: Sequence[str], purpose: str, channel: str, where: str) -> List[str]:
    """Channel names to read for `purpose`; 'luminance' returns R, G, B (weighted later)."""
    have = set(available)
    if purpose == "plate":
        if {"R", "G", "B"} <= have:
            return ["R", "G", "B"] + (["A"] if "A" in have else [])
        if "Y" in have:
            return ["Y"]  # a grey plate: repeated into R, G, B
        raise MediaError("%s has channels %s but a plate needs R, G, B" % (where, ", ".join(sorted(have))))
    if channel == "luminance":
        if {"R", "G", "B"} <= have:
            return ["R", "G", "B"]
        if "Y" in have:
            return ["Y"]
    name = CHANNEL_NAMES.get(channel, channel)
    if name in have:
        return [name]
    if "Y" in have and have <= {"Y", "A"}:
        return ["Y"]  # a single-channel grey matte is its own red, green, blue and alpha
    raise MediaError(
        "%s has no '%s' channel (it has %s): choose one of those as the matte channel"
        % (where, channel, ", ".join(sorted(have)))
    )


def _assemble(planes: List[np.ndarray], names: List[str], purpose: str, channel: str) -> np.ndarray:
    if purpose == "plate":
        if names == ["Y"]:
            planes = planes * 3
        return np.stack(planes, axis=-1).astype(np.float32, copy=False)
    if channel == "luminance" and len(planes) == 3:
        m = LUMA[0] * planes[0] + LUMA[1] * planes[1] + LUMA[2] * planes[2]
    else:
        m = planes[0]
    return np.asarray(m, dtype=np.float32)[..., None]


class _Sequence:
    """Shared by the sequence readers: frame numbers, one size for all, checked per frame as read."""

    def __init__(self, paths: Sequence[Path], frame_numbers: Sequence[int], size: Tuple[int, int]) -> None:
        if len(paths) != len(frame_numbers):
            raise MediaError("%d files for %d frames (%d-%d)" % (len(paths), len(frame_numbers), frame_numbers[0], frame_numbers[-1]))
        self.paths = [Path(p) for p in paths]
        self.frame_numbers = list(frame_numbers)
        self.height, self.width = size

    def __len__(self) -> int:
        return len(self.paths)

    def _check_size(self, path: Path, h: int, w: int) -> None:
        if (h, w) != (self.height, self.width):
            raise MediaError("%s is %dx%d but the first frame (%s) is %dx%d: all frames must be the same size"
                             % (path, w, h, self.paths[0].name, self.width, self.height))


class ExrSequence(_Sequence):
    """EXR frames sized by their display window; pixels outside the data window (Nuke writes a matte's bounding
    box, not the whole format) are zero."""

    def __init__(self, paths: Sequence[Path], frame_numbers: Sequence[int], purpose: str, channel: str) -> None:
        headers = [self._header(Path(p)) for p in paths]
        super().__init__(paths, frame_numbers, headers[0][0] if headers else (0, 0))
        self.purpose, self.channel = purpose, channel
        self.names: List[List[str]] = []
        self.windows: List[Tuple[int, int, int, int]] = []
        for path, (size, channels, window) in zip(self.paths, headers):
            self._check_size(path, *size)
            self.names.append(_pick(channels, purpose, channel, str(path)))
            self.windows.append(window)

    @staticmethod
    def _header(path: Path) -> Tuple[Tuple[int, int], List[str], Tuple[int, int, int, int]]:
        """(display height, width), channel names, data window (x0, y0, x1, y1) relative to the display window."""
        import OpenEXR

        try:
            header = OpenEXR.File(str(path), header_only=True).header()
        except Exception as e:  # OpenEXR raises plain RuntimeError for unreadable files
            raise MediaError("%s is not a readable EXR file: %s" % (path, e))
        (dx0, dy0), (dx1, dy1) = (tuple(int(v) for v in c) for c in header["displayWindow"])
        (x0, y0), (x1, y1) = (tuple(int(v) for v in c) for c in header["dataWindow"])
        return (dy1 - dy0 + 1, dx1 - dx0 + 1), [c.name for c in header["channels"]], (x0 - dx0, y0 - dy0, x1 - dx0, y1 - dy0)

    def _place(self, pixels: np.ndarray, window: Tuple[int, int, int, int]) -> np.ndarray:
        """Data-window pixels -> a display-window plane, zero outside, cropped where the data overhangs."""
        x0, y0, x1, y1 = window
        if (x0, y0, x1 + 1, y1 + 1) == (0, 0, self.width, self.height):
            return pixels
        out = np.zeros((self.height, self.width), np.float32)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        tx0, ty0, tx1, ty1 = max(0, x0), max(0, y0), min(self.width, x1 + 1), min(self.height, y1 + 1)
        if tx1 > tx0 and ty1 > ty0:
            out[ty0:ty1, tx0:tx1] = pixels[sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0]
        return out

    def __getitem__(self, index: int) -> np.ndarray:
        import OpenEXR

        path, names = self.paths[index], self.names[index]
        try:
            channels = OpenEXR.File(str(path), separate_channels=True).channels()
        except Exception as e:  # a header that reads but pixels that do not: truncated or corrupt
            raise MediaError("%s: the pixels cannot be read (truncated or corrupt EXR?): %s" % (path, e))
        planes = [self._place(np.asarray(channels[n].pixels, dtype=np.float32), self.windows[index]) for n in names]
        frame = _assemble(planes, names, self.purpose, self.channel)
        if self.purpose == "quadmask" and frame.max() <= 1.0:
            frame = frame * 255.0  # stored normalised (0..1), as Nuke writes an 8-bit-looking matte to EXR
        return frame


def _png_size(path: Path) -> Optional[Tuple[int, int]]:
    """(height, width) from a PNG's IHDR without decoding it; None for other formats."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return h, w


_CV_NAMES = {1: ["Y"], 2: ["Y", "A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}


def _normalise(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    return pixels.astype(np.float32)


def _planes(pixels: np.ndarray) -> Tuple[List[np.ndarray], List[str]]:
    """A cv2 image (BGR order) -> planes in RGB order and their names."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    c = pixels.shape[2]
    if c >= 3:
        pixels = pixels[..., [2, 1, 0] + list(range(3, c))]
    return [pixels[..., i] for i in range(c)], _CV_NAMES[c]


class ImageSequence(_Sequence):
    """PNG / TIFF / JPEG, 8 or 16 bit (display-referred), via OpenCV."""

    def __init__(self, paths: Sequence[Path], frame_numbers: Sequence[int], purpose: str, channel: str) -> None:
        paths = [Path(p) for p in paths]
        first = self._read(paths[0]) if paths else np.zeros((0, 0))
        super().__init__(paths, frame_numbers, first.shape[:2])
        self.purpose, self.channel = purpose, channel
        _pick(_planes(first)[1], purpose, channel, str(paths[0]))  # fail now on a missing channel
        for p in paths[1:]:
            size = _png_size(p) if p.exists() else None
            if not p.exists():
                raise MediaError("%s is missing" % p)
            if size is not None:
                self._check_size(p, *size)

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        import cv2

        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise MediaError("%s cannot be read as an image" % path)
        return pixels

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[index]
        pixels = self._read(path)
        self._check_size(path, *pixels.shape[:2])
        scale = 255.0 if self.purpose == "quadmask" else 1.0
        planes, names = _planes(_normalise(pixels))
        picked = _pick(names, self.purpose, self.channel, str(path))
        return _assemble([planes[names.index(n)] for n in picked], picked, self.purpose, self.channel) * scale


def video_header(path: Path) -> Tuple[int, int, int]:
    """(frame count, width, height) of a video file, from its container without decoding frames."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError("%s cannot be opened as a video" % path)
        return (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()


def video_frame_count(path: Path) -> int:
    """How many frames a video file holds (a job without a frame range uses them all)."""
    count = video_header(path)[0]
    if count <= 0:
        raise MediaError("%s: the number of frames cannot be read from the video" % path)
    return count


class VideoClip:
    """A video file read sequentially (seeking only when asked out of order); frames numbered from the spec.

    Safe to read from several threads at once (the pipeline's frame pool asks for frames i, i + 1, ... in parallel):
    one decoder behind a lock, and frames decoded on the way to a later one are kept, up to `KEEP_AHEAD`, for the
    thread that asks for them next, so near-in-order requests never seek (a backward seek decodes again from the
    last keyframe)."""

    KEEP_AHEAD = 32  # decoded frames held at most (8-bit: ~6 MB each at 1080p)

    def __init__(self, path: Path, frame_numbers: Sequence[int], purpose: str, channel: str) -> None:
        self.path = Path(path)
        self.purpose, self.channel = purpose, channel
        count, self.width, self.height = video_header(self.path)
        if count != len(frame_numbers):
            raise MediaError("%s has %d frames but the frame range %d-%d has %d"
                             % (self.path, count, frame_numbers[0], frame_numbers[-1], len(frame_numbers)))
        if purpose != "plate":
            _pick(["R", "G", "B"], purpose, channel, str(self.path))
        self.frame_numbers = list(frame_numbers)
        self._cap = None
        self._next = 0
        self._decoded: Dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.frame_numbers)

    def _pixels(self, index: int) -> np.ndarray:
        import cv2

        with self._lock:
            kept = self._decoded.pop(index, None)
            if kept is not None:
                return kept
            if self._cap is None:
                self._cap = cv2.VideoCapture(str(self.path))
            if not (self._next <= index <= self._next + self.KEEP_AHEAD):
                self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                self._next = index
                self._decoded.clear()
            while True:
                ok, pixels = self._cap.read()
                if not ok:
                    raise MediaError("%s: frame %d cannot be decoded" % (self.path, self._next))
                self._next += 1
                if self._next - 1 == index:
                    return pixels
                if len(self._decoded) < self.KEEP_AHEAD:
                    self._decoded[self._next - 1] = pixels

    def __getitem__(self, index: int) -> np.ndarray:
        scale = 255.0 if self.purpose == "quadmask" else 1.0
        planes, names = _planes(_normalise(self._pixels(index)))
        picked = _pick(names, self.purpose, self.channel, str(self.path))
        return _assemble([planes[names.index(n)] for n in picked], picked, self.purpose, self.channel) * scale

    def close(self) -> None:
        with self._lock:
            if self._cap is not None:
                self._cap.release()
                self._cap = None
            self._decoded.clear()


def open_clip(paths: Sequence[Path], frame_numbers: Sequence[int], purpose: str, channel: str = "alpha"):
    """A FrameSource for one input: a single video file, or one file per frame of one kind."""
    if purpose not in PURPOSES:
        raise ValueError("purpose must be one of %s" % (PURPOSES,))
    paths = [Path(p) for p in paths]
    if not paths:
        raise MediaError("no files")
    for p in paths:
        if not p.is_file():
            raise MediaError("%s is missing" % p)
    kinds = {kind_of(str(p)) for p in paths}
    if kinds == {"video"}:
        if len(paths) != 1:
            raise MediaError("%d video files given: a video input is one file" % len(paths))
        return VideoClip(paths[0], frame_numbers, purpose, channel)
    if len(kinds) > 1:
        raise MediaError("a sequence mixes file types (%s): use one type per input" % ", ".join(sorted(kinds)))
    reader = ExrSequence if kinds == {"exr"} else ImageSequence
    return reader(paths, frame_numbers, purpose, channel)


def is_display_referred(paths: Sequence[Path]) -> bool:
    """PNG/TIFF/JPEG and video carry display (sRGB) values; EXR carries scene-linear ones."""
    return kind_of(str(paths[0])) != "exr"
