"""The wire contract: every request and response body of /v1, defined once.

The client (`nuke_void/client.py`, which runs inside Nuke without pydantic) sends plain JSON; a test validates
what the client and the Nuke node build against these models, so the two cannot drift apart.
"""
from __future__ import annotations

import enum
import math
import re
from typing import Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

API_VERSION = "v1"
MAX_PROMPT_CHARS = 2000
MAX_PROMPT_TOKENS = 226  # the T5 text encoder reads this many tokens and silently drops the rest
MAX_STEP_CACHE = 1.0  # a relative change of 100%: beyond it every step after the first would reuse the cache
_WORD = re.compile(r"\w+")
_MARK = re.compile(r"[^\w\s]")


def prompt_tokens(text: str) -> int:
    """A tokenizer-free estimate of T5 tokens, on the generous side: a word per 8 letters, each mark, and EOS."""
    return sum(math.ceil(len(w) / 8.0) for w in _WORD.findall(text)) + len(_MARK.findall(text)) + 1


class Strict(BaseModel):
    # Unknown fields are errors: a typo in a spec must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class InputRole(str, enum.Enum):
    plate = "plate"
    target = "target"
    affected = "affected"
    quadmask = "quadmask"


class MaskMode(str, enum.Enum):
    auto = "auto"  # local VLM + SAM find what the target affects
    manual = "manual"  # the compositor's affected matte
    none = "none"  # target only
    quadmask = "quadmask"  # a ready 0/63/127/255 quadmask replaces target and affected


class InputSpec(Strict):
    """One input clip: uploaded files, or a path on storage the server can read too."""

    source: Literal["upload", "path"] = "upload"
    # Upload: file names as they will be uploaded, in frame order ("plate.1001.exr", ...), or one video file.
    # Path: a sequence pattern with #### or %04d, or a video file, readable by the server inside its allowed roots.
    files: List[str] = Field(default_factory=list)
    path: Optional[str] = None
    # For mattes: which channel holds the matte ("alpha", "red", "green", "blue", "luminance", or an EXR channel name).
    channel: str = "alpha"

    @model_validator(mode="after")
    def _one_source(self) -> "InputSpec":
        if self.source == "upload" and not self.files:
            raise ValueError("an uploaded input needs its file names in 'files'")
        if self.source == "path" and not self.path:
            raise ValueError("a path input needs 'path'")
        return self


class FrameRange(Strict):
    first: int
    last: int

    @model_validator(mode="after")
    def _ordered(self) -> "FrameRange":
        if self.last < self.first:
            raise ValueError("last frame (%d) is before first frame (%d)" % (self.last, self.first))
        return self

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class OutputOptions(Strict):
    half_float: bool = False  # clean plate as half (16-bit) EXR instead of float
    keep_pass1: bool = True  # pass-1 result as an extra EXR layer when pass 2 runs


