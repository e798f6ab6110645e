"""Parity with the reference implementation on every case under the shared fixtures' parity/ (README's tolerance)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from safetensors.torch import load_file  # noqa: E402

from void_server.pipelines.void.parity import run_parity  # noqa: E402

PARITY_ROOT = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "parity"
CASES = sorted(p for p in PARITY_ROOT.glob("*") if (p / "meta.json").is_file()) if PARITY_ROOT.is_dir() else []
EXACT = {"prompt_input_ids", "pass1/mask", "pass2/mask"}
MAX_ABS, MAX_REL = 1e-3, 1e-4


@pytest.mark.slow
@pytest.mark.skipif(not CASES, reason="no parity fixtures at %s" % PARITY_ROOT)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_parity(case: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.safetensors"
    run_parity(case, out)
    ours = load_file(str(out))
    expected = load_file(str(case / "expected.safetensors"))
    for key in ("pass1/output", "pass2/output"):
        assert key in ours, key
    failures, figures = [], []
    for key, b in sorted(expected.items()):
        if key not in ours:
            continue
        a = ours[key]
        if tuple(a.shape) != tuple(b.shape):
            failures.append("%s: shape %s, expected %s" % (key, tuple(a.shape), tuple(b.shape)))
            continue
        if key in EXACT:
            if not torch.equal(a.to(b.dtype), b):
                failures.append("%s: not exactly equal" % key)
            continue
        a, b = a.double(), b.double()
        max_abs = (a - b).abs().max().item()
        rel = ((a - b).norm() / b.norm()).item() if b.norm() > 0 else (a - b).norm().item()
        figures.append("%s max|a-b| %.3g rel %.3g" % (key, max_abs, rel))
        if not (max_abs <= MAX_ABS and rel <= MAX_REL):
            failures.append("%s: max|a-b| %.3g (<= %g), rel %.3g (<= %g)" % (key, max_abs, MAX_ABS, rel, MAX_REL))
    print("\n".join(figures))
    assert not failures, "\n".join(failures)
