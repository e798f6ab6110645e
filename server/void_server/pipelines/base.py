"""The one boundary between the server and any pipeline.

The server knows nothing of VOID; VOID knows nothing of HTTP. A pipeline gets frames in (lazily, so a 4K plate
of 200 frames never sits in memory whole), reports progress through a callback, checks a cancel flag between
steps, and hands finished frames to a sink. `workdir` is the job's private folder for stage checkpoints: a
pipeline that finds a completed stage's checkpoint there skips that stage, which is how a job re-runs from its
last completed stage after a server restart.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol

import numpy as np

# Stages in the order every pipeline reports them.
STAGES = ("quadmask", "pass1", "pass2", "merge")


class FrameSource(Protocol):
    """A clip read lazily, one frame at a time.

    Frames are float32 arrays (H, W, C): plates carry C >= 3 (RGB first), mattes C == 1 with values in [0, 1],
    quadmasks C == 1 with the raw 0/63/127/255 values as float.
    """

    frame_numbers: List[int]  # the plate's own frame numbers, e.g. 1001..1046
    height: int
    width: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class ResultSink(Protocol):
    """Where a pipeline puts finished frames (the server writes them as EXR; tests may keep them in memory)."""

    def write_frame(
        self,
        index: int,
        clean: np.ndarray,
        quadmask: np.ndarray,
        layers: Optional[Dict[str, np.ndarray]] = None,
    ) -> None:
        """Frame `index` (0-based within the job's range): `clean` float32 (H, W, 3) at plate resolution in the
        plate's own encoding; `quadmask` uint8 (H, W) with values 0/63/127/255; `layers` extra float32 images
        (H, W, 3) such as the pass-1 result, written as named EXR layers."""


class JobCancelled(Exception):
    """Raised inside a pipeline when the cancel check says so; the server records the job as cancelled."""


class PipelineUnavailable(Exception):
    """The pipeline cannot run on this server (weights missing, say); the message says how to fix it."""


@dataclasses.dataclass
class Progress:
    stage: str  # one of STAGES
    step: int = 0
    total_steps: int = 0
    message: str = ""
    # Fraction of the whole job done, 0..1; the server derives the ETA from it.
    fraction: float = 0.0


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


@dataclasses.dataclass
class PipelineSettings:
    """Per-job settings a pipeline reads; defaults are the reference's (docs/void-reference.md)."""

    prompt: str
    passes: int = 2  # 1, or 2 (pass 1 then the warped-noise pass 2)
    seed: int = 42
    steps_pass1: int = 30
    steps_pass2: int = 50
    guidance_pass2: float = 6.0
    mask_mode: str = "none"  # auto | manual | none | quadmask
    roi: bool = True
    input_encoding: str = "linear"  # "linear" (scene-linear float) or "srgb" (display-referred)
    noise_mode: str = "reference"  # "reference" (parity) or "aligned" (variance-preserving, every latent frame)
    affected_dilation: int = 0  # pixels; the reference dilates nothing
    keep_pass1: bool = True  # write the pass-1 result as a layer when pass 2 runs
    memory_mode: str = "auto"
    fps: float = 12.0
    # Lossy speed options (issue #6), each off by default; fewer steps are steps_pass1/steps_pass2.
    step_cache: float = 0.0  # first-block cache threshold (relative change of block 0's residual); 0 = off
    fp8_matmul: bool = False  # the transformer blocks' linears in float8 e4m3 (compute capability >= 8.9)


@dataclasses.dataclass
class PipelineInputs:
    plate: FrameSource
    settings: PipelineSettings
    workdir: Path
    target: Optional[FrameSource] = None
    affected: Optional[FrameSource] = None
    quadmask: Optional[FrameSource] = None  # a ready quadmask replaces target + affected


@dataclasses.dataclass
class RunSummary:
    frames_written: int
    notes: List[str] = dataclasses.field(default_factory=list)  # e.g. "VLM answer malformed twice: target only"
    timings: Dict[str, float] = dataclasses.field(default_factory=dict)


class Pipeline(Protocol):
    name: str
    # Shown wherever results appear, so a preview is never mistaken for VOID.
    label: str

    def describe(self) -> Dict[str, object]:
        """Loaded models, devices and memory, for /v1/health."""

    def run(
        self,
        inputs: PipelineInputs,
        sink: ResultSink,
        progress: ProgressCallback,
        should_cancel: CancelCheck,
    ) -> RunSummary: ...


def error_line(exc: BaseException) -> str:
    """An exception as one log line: its class and its message's first line (a compiler's errors run long)."""
    return "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def check_cancel(should_cancel: CancelCheck) -> None:
    """Call between steps: turns the server's cancel flag into JobCancelled."""
    if should_cancel():
        raise JobCancelled()


def stage_fraction(stage: str, within: float, passes: int) -> float:
    """Whole-job progress from a stage and the fraction done inside it, weighted by typical cost."""
    weights = {"quadmask": 0.05, "pass1": 0.35 if passes == 2 else 0.85, "pass2": 0.5 if passes == 2 else 0.0, "merge": 0.1}
    done = 0.0
    for name in STAGES:
        if name == stage:
            return min(1.0, done + weights[name] * max(0.0, min(1.0, within)))
        done += weights[name]
    raise ValueError("unknown stage %r" % stage)
