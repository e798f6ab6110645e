"""The result writer: one multi-channel EXR per frame plus manifest.json (docs/architecture.md, "Results")."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..reasoning.combine import to_regions
from .checksums import remember, sha256_file

PATTERN = "clean.%04d.exr"
MANIFEST = "manifest.json"
RGB = ("R", "G", "B")
QUADMASK_CHANNELS = {"remove": "quadmask.remove", "overlap": "quadmask.overlap", "affected": "quadmask.affected"}


def write_exr(path: Path, channels: Mapping[str, np.ndarray]) -> None:
    """Atomically: written to a temporary name beside the target, then renamed over it."""
    import OpenEXR

    tmp = path.with_name(path.name + ".tmp")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(str(tmp))
    remember_after = sha256_file(tmp).hexdigest()
    os.replace(tmp, path)
    remember(path, remember_after)


def write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class ExrResultSink:
    """A base.ResultSink writing `clean.%04d.exr` (plate frame numbers) and, on `finish`, `manifest.json`.

    `manifest` carries what the sink cannot know: job, pipeline, label, encoding.
    """

    def __init__(self, results_dir: Path, frame_numbers: Sequence[int], half_float: bool,
                 manifest: Mapping[str, object]) -> None:
        self.dir = Path(results_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.frame_numbers = list(frame_numbers)
        self.dtype = np.float16 if half_float else np.float32
        self.manifest = dict(manifest)
        self.size: Optional[tuple] = None
        self.layers: Dict[str, List[str]] = {}

    def write_frame(self, index: int, clean: np.ndarray, quadmask: np.ndarray,
                    layers: Optional[Dict[str, np.ndarray]] = None) -> None:
        clean = np.asarray(clean)
        if clean.ndim != 3 or clean.shape[2] < 3:
            raise ValueError("clean frame %d has shape %s; expected (H, W, 3)" % (index, clean.shape))
        h, w = clean.shape[:2]
        if np.shape(quadmask) != (h, w):
            raise ValueError("quadmask frame %d is %s but the clean frame is %s" % (index, np.shape(quadmask), (h, w)))
        self.size = (w, h)
        channels = {name: clean[..., i].astype(self.dtype) for i, name in enumerate(RGB)}
        for name, region in zip(("remove", "overlap", "affected"), to_regions(quadmask)):
            channels[QUADMASK_CHANNELS[name]] = region.astype(np.float16)
        for layer, image in (layers or {}).items():
            names = ["%s.%s" % (layer, c) for c in RGB]
            self.layers[layer] = names
            for i, name in enumerate(names):
                channels[name] = np.asarray(image)[..., i].astype(self.dtype)
        write_exr(self.dir / (PATTERN % self.frame_numbers[index]), channels)

    def finish(self, notes: Sequence[str] = ()) -> Path:
        """Write manifest.json; the Nuke side builds its Shuffles from it."""
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
