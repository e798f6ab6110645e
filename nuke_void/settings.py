"""The VOID node's knob values as one plain snapshot, and the job spec they make (through jobspec.build_spec).

Pure Python: node.py reads the knobs on the main thread into `Settings`; the worker thread only ever sees this.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from . import channels, jobspec

try:
    from dataclasses import dataclass
except ImportError:  # pragma: no cover
    raise

# Knob name -> default. The gizmo defines the same knobs; a test checks the two agree.
KNOBS = {
    "server": "http://localhost:8765",
    "range_mode": "input range",
    "range_first": 1001,
    "range_last": 1100,
    "prompt": "",
    "mask_mode": "none",
    "target_channel": "rgba.alpha",
    "affected_channel": "rgba.alpha",
    "passes": "1+2",
    "preset": "reference",
    "speed": "lossless",
    "steps_pass1": 0,
    "steps_pass2": 0,
    "seed": 42,
    "roi": True,
    "memory_mode": "auto",
    "output_dir": "",
    "qc_channel": "remove",
}  # type: Dict[str, Any]
RANGE_MODES = ("input range", "custom")
PASSES = ("1", "1+2")
NODE_MASK_MODES = ("auto", "manual", "none")
MEMORY_MODES = ("auto", "gpu", "model_offload", "sequential_offload", "fp8")
QC_CHANNELS = ("remove", "overlap", "affected", "all")
SPEEDS = tuple(jobspec.SPEEDS)  # lossless, fast, fastest: the Speed knob's items (jobspec.SPEEDS has the fields)


@dataclass
class Settings:
    server: str
    range_mode: str
    range_first: int
    range_last: int
    prompt: str
    mask_mode: str
    target_channel: str
    affected_channel: str
    passes: str
    preset: str
    speed: str
    steps_pass1: int
    steps_pass2: int
    seed: int
    roi: bool
    memory_mode: str
    output_dir: str
    qc_channel: str

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "Settings":
        merged = dict(KNOBS)
        merged.update({k: v for k, v in values.items() if k in KNOBS})
        for name in ("range_first", "range_last", "steps_pass1", "steps_pass2", "seed"):
            merged[name] = int(merged[name])
        merged["roi"] = bool(merged["roi"])
        for name in ("server", "prompt", "output_dir", "target_channel", "affected_channel", "speed"):
            merged[name] = str(merged[name] or "").strip()
        return cls(**merged)

    def frame_range(self, input_first: Optional[int], input_last: Optional[int]):
        """The frames to process: the Source input's range by default."""
        if self.range_mode == "custom" or input_first is None or input_last is None:
            return self.range_first, self.range_last
        return input_first, input_last

    def build_spec(self, first: int, last: int, files: Mapping[str, List[str]], fps: float = 24.0,
                   client: Optional[str] = None) -> Dict[str, object]:
        manual = self.mask_mode == "manual"
        return jobspec.build_spec(
            first, last, self.prompt,
            plate=files["plate"],
            target=files.get("target"),
            affected=files.get("affected") if manual else None,
            target_channel=channels.spec_channel(self.target_channel),
            affected_channel=channels.spec_channel(self.affected_channel),
            mask_mode=self.mask_mode,
            preset=self.preset,
            speed=self.speed,
            passes=2 if self.passes == "1+2" else 1,
            steps_pass1=self.steps_pass1 or None,
            steps_pass2=self.steps_pass2 or None,
            seed=self.seed,
            roi=self.roi,
            memory_mode=self.memory_mode,
            fps=fps,
            client=client,
        )


def token_from_env(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The server token: never a knob, so it is never saved into the script."""
    value = (environ if environ is not None else os.environ).get("VOID_TOKEN", "").strip()
    return value or None
