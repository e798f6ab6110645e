"""The worker: takes queued jobs in order, one at a time per worker (one worker per GPU), runs the pipeline."""
from __future__ import annotations

import errno
import logging
import threading
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from ..api.models import JobState
from ..media.sequences import MediaError
from ..pipelines.base import JobCancelled, PipelineUnavailable, Progress
from . import oom
from .errors import JobError
from .executor import Executor, WorkerLost, discard_partial_results, run_pipeline
from .store import Row

if TYPE_CHECKING:
    from .manager import JobManager

log = logging.getLogger("void_server")
STORE_EVERY_S = 1.0  # progress reaches the database at most this often (status reads the live copy)


class OutOfGpuMemory(ValueError):
    """Out of GPU memory in the lowest memory mode; the message says what was tried and what to change."""


class LiveRun:
    """A running job's progress, ETA and cancel flags, shared between the worker and the API."""

    def __init__(self, manager: "JobManager", job_id: str) -> None:
        self.manager, self.job_id = manager, job_id
        self.cancel = threading.Event()  # the user asked
        self.stopping = threading.Event()  # the server is shutting down: the job resumes on the next start
        self._started = time.monotonic()
        self._first_fraction: Optional[float] = None
        self._stored_at = 0.0
        self._fields: Dict[str, object] = {}

    def should_cancel(self) -> bool:
        return self.cancel.is_set() or self.stopping.is_set()

    def snapshot(self) -> Dict[str, object]:
        return dict(self._fields)

    def on_progress(self, p: Progress) -> None:
        fraction = max(0.0, min(1.0, float(p.fraction)))
        if self._first_fraction is None:
            self._first_fraction = fraction  # a resumed job starts part-way: time only what runs now
        done_now = fraction - self._first_fraction
        elapsed = time.monotonic() - self._started
        eta = elapsed * (1.0 - fraction) / done_now if done_now > 0.005 else None
        stage_changed = self._fields.get("stage") != p.stage
        self._fields = {"stage": p.stage, "step": int(p.step), "total_steps": int(p.total_steps),
                        "progress": fraction, "eta_seconds": eta, "message": p.message or p.stage}
        now = time.monotonic()
        if stage_changed or now - self._stored_at >= STORE_EVERY_S:
            self._stored_at = now
            self.manager.store.update(self.job_id, **self._fields)


