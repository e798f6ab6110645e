"""How a job's files travel between the API server and a worker.

"shared": DATA_DIR is on storage every machine mounts at the same path; the worker reads inputs and writes
results in place (nothing is copied, stage checkpoints survive a move to another machine).
"object_store": the inputs folder goes to the worker through Ray's object store and the results come back the same
way; the worker computes in a scratch folder (checkpoints stay on the machine that made them). Inputs given as
shared paths in the job spec must still be readable by the workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

STORAGES = ("shared", "object_store")
Packed = Dict[str, bytes]  # path relative to the folder -> file contents


def pack(folder: Path) -> Packed:
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def unpack(files: Packed, folder: Path) -> None:
    """Written as .tmp then renamed, so a reader never sees half a file."""
    folder = Path(folder)
    for rel, data in files.items():
        target = (folder / rel).resolve()
        if folder.resolve() not in target.parents:
            raise ValueError("refusing to write %s outside %s" % (rel, folder))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
