"""HTTP client for the VOID server: submit, upload (resumable), poll, cancel, download (resumable).

Runs inside Nuke: Python 3.7 syntax, standard library plus (vendored) requests. Every server error arrives as a
VoidError carrying the server's message and the spec field it is about. Progress callbacks are called as
`progress(bytes_done, bytes_total, file_name)`.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import requests

from .jobspec import upload_files

DEFAULT_SERVER = "http://127.0.0.1:8765"
CHUNK = 1 << 20
TERMINAL = ("succeeded", "failed", "cancelled")

Progress = Callable[[int, int, str], None]
_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                   requests.exceptions.ChunkedEncodingError)


class VoidError(Exception):
    """What went wrong, from the server (status_code, and the spec field when it is about one) or here."""

    def __init__(self, message, status_code=None, field=None):
        # type: (str, Optional[int], Optional[str]) -> None
        super(VoidError, self).__init__(message)
        self.message = message
        self.status_code = status_code
        self.field = field
        self.job_id = None  # type: Optional[str]  # set by submit() when the job exists, so it can be resumed

    def __str__(self):
        # type: () -> str
        return self.message


class ServerUnreachable(VoidError):
    """No answer from the server after the retries (wrong address, server down, network cut)."""


class JobFailed(VoidError):
    def __init__(self, message, status=None):
        # type: (str, Optional[dict]) -> None
        super(JobFailed, self).__init__(message)
        self.status = status or {}


class JobCancelledError(VoidError):
    def __init__(self, message, status=None):
        # type: (str, Optional[dict]) -> None
        super(JobCancelledError, self).__init__(message)
        self.status = status or {}


def sha256_of(path, chunk=CHUNK):
    # type: (str, int) -> str
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class _FileSlice(object):
    """The rest of a file from `offset`, streamed in chunks with a known length (so requests sends
    Content-Length, not chunked encoding), reporting each chunk."""

    def __init__(self, f, length, on_chunk):
        # type: (Any, int, Callable[[int], None]) -> None
        self._f, self._left, self._on_chunk = f, length, on_chunk
        self._length = length

    def __len__(self):
        # type: () -> int
        return self._length

    def __iter__(self):
        # type: () -> Iterator[bytes]
        while self._left > 0:
            block = self._f.read(min(CHUNK, self._left))
            if not block:
                raise VoidError("the file shrank while it was being uploaded")
            self._left -= len(block)
            self._on_chunk(len(block))
            yield block


class _Totals(object):
    """Bytes done across several files, for one progress callback."""

    def __init__(self, total, progress):
        # type: (int, Optional[Progress]) -> None
        self.total, self.done, self.progress = total, 0, progress

    def add(self, n, name):
        # type: (int, str) -> None
        self.done += n
        if self.progress:
            self.progress(self.done, self.total, name)


class VoidClient(object):
    def __init__(self, base_url, token=None, timeout=30.0, retries=5):
        # type: (str, Optional[str], float, int) -> None
        url = (base_url or DEFAULT_SERVER).rstrip("/")
        self.api = url if url.endswith("/v1") else url + "/v1"
        self.token = token or os.environ.get("VOID_TOKEN") or None
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self.backoff = 0.5  # seconds, doubled after each failed try, at most 10

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _headers(self, extra=None):
        # type: (Optional[Dict[str, str]]) -> Dict[str, str]
        h = {"Authorization": "Bearer " + self.token} if self.token else {}
        h.update(extra or {})
        return h

    def _sleep(self, attempt):
        # type: (int) -> None
        time.sleep(min(10.0, self.backoff * (2 ** attempt)))

    @staticmethod
    def _error(r):
        # type: (requests.Response) -> VoidError
        try:
            body = r.json()
            message, field = body.get("error") or r.text, body.get("field")
        except ValueError:
            message, field = (r.text or r.reason or "HTTP %d" % r.status_code), None
        return VoidError("%s (HTTP %d)" % (message, r.status_code), r.status_code, field)

    def _send(self, method, path, **kwargs):
        # type: (str, str, Any) -> requests.Response
        """One request, retried with backoff on network errors and gateway errors; HTTP errors raise VoidError."""
        headers = self._headers(kwargs.pop("headers", None))
        last = None  # type: Optional[Exception]
        for attempt in range(self.retries + 1):
            try:
                r = self.session.request(method, self.api + path, headers=headers, timeout=self.timeout, **kwargs)
            except _NETWORK_ERRORS as e:
                last = e
            else:
                if r.status_code not in (502, 504):
                    if r.status_code >= 400:
                        raise self._error(r)
                    return r
                last = self._error(r)
            if attempt < self.retries:
                self._sleep(attempt)
        raise ServerUnreachable("no answer from the VOID server at %s after %d tries: %s"
                                % (self.api, self.retries + 1, last))

    def _json(self, method, path, **kwargs):
        # type: (str, str, Any) -> Any
        return self._send(method, path, **kwargs).json()

    # -- jobs --------------------------------------------------------------------------------------------------
    def health(self):
        # type: () -> dict
        return self._json("GET", "/health")

    def create_job(self, spec):
        # type: (dict) -> dict
        return self._json("POST", "/jobs", json=spec)

    def list_jobs(self):
        # type: () -> List[dict]
        return self._json("GET", "/jobs")

    def start(self, job_id):
        # type: (str) -> dict
        return self._json("POST", "/jobs/%s/start" % job_id)

    def status(self, job_id):
        # type: (str) -> dict
        return self._json("GET", "/jobs/%s" % job_id)

    def cancel(self, job_id):
        # type: (str) -> dict
        return self._json("POST", "/jobs/%s/cancel" % job_id)

    def delete(self, job_id):
        # type: (str) -> None
        self._send("DELETE", "/jobs/%s" % job_id)

    def wait(self, job_id, on_status=None, poll=1.0, should_stop=None):
        # type: (str, Optional[Callable[[dict], None]], float, Optional[Callable[[], bool]]) -> dict
        """Poll until the job ends; returns the final status of a succeeded job. Returns early (the status as it
        is, not finished) when `should_stop()` says so, e.g. the user closed the progress window."""
        while True:
            st = self.status(job_id)
            if on_status:
                on_status(st)
            if st["state"] == "succeeded":
                return st
            if st["state"] == "failed":
                raise JobFailed("job %s failed: %s" % (job_id, st.get("error") or "no reason given"), st)
            if st["state"] == "cancelled":
                raise JobCancelledError("job %s was cancelled" % job_id, st)
            if should_stop and should_stop():
                return st
            time.sleep(poll)

    def submit(self, spec, local_files, progress=None):
        # type: (dict, Dict[str, List[str]], Optional[Progress]) -> str
        """Create the job, upload what the spec says is uploaded, start it; returns the job id."""
        job_id = self.create_job(spec)["id"]
        try:
            self._upload_many(job_id, upload_files(spec, local_files), progress)
            self.start(job_id)
        except VoidError as e:
            e.job_id = job_id
            raise
        return job_id

    # -- uploads -----------------------------------------------------------------------------------------------
    def upload_inputs(self, job_id, role, paths, progress=None):
        # type: (str, str, List[str], Optional[Progress]) -> None
        """Upload files for one input role; each resumes from the bytes the server already has."""
        self._upload_many(job_id, {role: list(paths)}, progress)

    def _upload_many(self, job_id, files, progress):
        # type: (str, Dict[str, List[str]], Optional[Progress]) -> None
        for paths in files.values():
            for p in paths:
                if not os.path.isfile(p):
                    raise VoidError("%s does not exist" % p, field="files")
        totals = _Totals(sum(os.path.getsize(p) for paths in files.values() for p in paths), progress)
        for role, paths in files.items():
            for p in paths:
                self._upload_one(job_id, role, p, totals)

    def _upload_one(self, job_id, role, path, totals):
        # type: (str, str, str, _Totals) -> None
        name = os.path.basename(path)
        url = "/jobs/%s/inputs/%s/%s" % (job_id, role, name)
        size, sha = os.path.getsize(path), sha256_of(path)
        credited = [0]  # bytes of this file counted in the progress total so far

        def credit(n):
            # type: (int) -> None
            credited[0] += n
            totals.add(n, name)

        failures, last = 0, ""
        while failures <= self.retries:
            st = self._json("GET", url)  # where the server stands: resume from there
            if st["complete"] and st.get("sha256") == sha:
                credit(size - credited[0])
                return
            offset = 0 if st["complete"] or st["size"] > size else int(st["size"])
            credit(offset - credited[0])
            headers = {"X-Content-SHA256": sha, "Content-Type": "application/octet-stream"}
            if size:
                headers["Content-Range"] = "bytes %d-%d/%d" % (offset, size - 1, size)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    body = _FileSlice(f, size - offset, credit) if size else b""
                    r = self.session.put(self.api + url, data=body, headers=self._headers(headers),
                                         timeout=self.timeout)
            except _NETWORK_ERRORS as e:
                failures += 1
                last = "%s" % e
            else:
                if r.status_code >= 400 and r.status_code != 409:  # 409: the server has another offset: ask again
                    raise self._error(r)
                if r.status_code < 400 and r.json().get("complete"):
                    return
                failures += 1
                last = r.text
            self._sleep(failures - 1)
        raise ServerUnreachable("uploading %s to %s failed %d times, last: %s" % (path, self.api, failures, last))

    # -- downloads ---------------------------------------------------------------------------------------------
    def results(self, job_id):
        # type: (str) -> List[dict]
        return self._json("GET", "/jobs/%s/results" % job_id)["files"]

    def download_results(self, job_id, dest_dir, progress=None):
        # type: (str, str, Optional[Progress]) -> List[str]
        """Every result file into dest_dir (resumable, verified); a file already there is kept when identical,
        and an existing different file is never overwritten (VoidError)."""
        files = self.results(job_id)
        for f in files:
            if os.path.basename(f["name"]) != f["name"] or f["name"].startswith("."):
                raise VoidError("the server sent an unsafe result name %r" % f["name"])
        if not os.path.isdir(dest_dir):
            os.makedirs(dest_dir)
        for f in files:
            dest = os.path.join(dest_dir, f["name"])
            if os.path.exists(dest) and sha256_of(dest) != f["sha256"]:
                raise VoidError("%s already exists and is not this job's result: move it away or choose another "
                                "folder (nothing was overwritten)" % dest, field="dest_dir")
        totals = _Totals(sum(int(f["size"]) for f in files), progress)
        paths = []
        for f in files:
            dest = os.path.join(dest_dir, f["name"])
            if not os.path.exists(dest):
                self._download_one(job_id, f, dest, totals)
            else:
                totals.add(int(f["size"]), f["name"])
            paths.append(dest)
        return paths

    def _download_one(self, job_id, info, dest, totals):
        # type: (str, dict, str, _Totals) -> None
        name, size = info["name"], int(info["size"])
        part = dest + ".part"
        url = self.api + "/jobs/%s/results/%s" % (job_id, name)
        failures, counted = 0, 0
        while True:
            have = os.path.getsize(part) if os.path.exists(part) else 0
            if have > size:
                os.remove(part)
                have = 0
            totals.add(have - counted, name)
            counted = have
            try:
                if have < size:
                    headers = self._headers({"Range": "bytes=%d-" % have} if have else None)
                    with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
                        if r.status_code >= 400:
                            raise self._error(r)
                        mode = "ab" if have and r.status_code == 206 else "wb"  # 200: the whole file again
                        if mode == "wb":
                            totals.add(-counted, name)
                            counted = 0
                        with open(part, mode) as out:
                            for block in r.iter_content(CHUNK):
                                out.write(block)
                                counted += len(block)
                                totals.add(len(block), name)
                if sha256_of(part) != info["sha256"]:
                    os.remove(part)
                    raise VoidError("%s arrived corrupted (SHA-256 mismatch); download it again" % name)
                if os.path.exists(dest):
                    raise VoidError("%s appeared while downloading: not overwritten" % dest, field="dest_dir")
                os.rename(part, dest)
                return
            except _NETWORK_ERRORS as e:
                failures += 1
                if failures > self.retries:
                    raise ServerUnreachable("downloading %s failed %d times: %s" % (name, failures, e))
                self._sleep(failures - 1)
