"""Settings -> job spec (a plain dict for JSON): the one place a spec is built, for the Nuke node and `void` alike.

Runs inside Nuke (Python 3.7+, no third-party imports). The server's pydantic models
(`void_server.api.models.JobSpec`) are the contract; a test validates what this builds against them.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

MASK_MODES = ("auto", "manual", "none", "quadmask")

# Quality presets: steps for pass 1 / pass 2 and how many passes. "reference" is VOID's published setting.
PRESETS = {
    "draft": {"passes": 1, "steps_pass1": 20, "steps_pass2": 30},
    "reference": {"passes": 2, "steps_pass1": 30, "steps_pass2": 50},
}

# Speed presets: lossy options on top of the quality preset (docs/pipeline.md "Lossy options"). "lossless" sends
# none of them, so its spec is exactly what a server without these options accepts.
STEP_CACHE_FAST = 0.1
SPEEDS = {
    "lossless": {},
    "fast": {"step_cache": STEP_CACHE_FAST},
    "fastest": {"step_cache": STEP_CACHE_FAST, "fp8_matmul": True, "steps_pass1": 20, "steps_pass2": 25},
}
MAX_STEP_CACHE = 1.0

# What the server decodes as video (void_server.media.sequences.VIDEO_EXTS).
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")


def is_video(path):
    # type: (str) -> bool
    return path.lower().endswith(VIDEO_EXTS)


class SpecError(ValueError):
    """A setting that cannot make a job; the message names the setting and says what to do."""


def _input(files: Sequence[str], channel: str = "alpha") -> Dict[str, object]:
    return {"source": "upload", "files": [os.path.basename(f) for f in files], "channel": channel}


def _path_input(path: str, channel: str = "alpha") -> Dict[str, object]:
    return {"source": "path", "path": path, "channel": channel}


def build_spec(
    first: Optional[int],
    last: Optional[int],
    prompt: str,
    plate: Sequence[str],
    target: Optional[Sequence[str]] = None,
    affected: Optional[Sequence[str]] = None,
    quadmask: Optional[Sequence[str]] = None,
    target_channel: str = "alpha",
    affected_channel: str = "alpha",
    mask_mode: str = "none",
    preset: str = "reference",
    passes: Optional[int] = None,
    steps_pass1: Optional[int] = None,
    steps_pass2: Optional[int] = None,
    seed: int = 42,
    roi: bool = True,
    input_encoding: str = "linear",
    memory_mode: str = "auto",
    fps: float = 24.0,
    shared_paths: bool = False,
    client: Optional[str] = None,
    speed: str = "lossless",
    step_cache: Optional[float] = None,
    fp8_matmul: Optional[bool] = None,
) -> Dict[str, object]:
    """A job spec dict. Inputs are lists of local files (uploaded by name), or with `shared_paths` a single
    path or pattern each that the server reads from shared storage.

    `first` and `last` None (no frame range): every frame of the plate, which must be one video file, as must every
    other input; the server counts the frames when the job starts and numbers them from 1.

    `speed` picks lossy options (SPEEDS) on top of `preset`; explicit `steps_*`, `step_cache` and `fp8_matmul`
    override both."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise SpecError("Prompt is empty: describe the clean scene, e.g. 'an empty street at dusk'.")
    if (first is None) != (last is None):
        raise SpecError("Give both ends of the frame range, or neither (a video plate's every frame).")
    if first is not None and last < first:  # type: ignore[operator]
        raise SpecError("Frame range %d-%d ends before it starts." % (first, last))
    if mask_mode not in MASK_MODES:
        raise SpecError("Mask mode '%s' is not one of %s." % (mask_mode, ", ".join(MASK_MODES)))
    if preset not in PRESETS:
        raise SpecError("Quality preset '%s' is not one of %s." % (preset, ", ".join(sorted(PRESETS))))
    if speed not in SPEEDS:
        raise SpecError("Speed '%s' is not one of %s." % (speed, ", ".join(SPEEDS)))
    if not plate:
        raise SpecError("No plate frames to send.")
    if mask_mode == "quadmask":
        if not quadmask:
            raise SpecError("Mask mode 'quadmask' needs a quadmask input.")
    elif not target:
        raise SpecError("No target matte: connect the roto of the object to remove to the Target input.")
    if mask_mode == "manual" and not affected:
        raise SpecError("Mask mode 'manual' needs the Affected input (a painted matte of shadows, reflections...).")
    if first is None:
        used = [("plate", plate), ("quadmask", quadmask)] if mask_mode == "quadmask" else [
            ("plate", plate), ("target", target), ("affected", affected if mask_mode == "manual" else None)]
        for role, files in used:
            if files and (len(files) != 1 or not is_video(files[0])):
                raise SpecError("No frame range: the %s must be one video file (every frame of the plate is used); "
                                "give the frame range for image sequences." % role)

    make = _path_input if shared_paths else _input
    def one(files: Sequence[str], channel: str) -> Dict[str, object]:
        if shared_paths:
            return make(files[0], channel)  # type: ignore[arg-type]
        return make(files, channel)  # type: ignore[arg-type]

    inputs = {"plate": one(plate, "rgba")}  # type: Dict[str, object]
    if target:
        inputs["target"] = one(target, target_channel)
    if affected and mask_mode == "manual":
        inputs["affected"] = one(affected, affected_channel)
    if quadmask and mask_mode == "quadmask":
        inputs["quadmask"] = one(quadmask, "red")

    chosen = dict(PRESETS[preset])
    chosen.update(SPEEDS[speed])
    if step_cache is not None:
        chosen["step_cache"] = float(step_cache)
    if fp8_matmul is not None:
        chosen["fp8_matmul"] = bool(fp8_matmul)
    if not 0.0 <= chosen.get("step_cache", 0.0) <= MAX_STEP_CACHE:
        raise SpecError("Step cache threshold %s is outside 0 (off) to %g; 0.05-0.2 is the useful range."
                        % (chosen["step_cache"], MAX_STEP_CACHE))
    # Off is the server's default: leave the keys out, so servers without lossy options accept the spec.
    for key in ("step_cache", "fp8_matmul"):
        if not chosen.get(key, True):
            del chosen[key]
    if passes is not None:
        chosen["passes"] = passes
    if steps_pass1 is not None:
        chosen["steps_pass1"] = steps_pass1
    if steps_pass2 is not None:
        chosen["steps_pass2"] = steps_pass2
    if chosen["passes"] not in (1, 2):
        raise SpecError("Passes must be 1 or 2, not %s." % chosen["passes"])

    spec = {}  # type: Dict[str, object]
    if first is not None:
        spec["frames"] = {"first": int(first), "last": int(last)}  # type: ignore[arg-type]
    # else no "frames": servers that predate whole-video jobs refuse the spec ("frames: Field required").
    spec.update({
        "fps": float(fps),
        "prompt": prompt,
        "mask_mode": mask_mode,
        "seed": int(seed),
        "roi": bool(roi),
        "input_encoding": input_encoding,
        "memory_mode": memory_mode,
        "inputs": inputs,
    })
    spec.update(chosen)
    if client:
        spec["client"] = client[:200]
    return spec


def upload_files(spec: Dict[str, object], local: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """Which local files to upload for each role of `spec` (roles sent as paths need none)."""
    inputs = spec["inputs"]  # type: ignore[assignment]
    return {role: list(local[role]) for role, item in inputs.items() if item.get("source") == "upload"}  # type: ignore[union-attr]
