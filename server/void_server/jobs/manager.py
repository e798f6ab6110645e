"""The job service the HTTP routes call: create, upload, start, status, cancel, results, delete, expiry."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..api.models import InputRole, JobSpec, JobState, JobStatus, UploadStatus
from ..config import ServerConfig
from ..media.checksums import SUMS_DIR, checksum
from ..media.sink import MANIFEST
from . import inputs as job_inputs
from . import limits
from .errors import Conflict, NotFound, Unavailable
from .layout import JobFiles
from .pipeline_host import PipelineHost
from .store import JobStore, Row
from .uploads import UploadReceiver, received
from .worker import LiveRun, Worker


class JobManager:
    def __init__(self, config: ServerConfig, host: PipelineHost) -> None:
        self.config, self.host = config, host
        self.store = JobStore(config.db_path)
        self.uploads = UploadReceiver(config.max_upload_bytes)
        self.live: Dict[str, LiveRun] = {}
        self.wakeup = threading.Condition()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def launch(self) -> None:
        """Recover after a restart, expire old jobs, start the workers."""
        self.recover()
        self.expire()
        cluster_workers = getattr(self.host, "workers", None)  # a cluster host brings one worker per remote GPU
        self._threads.extend(cluster_workers(self) if cluster_workers else
                             [Worker(self, i) for i in range(self.config.concurrency)])
        self._threads.append(threading.Thread(target=self._janitor, name="job-expiry", daemon=True))
        for t in self._threads:
            t.start()

    def shutdown(self) -> None:
        self._stop.set()
        for run in list(self.live.values()):
            run.stopping.set()
        self.notify()
        for t in self._threads:
            t.join(timeout=10)
        self.store.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def notify(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()

    def recover(self) -> None:
        """After a restart: a job that was running is queued again (it resumes from its checkpoints) unless its
        cancel had been asked for."""
        for job_id in self.store.ids_in(JobState.running):
            row = self.store.get(job_id)
            if row and row["cancel_requested"]:
                self._finish(job_id, JobState.cancelled, message="cancelled")
            else:
                self.store.update(job_id, state=JobState.queued, message="resuming after a server restart")

    def _janitor(self) -> None:
        while not self._stop.wait(60):
            self.expire()

    def expire(self) -> None:
        if self.config.result_ttl_hours <= 0:
            return
        for job_id in self.store.finished_before(time.time() - self.config.result_ttl_hours * 3600):
            self._remove(job_id)

    # -- helpers -----------------------------------------------------------------------------------------------
    def files(self, job_id: str) -> JobFiles:
        return JobFiles(self.config.jobs_dir, job_id)

    def row(self, job_id: str) -> Row:
        row = self.store.get(job_id)
        if row is None:
            raise self._not_found(job_id)
        return row

    def _not_found(self, job_id: str) -> NotFound:
        return NotFound("no job '%s' on this server (finished jobs expire after %g hours)"
                        % (job_id, self.config.result_ttl_hours), "job_id")

    def check_access(self, job_id: str, user: Optional[str]) -> None:
        """Another user's job answers exactly as a missing one: its id tells nothing. A job made while the server
        ran without tokens has no owner and stays visible to every user."""
        owner = self.row(job_id)["owner"]
        if user is not None and owner is not None and owner != user:
            raise self._not_found(job_id)

    @staticmethod
    def spec_of(row: Row) -> JobSpec:
        return JobSpec.model_validate_json(row["spec"])

    def status(self, job_id: str) -> JobStatus:
        return self._status(self.row(job_id))

    def _status(self, row: Row) -> JobStatus:
        spec = self.spec_of(row)
        fields = {k: row[k] for k in ("id", "state", "pipeline", "pipeline_label", "stage", "step", "total_steps",
                                      "progress", "eta_seconds", "message", "error", "notes", "attempts",
                                      "created_at", "updated_at")}
        live = self.live.get(row["id"])
        if live is not None and row["state"] == JobState.running.value:
            fields.update(live.snapshot())  # fresher than the throttled database copy
        state = JobState(row["state"])
        files = self.files(row["id"])
        queued = self.store.queued_ids() if state == JobState.queued else []
        return JobStatus(
            spec=spec,
            queue_position=queued.index(row["id"]) + 1 if row["id"] in queued else None,
            missing_inputs=job_inputs.missing_uploads(spec, files) if state == JobState.created else {},
            results=[f["name"] for f in self._result_files(files)] if state == JobState.succeeded else [],
            **fields,
        )

    def statuses(self, user: Optional[str] = None) -> List[JobStatus]:
        return [self._status(r) for r in self.store.all() if user is None or r["owner"] in (None, user)]

    def _finish(self, job_id: str, state: JobState, **fields: object) -> None:
        self.store.update(job_id, state=state, finished_at=time.time(), eta_seconds=None, **fields)

    # -- jobs --------------------------------------------------------------------------------------------------
    def create(self, spec: JobSpec, owner: Optional[str] = None) -> JobStatus:
        if self.host.problem:
            raise Unavailable("this server cannot run jobs: %s" % self.host.problem)
        limits.check_frame_count(spec, self.config)
        job_inputs.check_upload_names(spec)
        job_inputs.check_path_inputs(spec, self.config.allowed_roots)
        job_id = self.store.create(spec.model_dump_json(), self.host.name, self.host.label, owner)
        self.files(job_id).create()
        return self.status(job_id)

    def start(self, job_id: str) -> JobStatus:
        row = self.row(job_id)
        state = JobState(row["state"])
        if state in (JobState.queued, JobState.running):
            return self._status(row)  # starting twice is harmless
        if state != JobState.created:
            raise Conflict("job %s is %s and cannot start again: submit a new job" % (job_id, state.value), "state")
        if self.host.problem:
            raise Unavailable("this server cannot run jobs: %s" % self.host.problem)
        spec, files = self.spec_of(row), self.files(job_id)
        missing = job_inputs.missing_uploads(spec, files)
        if missing:
            role = sorted(missing)[0]
            raise Conflict("inputs not uploaded yet: %s" % "; ".join(
                "%s: %s" % (r, ", ".join(n[:3]) + (" and %d more" % (len(n) - 3) if len(n) > 3 else ""))
                for r, n in sorted(missing.items())), "inputs.%s" % role, detail=missing)
        sources = job_inputs.open_inputs(spec, files)  # fails now, with the field, rather than in the queue
        try:
            limits.check_opened_plate(sources[InputRole.plate], self.config)
            limits.check_target_coverage(sources)
        finally:
            for source in sources.values():
                close = getattr(source, "close", None)
                if close:
                    close()
        self.store.enqueue(job_id)
        self.notify()
        return self.status(job_id)

    def cancel(self, job_id: str) -> JobStatus:
        row = self.row(job_id)
        state = JobState(row["state"])
        if state in (JobState.created, JobState.queued):
            self._finish(job_id, JobState.cancelled, message="cancelled before it ran", cancel_requested=1)
        elif state == JobState.running:
            self.store.update(job_id, cancel_requested=1, message="cancelling at the next step")
            live = self.live.get(job_id)
            if live is not None:
                live.cancel.set()
        return self.status(job_id)

    def delete(self, job_id: str) -> None:
        row = self.row(job_id)
        if row["state"] == JobState.running.value:
            raise Conflict("job %s is running: cancel it, wait until it is cancelled, then delete it" % job_id, "state")
        self._remove(job_id)

    def _remove(self, job_id: str) -> None:
        self.store.delete(job_id)
        self.files(job_id).remove()

    # -- transfers ---------------------------------------------------------------------------------------------
    def upload_target(self, job_id: str, role: str, name: str, for_writing: bool) -> Path:
        row = self.row(job_id)
        problem = job_inputs.upload_role(self.spec_of(row), role, name)
        if problem:
            raise NotFound(problem, "inputs.%s.files" % role)
        if for_writing and row["state"] != JobState.created.value:
            raise Conflict("job %s is %s: inputs can only be uploaded before it starts" % (job_id, row["state"]), "state")
        return self.files(job_id).inputs(role) / name

    def upload_status(self, job_id: str, role: str, name: str) -> UploadStatus:
        final = self.upload_target(job_id, role, name, for_writing=False)
        size, complete = received(final)
        return UploadStatus(role=role, name=name, size=size, complete=complete,
                            sha256=checksum(final) if complete else None)

    def _result_files(self, files: JobFiles) -> List[Dict[str, object]]:
        if not files.results.is_dir():
            return []
        names = sorted(p.name for p in files.results.iterdir()
                       if p.is_file() and not p.name.endswith(".tmp") and p.name != SUMS_DIR)
        names.sort(key=lambda n: n == MANIFEST)  # frames first, the manifest last
        return [{"name": n, "size": (files.results / n).stat().st_size} for n in names]

    def results(self, job_id: str) -> List[Dict[str, object]]:
        row = self.row(job_id)
        if row["state"] != JobState.succeeded.value:
            raise Conflict("job %s is %s: results are there once it has succeeded" % (job_id, row["state"]), "state")
        files = self.files(job_id)
        out = self._result_files(files)
        for f in out:
            f["sha256"] = checksum(files.results / str(f["name"]))
        return out

    def result_path(self, job_id: str, name: str) -> Path:
        names = {f["name"] for f in self.results(job_id)}
        if name not in names:
            raise NotFound("job %s has no result file '%s'" % (job_id, name), "name")
        return self.files(job_id).results / name

    def queue_length(self) -> int:
        return len(self.store.queued_ids())

    def running_ids(self) -> List[str]:
        return list(self.live)