class Worker(threading.Thread):
    def __init__(self, manager: "JobManager", index: int, executor: Optional[Executor] = None) -> None:
        super().__init__(name="job-worker-%d" % index, daemon=True)
        self.manager, self.index = manager, index  # index: this worker's pipeline slot (PipelineHost.slot)
        self.executor = executor  # None: the pipeline runs in this process; else e.g. on a Ray GPU worker

    def run(self) -> None:
        m = self.manager
        while not m.stopping and not m.host.wait(0.5):
            pass
        if m.host.problem:  # queued jobs wait (a restart with the problem fixed runs them); say why
            for job_id in m.store.queued_ids():
                m.store.update(job_id, message="waiting: this server cannot run jobs: %s" % m.host.problem)
        if self.executor is None:  # the server is ready at its first slot; this worker needs its own
            while not m.stopping and not m.host.wait_slot(self.index, 0.5):
                pass
        while not m.stopping and (self.executor is None or self.executor.alive):
            row = None if self._cannot_run() else m.store.claim_next(m.host.name)
            if row is None:
                with m.wakeup:
                    m.wakeup.wait(1.0)
                continue
            try:
                self.run_job(row)
            except Exception:  # the loop must survive anything a job does
                log.exception("job %s: unexpected error in the worker", row["id"])

    def _cannot_run(self) -> bool:
        """The server cannot run jobs, or this worker's own slot failed to load (the other slots still run)."""
        m = self.manager
        return bool(m.host.problem or (self.executor is None and m.host.slot_problem(self.index)))

    def run_job(self, row: Row) -> None:
        m, job_id = self.manager, row["id"]
        if row["pipeline"] != m.host.name:
            m._finish(job_id, JobState.failed, error="the job was made for the '%s' pipeline but this server now runs "
                      "'%s': submit it again" % (row["pipeline"], m.host.name), message="failed")
            return
        live = LiveRun(m, job_id)
        m.live[job_id] = live
        if (m.store.get(job_id) or {}).get("cancel_requested"):
            live.cancel.set()  # cancelled between being claimed and being registered
        spec, files = m.spec_of(row), m.files(job_id)
        notes: List[str] = []
        log.info("job %s: attempt %d starts", job_id, row["attempts"])
        try:
            if self.executor is not None:
                self.executor.execute(job_id, spec, files, live, notes)
            else:
                pipeline = m.host.pipeline_for(self.index)
                if pipeline is None:
                    raise PipelineUnavailable(m.host.slot_problem(self.index) or "the pipeline is not loaded")
                with m.host.running(self.index, job_id):  # this thread computes on the slot's GPU
                    run_pipeline(pipeline, job_id, spec, files, m.config.memory_mode, live.on_progress,
                                 live.should_cancel, notes,
                                 run=lambda p, inputs, sink: self._run_with_memory_fallback(p, inputs, sink, live,
                                                                                            notes))
            m._finish(job_id, JobState.succeeded, progress=1.0, message="done", notes=notes, stage="merge")
        except JobCancelled:
            if live.cancel.is_set():
                m._finish(job_id, JobState.cancelled, message="cancelled")
            else:
                m.store.update(job_id, state=JobState.queued, message="interrupted by a server shutdown: resumes")
        except WorkerLost as e:  # the job goes back to the queue (it keeps its place) and runs on another worker
            if live.cancel.is_set():
                m._finish(job_id, JobState.cancelled, message="cancelled")
                return
            retry = "retried: %s; attempt %d goes to another worker" % (e, row["attempts"] + 1)
            log.warning("job %s: %s", job_id, retry)
            m.store.update(job_id, state=JobState.queued, message=retry, notes=notes + [retry])
        except JobError as e:
            m._finish(job_id, JobState.failed, message="failed", error="%s: %s" % (e.field, e.message) if e.field else e.message)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            m._finish(job_id, JobState.failed, message="failed", notes=notes, error=(
                "%s: the disk holding the server's data dir is full (%s): free space there, then submit the job again"
                % (self._stage(live), e.strerror or "no space left on device")))
        except OutOfGpuMemory as e:
            m._finish(job_id, JobState.failed, message="failed", notes=notes, error=str(e))
        except (MediaError, ValueError, PipelineUnavailable) as e:
            m._finish(job_id, JobState.failed, message="failed", error="%s: %s" % (self._stage(live), e))
        except Exception as e:
            log.exception("job %s failed", job_id)
            m._finish(job_id, JobState.failed, message="failed",
                      error="internal error in %s: %s: %s (see the server log)" % (self._stage(live), type(e).__name__, e))
        finally:
            m.live.pop(job_id, None)
            state = (m.store.get(job_id) or {}).get("state")
            if state in (JobState.failed.value, JobState.cancelled.value):
                discard_partial_results(files.results, everything=True)  # nothing half-written is ever served
            log.info("job %s: %s", job_id, (m.store.get(job_id) or {}).get("state"))

    def _run_with_memory_fallback(self, pipeline, inputs, sink, live: LiveRun, notes: List[str]):
        """Out of GPU memory: reload this worker's slot in the next lower memory mode and run again from the last
        finished stage's checkpoint; with no lower mode left, fail saying what was tried. Other slots keep their
        pipelines and modes (their GPUs did not run out)."""
        m = self.manager
        while True:
            try:
                return pipeline.run(inputs, sink, live.on_progress, live.should_cancel)
            except Exception as e:
                if not oom.is_out_of_memory(e):
                    raise
                mode = oom.current_mode(pipeline, m.host.memory_mode(self.index))
                lower, stage = oom.next_mode(mode), self._stage(live)
                if lower is None:
                    raise OutOfGpuMemory("%s: out of GPU memory even in memory mode %s (%s): use a shorter frame "
                                         "range or a smaller model size, or free the GPU" % (stage, mode, e))
                notes.append("%s: out of GPU memory in memory mode %s: retried from the last finished stage in %s"
                             % (stage, mode, lower))
                m.store.update(live.job_id, notes=notes, message="out of GPU memory: retrying in %s" % lower)
                log.warning("job %s: %s", live.job_id, notes[-1])
                pipeline = m.host.reload(lower, self.index)
                inputs.settings.memory_mode = lower

    @staticmethod
    def _stage(live: LiveRun) -> str:
        return str(live.snapshot().get("stage") or "setup")
