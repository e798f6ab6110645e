"""SHA-256 of files, computed once and remembered next to the file (keyed by size and mtime)."""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

CHUNK = 1 << 20
SUMS_DIR = ".sums"


def sha256_file(path: Path, upto: int = -1) -> "hashlib._Hash":
    """A running sha256 over the file's first `upto` bytes (all when -1), to continue with more data."""
    h = hashlib.sha256()
    left = upto
    with open(path, "rb") as f:
        while left != 0:
            block = f.read(CHUNK if left < 0 else min(CHUNK, left))
            if not block:
                break
            h.update(block)
            left -= len(block) if left > 0 else 0
    return h


def _sum_path(path: Path) -> Path:
    return path.parent / SUMS_DIR / path.name


def _key(path: Path) -> str:
    st = path.stat()
    return "%d %d" % (st.st_size, st.st_mtime_ns)


def remember(path: Path, digest: str) -> None:
    p = _sum_path(path)
    p.parent.mkdir(exist_ok=True)
    tmp = p.with_name("%s.%x.tmp" % (p.name, threading.get_ident()))  # writers never share a .tmp
    tmp.write_text("%s %s" % (_key(path), digest))
    os.replace(tmp, p)


def checksum(path: Path) -> str:
    """The file's sha256 hex digest, from the remembered value when the file has not changed since."""
    p = _sum_path(path)
    try:
        size, mtime, digest = p.read_text().split()
        if "%s %s" % (size, mtime) == _key(path):
            return digest
    except (OSError, ValueError):
        pass
    digest = sha256_file(path).hexdigest()
    remember(path, digest)
    return digest


def forget(path: Path) -> None:
    try:
        _sum_path(path).unlink()
    except FileNotFoundError:
        pass
