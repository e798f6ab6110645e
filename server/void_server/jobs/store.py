"""The durable job table: SQLite in the data dir, so a server restart loses nothing.

One connection shared under a lock (the server is one process; SQLite's own locking covers the rest). The queue
order is `queue_seq`, given when a job is started; a job interrupted by a restart keeps its number and so runs
first again.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..api.models import JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    pipeline_label TEXT NOT NULL,
    spec TEXT NOT NULL,
    stage TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    progress REAL NOT NULL DEFAULT 0,
    eta_seconds REAL,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    notes TEXT NOT NULL DEFAULT '[]',
    attempts INTEGER NOT NULL DEFAULT 0,
    queue_seq INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, queue_seq);
"""

# Columns added after the first release: (name -> declaration), appended to older databases on open.
ADDED_COLUMNS = {"owner": "TEXT", "started_at": "REAL"}

# The queue's order, one definition for claiming and for queue positions. Jobs that were running when the server
# stopped go first (their checkpoints are warm); then per-user fairness: the user whose last job started longest
# ago goes next, so one artist's batch of twenty shots cannot hold back another's single shot; then first come,
# first served. Without tokens every job has the same (NULL) owner and this is plain FIFO.
QUEUE_ORDER = (
    "ORDER BY (q.attempts > 0) DESC, "
    "COALESCE((SELECT MAX(s.started_at) FROM jobs s WHERE s.owner IS q.owner), 0) ASC, "
    "q.queue_seq ASC"
)

Row = Dict[str, Any]


class JobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a state change survives a power cut, not just a crash
            self._db.executescript(SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for name, decl in ADDED_COLUMNS.items():  # a data dir from an older server gains them in place
                if name not in columns:
                    self._db.execute("ALTER TABLE jobs ADD COLUMN %s %s" % (name, decl))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: tuple = ()) -> Optional[Row]:
        with self._lock:
            r = self._db.execute(sql, args).fetchone()
        return _row(r) if r else None

    def _all(self, sql: str, args: tuple = ()) -> List[Row]:
        with self._lock:
            return [_row(r) for r in self._db.execute(sql, args).fetchall()]

    def create(self, spec_json: str, pipeline: str, label: str, owner: Optional[str] = None) -> str:
        job_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, state, pipeline, pipeline_label, spec, created_at, updated_at, owner) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (job_id, JobState.created.value, pipeline, label, spec_json, now, now, owner),
            )
        return job_id

    def get(self, job_id: str) -> Optional[Row]:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def all(self) -> List[Row]:
        return self._all("SELECT * FROM jobs ORDER BY created_at")

    def update(self, job_id: str, **fields: Any) -> None:
        if "notes" in fields:
            fields["notes"] = json.dumps(list(fields["notes"]))
        if "state" in fields:
            fields["state"] = JobState(fields["state"]).value
        fields["updated_at"] = time.time()
        cols = ", ".join("%s = ?" % k for k in fields)
        with self._lock:
            self._db.execute("UPDATE jobs SET %s WHERE id = ?" % cols, tuple(fields.values()) + (job_id,))

    def enqueue(self, job_id: str) -> None:
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(queue_seq), 0) + 1 FROM jobs").fetchone()[0]
            self.update(job_id, state=JobState.queued, queue_seq=seq, message="waiting for the GPU")

    def claim_next(self, pipeline: str) -> Optional[Row]:
        """The next queued job in QUEUE_ORDER, now marked running (attempts + 1); None when the queue is empty."""
        with self._lock:
            row = self._one("SELECT * FROM jobs q WHERE q.state = ? %s LIMIT 1" % QUEUE_ORDER, (JobState.queued.value,))
            if row is None:
                return None
            self.update(row["id"], state=JobState.running, attempts=row["attempts"] + 1, message="starting",
                        started_at=time.time())
            return self.get(row["id"])

    def queued_ids(self) -> List[str]:
        return [r["id"] for r in self._all("SELECT q.id FROM jobs q WHERE q.state = ? %s" % QUEUE_ORDER, (JobState.queued.value,))]

    def ids_in(self, state: JobState) -> List[str]:
        return [r["id"] for r in self._all("SELECT id FROM jobs WHERE state = ?", (state.value,))]

    def finished_before(self, when: float) -> List[str]:
        states = tuple(s.value for s in (JobState.succeeded, JobState.failed, JobState.cancelled))
        return [r["id"] for r in self._all(
            "SELECT id FROM jobs WHERE state IN (?,?,?) AND finished_at IS NOT NULL AND finished_at < ?", states + (when,))]

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def _row(r: sqlite3.Row) -> Row:
    d = dict(r)
    d["notes"] = json.loads(d.get("notes") or "[]")
    return d
