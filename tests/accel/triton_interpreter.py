"""Runs a script under Triton's CPU interpreter (TRITON_INTERPRET=1, read when Triton is imported, hence a fresh
interpreter) with the server package and this folder importable; returns the JSON its last line prints."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = str(Path(__file__).resolve().parents[2] / "server")


def run_interpreted(script: str) -> dict:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    prelude = "import sys\nsys.path[:0] = [%r, %r]\n" % (SERVER, str(Path(__file__).parent))
    run = subprocess.run([sys.executable, "-c", prelude + script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
