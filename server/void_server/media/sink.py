"""The result writer: one multi-channel EXR per frame plus manifest.json (docs/architecture.md, "Results")."""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..pipelines.frame_pool import default_workers
from ..reasoning.combine import to_regions
from .checksums import remember, sha256_file

PATTERN = "clean.%04d.exr"
MANIFEST = "manifest.json"
RGB = ("R", "G", "B")
QUADMASK_CHANNELS = {"remove": "quadmask.remove", "overlap": "quadmask.overlap", "affected": "quadmask.affected"}


def write_exr(path: Path, channels: Mapping[str, np.ndarray]) -> None:
    """Atomically: written to a temporary name beside the target, then renamed over it."""
    import OpenEXR

    tmp = path.with_name("%s.%x.tmp" % (path.name, threading.get_ident()))  # writers never share a .tmp
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(str(tmp))
    remember_after = sha256_file(tmp).hexdigest()
    os.replace(tmp, path)
    remember(path, remember_after)


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _compress_on_every_core() -> None:
    """OpenEXR compresses a file's 16-line chunks on its own thread pool, which Python's binding leaves at 0
    threads: one core per file."""
    import OpenEXR

    if OpenEXR.global_thread_count() == 0:
        OpenEXR.set_global_thread_count(max(1, min(16, os.cpu_count() or 1)))


class ExrResultSink:
    """A base.ResultSink writing `clean.%04d.exr` (plate frame numbers) and, on `finish`, `manifest.json`.

    `manifest` carries what the sink cannot know: job, pipeline, label, encoding.

    Frames are written on `writers` threads while the pipeline goes on (each write converts, compresses on every
    core and checksums one frame: 0.35-0.5 s of one core at 1080p on the development machine, which a job's merge
    waited for frame after frame); at most `2 x writers` frames wait in memory. A failed write raises from the next `write_frame` or from
    `finish`, which waits for every write; `close` waits without raising (a job that failed on its own account).
    Each file is still written atomically, so a cut write leaves only a `.tmp`.
    """

    def __init__(self, results_dir: Path, frame_numbers: Sequence[int], half_float: bool,
                 manifest: Mapping[str, object], writers: Optional[int] = None) -> None:
        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.frame_numbers = list(frame_numbers)
        self.dtype = np.float16 if half_float else np.float32
        self.manifest = dict(manifest)
        self.size: Optional[tuple] = None
        self.layers: Dict[str, List[str]] = {}
        writers = writers or default_workers()
        self._pool = ThreadPoolExecutor(writers, thread_name_prefix="exr-write")
        self._room = threading.BoundedSemaphore(2 * writers)
        self._pending: List[Future] = []
        _compress_on_every_core()

    def write_frame(self, index: int, clean: np.ndarray, quadmask: np.ndarray,
                    layers: Optional[Dict[str, np.ndarray]] = None) -> None:
        clean = np.asarray(clean)
        if clean.ndim != 3 or clean.shape[2] < 3:
            raise ValueError("clean frame %d has shape %s; expected (H, W, 3)" % (index, clean.shape))
        h, w = clean.shape[:2]
        if np.shape(quadmask) != (h, w):
            raise ValueError("quadmask frame %d is %s but the clean frame is %s" % (index, np.shape(quadmask), (h, w)))
        self.size = (w, h)
        for layer in layers or {}:
            self.layers[layer] = ["%s.%s" % (layer, c) for c in RGB]
        self._raise_failed()
        self._room.acquire()
        try:
            job = self._pool.submit(self._write, index, clean, quadmask, layers)
        except BaseException:
            self._room.release()
            raise
        job.add_done_callback(lambda _: self._room.release())
        self._pending.append(job)

    def _write(self, index: int, clean: np.ndarray, quadmask: np.ndarray,
               layers: Optional[Dict[str, np.ndarray]]) -> None:
        channels = {name: clean[..., i].astype(self.dtype) for i, name in enumerate(RGB)}
        for name, region in zip(("remove", "overlap", "affected"), to_regions(quadmask)):
            channels[QUADMASK_CHANNELS[name]] = region.astype(np.float16)
        for layer, image in (layers or {}).items():
            for i, name in enumerate(self.layers[layer]):
                channels[name] = np.asarray(image)[..., i].astype(self.dtype)
        write_exr(self.dir / (PATTERN % self.frame_numbers[index]), channels)

    def _raise_failed(self) -> None:
        """A finished write's error, raised here; finished writes are forgotten."""
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def wait(self) -> None:
        """Every frame handed in is on disk; raises the first failed write's error."""
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def close(self) -> None:
        """Wait for the writes under way, raising nothing (the job failed or was cancelled already); frames not yet
        started are dropped."""
        for f in self._pending:
            f.cancel()
        self._pool.shutdown(wait=True)
        self._pending = []

    def finish(self, notes: Sequence[str] = ()) -> Path:
        """Wait for every frame, then write manifest.json; the Nuke side builds its Shuffles from it."""
        self.wait()
        self._pool.shutdown(wait=True)
        width, height = self.size or (0, 0)
        data = dict(self.manifest)
        data.update({
            "frames": {"first": self.frame_numbers[0], "last": self.frame_numbers[-1]},
            "pattern": PATTERN,
            "width": width,
            "height": height,
            "layers": dict({"rgb": list(RGB), "quadmask": dict(QUADMASK_CHANNELS)}, **self.layers),
            "notes": list(data.get("notes", [])) + list(notes),
        })
        path = self.dir / MANIFEST
        write_json(path, data)
        return path
