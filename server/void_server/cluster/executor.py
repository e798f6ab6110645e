"""RayExecutor: the API server's side of one GpuWorker actor. It sends a claimed job, mirrors the worker's progress
into the job's live status, forwards cancel (and server shutdown), and turns the loss of the actor, its process or
its machine into WorkerLost, which puts the job back in the queue."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Tuple

from ..api.models import JobSpec
from ..jobs.executor import WorkerLost
from ..jobs.layout import JobFiles
from ..pipelines.base import Progress
from . import import_ray, transport

log = logging.getLogger("void_server")
POLL_S = 0.25
DESCRIBE_TIMEOUT_S = 30.0  # an idle worker that cannot say who it is within this is taken as lost


def _lost_errors(ray) -> tuple:
    ex = ray.exceptions
    names = ("RayActorError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "OwnerDiedError", "GetTimeoutError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


class RayExecutor:
    def __init__(self, actor, info: Dict[str, Any], storage: str, jobs_dir) -> None:
        self.ray = import_ray()
        self.actor, self.info, self.storage, self.jobs_dir = actor, info, storage, jobs_dir
        self.alive = True
        self.lost_reason: Optional[str] = None
        self.job: Optional[str] = None
        self.workdir: Optional[str] = None  # the running job's folder on the worker's machine
        self._lost = _lost_errors(self.ray)
        self._asked: Optional[Tuple[Any, float]] = None  # the pending describe call of `check` and when it was made

    @property
    def name(self) -> str:
        return str(self.info.get("worker"))

    @property
    def node(self) -> Optional[str]:
        return self.info.get("node")

    def lose(self, reason: str) -> None:
        """The pool saw the worker's machine leave the cluster: a running job is given up at the next poll (a
        call to a dead machine's actor may otherwise take Ray's own timeouts to fail)."""
        self.lost_reason = self.lost_reason or reason
        self.alive = False
        try:
            self.ray.kill(self.actor, no_restart=True)  # if the machine comes back, it must not run the job twice
        except Exception:
            pass

    def execute(self, job_id: str, spec: JobSpec, files: JobFiles, live, notes: List[str]) -> None:
        job: Dict[str, Any] = {"id": job_id, "spec": spec.model_dump_json(), "storage": self.storage,
                               "jobs_dir": str(self.jobs_dir)}
        if self.storage == "object_store":
            job["inputs"] = transport.pack(files.root / "inputs")
        previous = (live.manager.store.get(job_id) or {}).get("notes") or []
        notes.extend(n for n in previous if n.startswith("retried: "))  # the client sees earlier attempts' fate
        notes.append("ran on worker %s (%s, GPU %s)" % (self.name, self.info.get("host"),
                                                       ",".join(self.info.get("gpus") or []) or "-"))
        self.job = job_id
        try:
            out = self._await(self.actor.run.remote(job), live)
        except self._lost as e:
            self.alive = False
            raise self._worker_lost(type(e).__name__)
        finally:
            self.job = self.workdir = None
        if "error" in out:
            raise out["error"]
        notes.extend(out.get("notes", []))
        if "results" in out:
            transport.unpack(out["results"], files.results)

    def _worker_lost(self, why: str) -> WorkerLost:
        return WorkerLost("worker %s on %s was lost mid-job (%s)" % (self.name, self.info.get("host"), why))

    def _await(self, ref, live) -> Dict[str, Any]:
        """The job's result; meanwhile progress is asked for without blocking, so a lost machine is noticed at
        the next poll whichever call it would have hung."""
        ray, last, cancelled, asked = self.ray, None, False, None
        while True:
            if not self.alive:
                raise self._worker_lost(self.lost_reason or "gone")
            done, _ = ray.wait([ref], timeout=POLL_S)
            if done:
                return ray.get(ref)
            if live.should_cancel() and not cancelled:
                self.actor.cancel.remote()
                cancelled = True
            if asked is None:
                asked = self.actor.progress.remote()
            if not ray.wait([asked], timeout=0)[0]:
                continue
            p, asked = ray.get(asked), None
            if p and p != last:
                self.workdir = p.get("workdir")
                last = p
                live.on_progress(Progress(p["stage"], p["step"], p["total_steps"], p["message"], p["fraction"]))

    def check(self) -> bool:
        """Whether the actor still answers (for an idle worker: a lost machine is noticed before a job is sent).
        Never blocks: it looks at the answer to the previous call, so one dead machine cannot stall the pool."""
        if self._asked is None:
            self._asked = (self.actor.describe.remote(), time.monotonic())
        ref, since = self._asked
        if self.ray.wait([ref], timeout=0)[0]:
            self._asked = None
            try:
                self.info = self.ray.get(ref)
            except self._lost:
                self.alive = False
        elif time.monotonic() - since > DESCRIBE_TIMEOUT_S:
            self.lose("it did not answer for %.0f s" % DESCRIBE_TIMEOUT_S)
        return self.alive
