"""Everything Nuke runs (nuke_void/, init.py, menu.py) is Python 3.7 syntax (Nuke 13)."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY37 = "/root/.pyenv/versions/3.7.16/bin/python3"
FILES = sorted(glob.glob(os.path.join(REPO, "nuke_void", "*.py"))) + [
    os.path.join(REPO, "init.py"), os.path.join(REPO, "menu.py")]


@pytest.mark.skipif(not os.access(PY37, os.X_OK), reason="no Python 3.7 on this machine")
def test_compiles_under_python_37():
    code = "import sys\nfor f in sys.argv[1:]:\n    compile(open(f).read(), f, 'exec')\n"
    out = subprocess.run([PY37, "-c", code] + FILES, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_vermin_finds_nothing_newer_than_37():
    vermin = shutil.which("vermin") or os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install -e .[dev])")
    out = subprocess.run([vermin, "-t=3.7-", "--no-tips", "--violations", "--eval-annotations",
                          "--exclude-regex", "_vendor"] + FILES, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "not met" not in out.stdout, out.stdout + out.stderr
    assert "Minimum required versions: 3.7" in out.stdout, out.stdout


def test_no_numpy_torch_or_qt_imports_in_the_node_code():
    for path in FILES:
        if path.endswith("qt.py"):
            continue
        text = open(path).read()
        for banned in ("import numpy", "import torch", "import cv2", "import OpenEXR", "PySide"):
            assert banned not in text, "%s imports %s" % (path, banned)


@pytest.mark.skipif(not os.access(PY37, os.X_OK), reason="no Python 3.7 on this machine")
def test_pure_modules_run_under_python_37(tmp_path):
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from nuke_void import versioning, validation, graph_layout, progress, channels, exr_probe, settings\n"
        "assert versioning.version_name(versioning.next_version(%r)) == 'v001'\n"
        "assert progress.describe({'state': 'running', 'stage': 'pass2', 'step': 1, 'total_steps': 2})[1]\n"
        "s = settings.Settings.from_values({'prompt': 'x'})\n"
        "spec = s.build_spec(1, 2, {'plate': ['p.1.exr'], 'target': ['t.1.exr']})\n"
        "assert spec['passes'] == 2 and spec['inputs']['target']['channel'] == 'alpha'\n"
        "graph_layout.place(graph_layout.Rect(0, 0, 80, 18), graph_layout.result_cells(['remove']))\n"
        "print('ok')\n" % (REPO, str(tmp_path)))
    out = subprocess.run([PY37, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
