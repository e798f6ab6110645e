"""A tiny deterministic pipeline for server and client tests: the real quadmask stage, fake denoising steps.

The clean plate is the plate with the remove region (remove + overlap) filled with FILL; the pass-1 layer fills
it with PASS1_FILL. Every stage leaves a `<stage>.done` checkpoint in the workdir and appends its name to
`testing-stages.log` each time it actually runs, so a test can see a restarted job skip finished stages.
`config.options["step_delay"]` (seconds) slows each fake step and each merged frame so tests can catch a job
mid-run. Fault injection, for the reliability tests:
- `oom_modes`: memory modes (e.g. ["gpu", "model_offload"]) in which pass 1 raises torch's CUDA OutOfMemoryError;
- `disk_full_at_frame`: the merge raises OSError(ENOSPC) instead of writing this frame (0-based), as a full disk.
"""
from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..reasoning.combine import OVERLAP, REMOVE
from ..reasoning.quadmask import build_quadmask
from .base import PipelineInputs, Progress, ProgressCallback, CancelCheck, ResultSink, RunSummary, check_cancel, stage_fraction

FILL = 0.5
PASS1_FILL = 0.25
STAGE_LOG = "testing-stages.log"


def filled(plate_frame: np.ndarray, quadmask: np.ndarray, value: float) -> np.ndarray:
    out = np.array(plate_frame[..., :3], dtype=np.float32)
    out[(quadmask == REMOVE) | (quadmask == OVERLAP)] = value
    return out


def stages_run(workdir: Path) -> List[str]:
    """The stages that actually ran in this workdir, in order, across restarts."""
    log = Path(workdir) / STAGE_LOG
    return log.read_text().split() if log.exists() else []


class TestingPipeline:
    name = "testing"
    label = "TESTING (fake pipeline, not VOID)"
    __test__ = False  # not a pytest test class

    def __init__(self, config: Any) -> None:
        options = getattr(config, "options", None) or {}
        self.step_delay = float(options.get("step_delay", 0.0))
        mode = str(getattr(config, "memory_mode", "auto"))
        self.memory_mode = "gpu" if mode == "auto" else mode  # what auto picks on a GPU with room
        self.oom_modes = list(options.get("oom_modes") or [])
        disk_full = options.get("disk_full_at_frame")
        self.disk_full_at_frame = None if disk_full is None else int(disk_full)

    def describe(self) -> Dict[str, object]:
        return {"pipeline": self.name, "models": [], "step_delay": self.step_delay, "memory_mode": self.memory_mode}

    def _out_of_memory(self) -> Exception:
        import torch  # only the OOM test pays for the import

        return torch.cuda.OutOfMemoryError("CUDA out of memory (testing pipeline, memory mode %s)" % self.memory_mode)

    def run(self, inputs: PipelineInputs, sink: ResultSink, progress: ProgressCallback,
            should_cancel: CancelCheck) -> RunSummary:
        s, work = inputs.settings, Path(inputs.workdir)
        work.mkdir(parents=True, exist_ok=True)
        n = len(inputs.plate)

        def report(stage: str, step: int, total: int) -> None:
            progress(Progress(stage, step, total, "%s %d/%d" % (stage, step, total),
                              stage_fraction(stage, step / max(total, 1), s.passes)))

        def begin(stage: str) -> bool:
            if (work / (stage + ".done")).exists():
                return False
            with open(work / STAGE_LOG, "a") as f:
                f.write(stage + "\n")
            return True

        def fake_steps(stage: str, total: int) -> None:
            if begin(stage):
                for step in range(1, total + 1):
                    check_cancel(should_cancel)
                    if self.step_delay:
                        time.sleep(self.step_delay)
                    report(stage, step, total)
                    if stage == "pass1" and self.memory_mode in self.oom_modes:
                        raise self._out_of_memory()  # after the first step, as a real OOM comes mid-stage
                (work / (stage + ".done")).touch()

        begin("quadmask")  # logs only: build_quadmask keeps (and skips on) its own quadmask.done checkpoint
        quadmask = build_quadmask(inputs, on_frame=lambda i, total: report("quadmask", i + 1, total))
        fake_steps("pass1", s.steps_pass1)
        if s.passes == 2:
            fake_steps("pass2", s.steps_pass2)
        if begin("merge"):
            for i in range(n):
                check_cancel(should_cancel)
                if self.step_delay:
                    time.sleep(self.step_delay)
                if i == self.disk_full_at_frame:
                    raise OSError(errno.ENOSPC, "No space left on device", str(sink))
                q = np.asarray(quadmask[i])
                plate = inputs.plate[i]
                layers = {"pass1": filled(plate, q, PASS1_FILL)} if s.passes == 2 and s.keep_pass1 else None
                sink.write_frame(i, filled(plate, q, FILL), q, layers)
                report("merge", i + 1, n)
            (work / "merge.done").touch()
        return RunSummary(frames_written=n, notes=["testing pipeline: remove region filled with %.2f" % FILL])
