"""Where a job's files live: DATA_DIR/jobs/<id>/{inputs/<role>/, work/, results/}."""
from __future__ import annotations

import shutil
from pathlib import Path


class JobFiles:
    def __init__(self, jobs_dir: Path, job_id: str) -> None:
        self.root = Path(jobs_dir) / job_id

    def inputs(self, role: str) -> Path:
        return self.root / "inputs" / role

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def create(self) -> None:
        for p in (self.root / "inputs", self.workdir, self.results):
            p.mkdir(parents=True, exist_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
