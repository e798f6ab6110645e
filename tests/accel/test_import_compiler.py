"""accel.import_compiler (a rank group's worker runs it before its first pass) imports torch's compiler stack in a
fresh interpreter, on this torch every module it names; a torch without one of them costs time, never the rank."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVER = str(Path(__file__).resolve().parents[2] / "server")
PROBE = """
import sys
sys.path.insert(0, {server!r})
from void_server.pipelines.void import accel
before = set(sys.modules)
print(",".join(accel.import_compiler()))
print(",".join(m for m in accel.COMPILER_MODULES if m not in before and m in sys.modules))
accel.COMPILER_MODULES = accel.COMPILER_MODULES + ("torch._no_such_compiler_module",)
print(",".join(accel.import_compiler()))
"""


def test_imports_every_compiler_module_and_skips_a_missing_one():
    out = subprocess.run([sys.executable, "-c", PROBE.format(server=SERVER)], capture_output=True, text=True,
                         check=True, timeout=300).stdout.split()
    imported, newly_loaded, with_missing = out
    names = ("torch._functorch.partitioners", "torch._inductor.compile_fx", "torch._inductor.inductor_prims")
    assert imported.split(",") == list(names)
    assert "torch._inductor.compile_fx" in newly_loaded.split(",")  # the import happened here, not at accel's
    assert with_missing.split(",") == list(names)