class JobSpec(Strict):
    # Omitted (or null): every frame of the plate, which must then be one video file; its frames are numbered from
    # 1 and counted by the server when the job starts. Servers before this answer 422 "frames: Field required".
    frames: Optional[FrameRange] = None
    fps: float = Field(24.0, gt=0, le=1000)
    prompt: str = Field(..., description="The clean scene: what the shot looks like with the object gone.")
    passes: Literal[1, 2] = 2
    steps_pass1: int = Field(30, ge=1, le=200)
    steps_pass2: int = Field(50, ge=1, le=200)
    guidance_pass2: float = Field(6.0, ge=1.0, le=20.0)
    seed: int = Field(42, ge=0, le=2**63 - 1)
    mask_mode: MaskMode = MaskMode.none
    affected_dilation: int = Field(0, ge=0, le=256)
    roi: bool = True
    input_encoding: Literal["linear", "srgb"] = "linear"
    noise_mode: Literal["reference", "aligned"] = "reference"
    memory_mode: Literal["auto", "gpu", "model_offload", "sequential_offload", "fp8"] = "auto"
    # Lossy speed options, off by default (docs/pipeline.md "Lossy options"); fewer steps are steps_pass1/2.
    step_cache: float = Field(0.0, description="First-block cache threshold: 0 = off; 0.05-0.2 skips steps whose "
                                               "first transformer block changed less than that (relative).")
    fp8_matmul: bool = Field(False, description="Transformer linears in float8 e4m3 (GPU of compute capability 8.9+). "
                                                "Not the fp8 memory mode, which only stores weights in float8.")
    inputs: Dict[InputRole, InputSpec]
    output: OutputOptions = Field(default_factory=OutputOptions)
    client: Optional[str] = Field(None, max_length=200, description="Free text: host, Nuke version, script name.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("the prompt is empty: describe the clean scene, e.g. 'an empty street at dusk'")
        if len(v) > MAX_PROMPT_CHARS:
            raise ValueError("the prompt is %d characters; the limit is %d" % (len(v), MAX_PROMPT_CHARS))
        if prompt_tokens(v) > MAX_PROMPT_TOKENS:
            raise ValueError("the prompt is about %d tokens; the model reads at most %d: shorten it to the clean scene "
                             "in a sentence or two" % (prompt_tokens(v), MAX_PROMPT_TOKENS))
        return v

    @field_validator("step_cache")
    @classmethod
    def _step_cache(cls, v: float) -> float:
        if not (0.0 <= v <= MAX_STEP_CACHE):  # also refuses NaN
            raise ValueError("step_cache is the step cache's threshold: 0 turns it off, 0.05-0.2 is the useful range; "
                             "%r is outside 0..%g" % (v, MAX_STEP_CACHE))
        return v

    @model_validator(mode="after")
    def _inputs_match_mode(self) -> "JobSpec":
        roles = set(self.inputs)
        if InputRole.plate not in roles:
            raise ValueError("inputs.plate is missing")
        if self.mask_mode == MaskMode.quadmask:
            if InputRole.quadmask not in roles:
                raise ValueError("mask_mode 'quadmask' needs inputs.quadmask")
        elif InputRole.target not in roles:
            raise ValueError("mask_mode '%s' needs inputs.target (the roto matte of the object)" % self.mask_mode.value)
        if self.mask_mode == MaskMode.manual and InputRole.affected not in roles:
            raise ValueError("mask_mode 'manual' needs inputs.affected (the painted affected-region matte)")
        return self


class JobState(str, enum.Enum):
    created = "created"  # waiting for its uploads
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATES = (JobState.succeeded, JobState.failed, JobState.cancelled)


class JobStatus(BaseModel):
    id: str
    state: JobState
    pipeline: str
    pipeline_label: str
    stage: Optional[str] = None
    step: int = 0
    total_steps: int = 0
    progress: float = 0.0
    eta_seconds: Optional[float] = None
    message: str = ""
    error: Optional[str] = None
    notes: List[str] = Field(default_factory=list)
    queue_position: Optional[int] = None
    attempts: int = 0
    created_at: float
    updated_at: float
    spec: JobSpec
    missing_inputs: Dict[str, List[str]] = Field(default_factory=dict)
    results: List[str] = Field(default_factory=list)


class UploadStatus(BaseModel):
    role: InputRole
    name: str
    size: int  # bytes on the server so far: a dropped upload resumes from here
    sha256: Optional[str] = None
    complete: bool


class ErrorBody(BaseModel):
    error: str
    field: Optional[str] = None
    detail: Optional[object] = None


class Health(BaseModel):
    version: str
    api: str = API_VERSION
    pipeline: str
    pipeline_label: str
    ready: bool
    problem: Optional[str] = None
    gpus: List[Dict[str, object]] = Field(default_factory=list)
    models: Dict[str, object] = Field(default_factory=dict)
    queue_length: int = 0
    running: List[str] = Field(default_factory=list)
    # What one job may be (max_frames, max_resolution: longest side in pixels, max_upload_mb): a client checks a
    # job against them before it renders and uploads anything.
    limits: Dict[str, float] = Field(default_factory=dict)
    # False when the server has tokens and the request carried none (or a wrong one): models and running are left
    # empty then, as they name job ids, paths and machines.
    detailed: bool = True


class ResultFile(BaseModel):
    name: str  # "clean.1001.exr", ..., "manifest.json" (listed last)
    size: int
    sha256: str


class ResultList(BaseModel):
    job: str
    files: List[ResultFile]
