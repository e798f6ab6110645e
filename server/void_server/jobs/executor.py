"""Running one claimed job's pipeline: the part a worker can do in-process or hand to a remote GPU worker.

`run_pipeline` is the in-process execution (inputs -> pipeline -> result files); the Ray workers of
`void_server.cluster` call it on their machine. A worker thread with an `executor` (see `Worker`) hands the job to
it instead; an executor that loses its remote worker raises `WorkerLost`, and the job goes back to the queue.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, List, Optional, Protocol

from ..api.models import JobSpec
from ..media.checksums import SUMS_DIR
from ..media.sink import ExrResultSink
from ..pipelines.base import CancelCheck, Pipeline, PipelineInputs, ProgressCallback, ResultSink, RunSummary
from . import inputs as job_inputs
from .layout import JobFiles


class WorkerLost(Exception):
    """The worker running a job went away (process, GPU or machine lost): the job is queued again."""


class Executor(Protocol):
    alive: bool  # False once its worker is gone: the worker thread using it stops

    def execute(self, job_id: str, spec: JobSpec, files: JobFiles, live, notes: List[str]) -> None:
        """Run the job to its result files (raises what the pipeline raises, or WorkerLost)."""


def discard_partial_results(results: Path, everything: bool = False) -> None:
    """Remove interrupted writes (*.tmp); with `everything`, the results of a job that will never succeed."""
    if not results.is_dir():
        return
    for p in results.iterdir():
        if p.is_file() and (everything or p.name.endswith(".tmp")):
            p.unlink()
    if everything:
        shutil.rmtree(results / SUMS_DIR, ignore_errors=True)


Runner = Callable[[Pipeline, PipelineInputs, ResultSink], RunSummary]


def run_pipeline(pipeline: Pipeline, job_id: str, spec: JobSpec, files: JobFiles, memory_mode: str,
                 progress: ProgressCallback, should_cancel: CancelCheck, notes: List[str],
                 run: Optional[Runner] = None) -> None:
    """inputs -> pipeline -> EXR results and manifest in files.results; notes gain the pipeline's notes.
    `run` replaces the plain `pipeline.run` call (the local worker's out-of-memory fallback)."""
    inputs = job_inputs.pipeline_inputs(spec, files, memory_mode, notes)
    sink = ExrResultSink(files.results, inputs.plate.frame_numbers, spec.output.half_float,
                         {"job": job_id, "pipeline": pipeline.name, "label": pipeline.label,
                          "encoding": inputs.settings.input_encoding})
    discard_partial_results(files.results)  # a write cut by a crash left a .tmp
    try:
        if run is None:
            summary = pipeline.run(inputs, sink, progress, should_cancel)
        else:
            summary = run(pipeline, inputs, sink)
        notes.extend(summary.notes)
        sink.finish(notes)
    finally:
        sink.close()  # frames still being written finish before the job's outcome is recorded
