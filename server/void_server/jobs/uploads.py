"""Resumable uploads: bytes stream to `<name>.part` as they arrive; the file gets its name once complete and its
SHA-256 matches. A dropped connection leaves the .part, whose size is where the client resumes
(`Content-Range: bytes START-END/TOTAL`). A newer request for the same file supersedes an older one still open.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import AsyncIterator, Dict, Optional, Tuple

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..media.checksums import checksum, forget, remember, sha256_file
from .errors import Conflict, Invalid, TooLarge

_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


def parse_content_range(header: Optional[str], content_length: Optional[str]) -> Tuple[int, Optional[int], Optional[int]]:
    """(start, expected bytes in this request, total file size); a request without the header is the whole file."""
    if not header:
        n = int(content_length) if content_length else None
        return 0, n, n
    m = _RANGE.match(header.strip())
    if not m:
        raise Invalid("Content-Range '%s' is not 'bytes START-END/TOTAL'" % header, "Content-Range")
    start, end, total = (int(g) for g in m.groups())
    if end < start or end >= total:
        raise Invalid("Content-Range '%s' is not inside the file's %d bytes" % (header, total), "Content-Range")
    return start, end - start + 1, total


def part_path(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def received(final: Path) -> Tuple[int, bool]:
    """(bytes on the server, complete?)"""
    if final.is_file():
        return final.stat().st_size, True
    part = part_path(final)
    return (part.stat().st_size if part.is_file() else 0), False


def _write_all(f, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[f.write(view):]  # a raw file may take less than all


class UploadReceiver:
    def __init__(self, max_bytes: int) -> None:
        self._generation: Dict[Path, int] = {}
        self.max_bytes = max_bytes

    def _too_large(self, name: str, size: int) -> TooLarge:
        return TooLarge("%s: %d bytes is over this server's %g MiB limit per file (--max-upload-mb)"
                        % (name, size, self.max_bytes / 2**20), "Content-Length")

    async def receive(self, final: Path, chunks: AsyncIterator[bytes], content_range: Optional[str],
                      content_length: Optional[str], sha256: Optional[str]) -> Tuple[int, bool, Optional[str]]:
        """Append this request's bytes; returns (size, complete, sha256 when complete)."""
        start, expected, total = parse_content_range(content_range, content_length)
        announced = total if total is not None else (start + expected if expected is not None else 0)
        if announced > self.max_bytes:
            raise self._too_large(final.name, announced)
        sha256 = sha256.lower() if sha256 else None
        if final.is_file():
            if sha256 and start == 0 and checksum(final) == sha256:
                return final.stat().st_size, True, sha256  # already here: nothing to send
            if start != 0:
                raise Conflict("%s is already uploaded; to replace it, upload it again from byte 0" % final.name,
                               detail={"size": final.stat().st_size})
            forget(final)
            final.unlink()
        part = part_path(final)
        have = part.stat().st_size if part.is_file() else 0
        if start == 0 and have:
            part.unlink()  # a fresh upload from the start replaces an abandoned one
            have = 0
        if start != have:
            raise Conflict("%s: the server has %d bytes, so the upload must continue from byte %d, not %d"
                           % (final.name, have, have, start), detail={"size": have})

        final.parent.mkdir(parents=True, exist_ok=True)
        generation = self._generation.get(final, 0) + 1
        self._generation[final] = generation
        hasher = hashlib.sha256() if start == 0 else None  # hashed on the fly when the whole file comes now
        got = 0
        with open(part, "ab", buffering=0) as f:  # unbuffered: the size on disk is what a resume can rely on
            try:
                async for chunk in chunks:
                    if self._generation.get(final) != generation:
                        return f.tell(), False, None  # a newer request for this file took over
                    if expected is not None and got + len(chunk) > expected:
                        raise Invalid("more bytes than Content-Range/Content-Length announced", "Content-Range")
                    if start + got + len(chunk) > self.max_bytes:  # a body of unannounced length
                        raise self._too_large(final.name, start + got + len(chunk))
                    _write_all(f, chunk)
                    got += len(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
            except ClientDisconnect:
                f.flush()
                os.fsync(f.fileno())
                return f.tell(), False, None
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        if expected is not None and got < expected:
            return size, False, None
        if total is not None and size < total:
            return size, False, None
        digest = hasher.hexdigest() if hasher is not None else (await run_in_threadpool(sha256_file, part)).hexdigest()
        if sha256 and digest != sha256:
            part.unlink()
            raise Invalid("%s arrived with SHA-256 %s but X-Content-SHA256 says %s: the file changed or was corrupted "
                          "in transit; upload it again" % (final.name, digest, sha256), "X-Content-SHA256")
        os.replace(part, final)
        remember(final, digest)
        return size, True, digest
