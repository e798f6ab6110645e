"""After ./install.sh the client imports in a clean interpreter of every Nuke Python (3.7 .. 3.11) with nothing but
the plugin folder on sys.path, and `requests` comes from nuke_void/_vendor, never from a site-packages."""
from __future__ import annotations

import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYENV = "/root/.pyenv/versions"
VERSIONS = ["3.7.16", "3.8.18", "3.9.18", "3.10.13", "3.11.7"]
PYTHONS = [(v, os.path.join(PYENV, v, "bin", "python3")) for v in VERSIONS]
PRESENT = [(v, p) for v, p in PYTHONS if os.access(p, os.X_OK)]
VENDOR = os.path.join(REPO, "nuke_void", "_vendor")

CODE = ("import sys; sys.path.insert(0, %r); import nuke_void.client, nuke_void.jobspec; import requests; "
        "print(requests.__file__)" % REPO)


def test_the_machine_has_the_oldest_and_newest_nuke_python():
    if not PRESENT:
        pytest.skip("no pyenv Pythons on this machine")
    versions = [v for v, _ in PRESENT]
    assert any(v.startswith("3.7.") for v in versions) and any(v.startswith("3.11.") for v in versions), versions


@pytest.mark.parametrize("version, python", PRESENT or [pytest.param("none", "", marks=pytest.mark.skip(
    reason="no pyenv Pythons on this machine"))])
def test_client_imports_with_vendored_requests(version, python):
    assert os.path.isdir(os.path.join(VENDOR, "requests")), "nuke_void/_vendor is missing: run ./install.sh"
    out = subprocess.run([python, "-I", "-S", "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    path = out.stdout.strip().splitlines()[-1]
    assert os.path.realpath(path).startswith(os.path.realpath(VENDOR) + os.sep), path
