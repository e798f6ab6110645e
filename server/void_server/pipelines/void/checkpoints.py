"""Each pass's result in the job's workdir (`void_pass1.safetensors`, ...), tagged with the settings that made it,
so a restarted job skips the passes it finished.

Written on a thread per file: the job goes on to its next stage (pass 1's checkpoint is written while the pass-2
noise is made) instead of waiting 0.1-0.5 s for the disk. The job waits for the writes before it ends (`wait`),
so a finished job leaves its checkpoints whole; each goes through a temporary file, so a crash never leaves a
torn one under the real name.
"""
from __future__ import annotations

from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..frame_pool import on_thread


def tag_of(path: Path) -> Optional[str]:
    """The tag a checkpoint was written with; None for a missing, torn or foreign file (the pass is recomputed)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("tag")
    except Exception:
        return None


def read(path: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _write(path: Path, tensors: Dict[str, torch.Tensor], tag: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"tag": tag})
    tmp.replace(path)


class CheckpointWriter:
    """One job's checkpoint writes, each on a thread of its own. The tensors handed over must be host tensors that
    nobody writes to afterwards."""

    def __init__(self) -> None:
        self._writes: List["Future[None]"] = []

    def write(self, path: Path, tensors: Dict[str, torch.Tensor], tag: str) -> None:
        self.later(lambda: _write(path, tensors, tag))

    def later(self, write: Callable[[], None]) -> None:
        """Any other write of the job's (the quadmask checkpoint's seal), on a thread, waited for like the rest."""
        self._writes.append(on_thread("void-checkpoint", write))

    def wait(self) -> None:
        """Every write finished; raises the first one's failure (a full disk fails the job, as it did inline)."""
        futures_wait(self._writes)
        writes, self._writes = self._writes, []
        for done in writes:
            done.result()
