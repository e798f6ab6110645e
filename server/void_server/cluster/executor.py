"""RayExecutor: the API server's side of one GpuWorker actor. It sends a claimed job, mirrors the worker's progress
into the job's live status, forwards cancel (and server shutdown), and turns the loss of the actor, its process or
its machine into WorkerLost, which puts the job back in the queue."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

from ..api.models import JobSpec
from ..jobs.executor import WorkerLost
from ..jobs.layout import JobFiles
from ..pipelines.base import Progress
from . import import_ray, transport

log = logging.getLogger("void_server")
POLL_S = 0.25


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
        self.job: Optional[str] = None
        self._lost = _lost_errors(self.ray)

    @property
    def name(self) -> str:
        return str(self.info.get("worker"))

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
            raise WorkerLost("worker %s on %s was lost mid-job (%s)" % (self.name, self.info.get("host"), type(e).__name__))
        finally:
            self.job = None
        if "error" in out:
            raise out["error"]
        notes.extend(out.get("notes", []))
        if "results" in out:
            transport.unpack(out["results"], files.results)

    def _await(self, ref, live) -> Dict[str, Any]:
        ray, last, cancelled = self.ray, None, False
        while True:
            done, _ = ray.wait([ref], timeout=POLL_S)
            if done:
                return ray.get(ref)
            if live.should_cancel() and not cancelled:
                self.actor.cancel.remote()
                cancelled = True
            p = ray.get(self.actor.progress.remote(), timeout=30)
            if p and p != last:
                last = p
                live.on_progress(Progress(p["stage"], p["step"], p["total_steps"], p["message"], p["fraction"]))

    def check(self) -> bool:
        """Whether the actor still answers (for an idle worker: a lost machine is noticed before a job is sent)."""
        try:
            self.info = self.ray.get(self.actor.describe.remote(), timeout=30)
        except self._lost:
            self.alive = False
        return self.alive
