"""A real `void-server serve` in a subprocess on a free loopback port, and small real input files."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np
import requests

STARTUP_S = 90.0  # a cold import of the server's stack on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(check: Callable[[], object], timeout: float = 60.0, interval: float = 0.05, what: str = "condition"):
    """The first truthy value of check() before the deadline; no fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class ServerProcess:
    def __init__(self, data_dir: Path, pipeline: str = "testing", args: Sequence[str] = (),
                 step_delay: float = 0.0, port: Optional[int] = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.pipeline = pipeline
        self.args = list(args)
        if step_delay:
            self.args += ["--pipeline-option", "step_delay=%s" % step_delay]
        self.proc = None  # type: Optional[subprocess.Popen]
        self.log_path = self.data_dir.parent / ("server-%d.log" % self.port)
        # With TLS the harness trusts the server's own (self-signed) certificate.
        self.verify = self.args[self.args.index("--tls-cert") + 1] if "--tls-cert" in self.args else True

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("http" if self.verify is True else "https", self.port)

    def start(self, wait_ready: bool = True) -> "ServerProcess":
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env.pop("VOID_TOKEN", None)
        cmd = [sys.executable, "-m", "void_server.cli", "serve", "--pipeline", self.pipeline, "--port", str(self.port),
               "--data-dir", str(self.data_dir), "--model-dir", str(self.data_dir.parent / "no-models")] + self.args
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            poll(self.health, STARTUP_S, 0.1, "the server at %s to answer (log: %s)" % (self.url, self.log_path))
        return self

    def health(self) -> Optional[dict]:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("the server exited with %s:\n%s" % (self.proc.returncode, self.read_log()))
        try:
            r = requests.get(self.url + "/v1/health", timeout=2, verify=self.verify)
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or too busy starting to answer (a
            return None  # loaded 2-core CI host): the caller's poll gives it until its own deadline
        body = r.json()
        return body if "loading" not in (body.get("problem") or "") else None

    def read_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def fd_count(self) -> int:
        """Open file descriptors of the server process (Linux /proc)."""
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def rss_mib(self) -> float:
        with open("/proc/%d/status" % self.proc.pid) as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kib / 1024.0

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as in a crash or a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()


def cut_upload(url_path: str, port: int, payload: bytes, total: int) -> socket.socket:
    """Send only `payload` of a `total`-byte PUT and leave the connection hanging, as a dying network would;
    the caller closes the returned socket."""
    s = socket.create_connection(("127.0.0.1", port))
    head = ("PUT %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: %d\r\nContent-Range: bytes 0-%d/%d\r\n\r\n" % (url_path, total, total - 1, total))
    s.sendall(head.encode() + payload)
    return s


# -- input files -------------------------------------------------------------------------------------------------

H, W = 24, 32
BOX = (slice(6, 14), slice(10, 20))  # where the target matte is set


def plate_frame(i: int) -> np.ndarray:
    """A deterministic float RGB frame in [0, 1): gradients that differ per frame."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.stack([x / W, y / H, np.full_like(x, (i + 1) / 10.0)], axis=-1)


def target_frame(i: int) -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    rows, cols = BOX
    m[rows, slice(cols.start + i, cols.stop + i)] = 1.0  # moves one pixel a frame
    return m


def write_exr(path: Path, channels: Dict[str, np.ndarray]) -> Path:
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in channels.items()}).write(str(path))
    return path


def exr_plates(folder: Path, first: int, count: int) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        rgb = plate_frame(i)
        out.append(write_exr(folder / ("plate.%04d.exr" % (first + i)),
                             {"R": rgb[..., 0], "G": rgb[..., 1], "B": rgb[..., 2], "A": np.ones((H, W))}))
    return out


def png_mattes(folder: Path, first: int, count: int, size=(H, W)) -> List[Path]:
    """8-bit grey PNG mattes (a single-channel matte serves as its own alpha)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        m = np.zeros(size, np.uint8)
        m[: H, : W][target_frame(i)[: size[0], : size[1]] > 0.5] = 255
        p = folder / ("roto.%04d.png" % (first + i))
        cv2.imwrite(str(p), m)
        out.append(p)
    return out


def png16_plates(folder: Path, first: int, count: int) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        rgb = np.round(plate_frame(i) * 65535).astype(np.uint16)
        p = folder / ("plate.%04d.png" % (first + i))
        cv2.imwrite(str(p), rgb[..., ::-1])
        out.append(p)
    return out


def spec_for(plates: Sequence[Path], mattes: Sequence[Path], first: int, **overrides) -> dict:
    from nuke_void.jobspec import build_spec

    kwargs = dict(first=first, last=first + len(plates) - 1, prompt="an empty wall",
                  plate=[str(p) for p in plates], target=[str(p) for p in mattes], passes=2,
                  steps_pass1=2, steps_pass2=2)
    kwargs.update(overrides)
    return build_spec(**kwargs)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)


# -- fixtures (imported by tests/server/conftest.py and tests/client/conftest.py) --------------------------------
import pytest  # noqa: E402

STEP_DELAY = 0.05  # slow enough to catch a job mid-run, fast enough for a 2-step job


@pytest.fixture(scope="session")
def testing_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("server") / "data", step_delay=STEP_DELAY).start()
    yield server
    server.stop()


@pytest.fixture
def client(testing_server):
    from nuke_void.client import VoidClient

    return VoidClient(testing_server.url, retries=2, timeout=30)


BASE_SPEC_JSON = json.dumps({
    "frames": {"first": 1, "last": 1}, "prompt": "an empty wall",
    "inputs": {"plate": {"files": ["p.0001.exr"]}, "target": {"files": ["t.0001.png"]}},
})
