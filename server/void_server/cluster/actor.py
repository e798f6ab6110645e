"""GpuWorker: the Ray actor on a GPU machine. It loads the pipeline once (models resident) and runs one job at a
time; `progress`, `cancel` and `describe` answer from other threads while a job runs (a threaded actor)."""
from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..api.models import JobSpec
from ..jobs.errors import JobError
from ..jobs.executor import run_pipeline
from ..jobs.layout import JobFiles
from ..jobs.pipeline_host import PipelineHost
from ..media.sequences import MediaError
from ..pipelines.base import JobCancelled, PipelineUnavailable, Progress
from . import transport

# Raised back to the API server as they are (its worker loop turns each into the job's state); anything else
# becomes a RemoteError carrying the type and message, so an unpicklable exception cannot hide the failure.
PASSED_ON = (JobCancelled, JobError, MediaError, ValueError, PipelineUnavailable, OSError)


class RemoteError(Exception):
    pass


class GpuWorker:
    def __init__(self, worker_id: str, pipeline: str, config: Any) -> None:
        import ray

        self.worker_id, self.config = worker_id, config
        self.host = PipelineHost(pipeline, config)
        self.host.load()
        ctx = ray.get_runtime_context()
        self.node_id, self.gpu_ids = ctx.get_node_id(), [str(g) for g in ray.get_gpu_ids()]
        self.node_ip = ray.util.get_node_ip_address()
        # what this actor holds (e.g. {"GPU": 2.0} with --gpus-per-worker 2, or a custom resource in tests)
        self.units = {k: v for k, v in ctx.get_assigned_resources().items() if k != "CPU"}
        self._job: Optional[str] = None
        self._workdir: Optional[str] = None
        self._progress: Optional[Dict[str, Any]] = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        raylet = _raylet_pid()
        if raylet is not None:
            threading.Thread(target=_end_with_raylet, args=(raylet,), name="raylet-watch", daemon=True).start()

    def describe(self) -> Dict[str, Any]:
        return {"worker": self.worker_id, "host": socket.gethostname(), "node": self.node_id, "ip": self.node_ip,
                "pid": os.getpid(), "gpus": self.gpu_ids, "gpu": _gpu_name(), "units": self.units,
                "gpus_per_worker": int(getattr(self.config, "gpus_per_worker", 1)),
                "pipeline": self.host.name, "label": self.host.label, "problem": self.host.problem,
                "job": self._job, "workdir": self._workdir,
                "models": self.host.pipeline.describe() if self.host.pipeline is not None else {}}

    def progress(self) -> Optional[Dict[str, Any]]:
        return dict(self._progress, workdir=self._workdir) if self._progress else None

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, job: Dict[str, Any]) -> Dict[str, Any]:
        """-> {"notes", "results" (object_store only)} or {"error": exception}."""
        with self._lock:  # one job at a time, whatever the caller does
            self._job, self._progress = job["id"], None
            self._cancel.clear()
            try:
                return self._run(job)
            except PASSED_ON as e:
                return {"error": e}
            except Exception as e:
                return {"error": RemoteError("%s: %s" % (type(e).__name__, e))}
            finally:
                self._job = self._workdir = None

    def _run(self, job: Dict[str, Any]) -> Dict[str, Any]:
        if self.host.pipeline is None:
            raise PipelineUnavailable("worker %s cannot run jobs: %s" % (self.worker_id, self.host.problem))
        spec = JobSpec.model_validate_json(job["spec"])
        notes: List[str] = []

        def on_progress(p: Progress) -> None:
            self._progress = {"stage": p.stage, "step": p.step, "total_steps": p.total_steps, "message": p.message,
                              "fraction": p.fraction, "at": time.time()}

        if job["storage"] == "shared":
            files = JobFiles(Path(job["jobs_dir"]), job["id"])
            self._execute(job, spec, files, on_progress, notes)
            return {"notes": notes}
        with tempfile.TemporaryDirectory(prefix="void-job-") as scratch:
            files = JobFiles(Path(scratch), job["id"])
            files.create()
            transport.unpack(job["inputs"], files.root / "inputs")
            self._execute(job, spec, files, on_progress, notes)
            return {"notes": notes, "results": transport.pack(files.results)}

    def _execute(self, job, spec, files, on_progress, notes) -> None:
        self._workdir = str(files.root)  # where this job's files are on this machine (health shows it)
        run_pipeline(self.host.pipeline, job["id"], spec, files, self.config.memory_mode, on_progress,
                     self._cancel.is_set, notes)


RAYLET_CHECK_S = 1.0


def _raylet_pid() -> Optional[int]:
    """The pid of this machine's raylet, the worker's parent process (None where that cannot be told)."""
    ppid = os.getppid()
    try:
        with open("/proc/%d/cmdline" % ppid, "rb") as f:
            return ppid if b"raylet" in f.read() else None
    except OSError:
        return None


def _running(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie has exited
    except (OSError, IndexError):
        return False


def _end_with_raylet(raylet: int) -> None:
    """A machine declared dead that comes back (frozen, network cut): its raylet exits, but Ray may leave this
    worker running the job, which by then is requeued and runs elsewhere. It must not go on writing results or
    holding the GPU, so it ends as soon as its raylet is gone."""
    while _running(raylet):
        time.sleep(RAYLET_CHECK_S)
    os._exit(1)


def _gpu_name() -> Optional[str]:
    import sys

    torch = sys.modules.get("torch")
    try:
        return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    except Exception:
        return None
