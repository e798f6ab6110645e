"""Regenerate stub_api.json, the allow-list the strict fake `nuke` is checked against.

The names come from Foundry's API as typed by the `types-nuke` stubs (PyPI, MIT, from LumaPictures/cg-stubs):

    pip download types-nuke==13.2.8.0 --no-deps -d /tmp/tn && unzip -q /tmp/tn/*.whl -d /tmp/tn/x
    python tests/fake_nuke/extract_stub_api.py /tmp/tn/x/nuke-stubs

Only names and parameter names are kept: enough to prove the fake invents nothing.
"""
from __future__ import annotations

import ast
import json
import os
import sys
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))


def _params(fn: ast.FunctionDef) -> List[str]:
    a = fn.args
    names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return names


def extract(stub_dir: str) -> Dict[str, object]:
    functions = {}  # type: Dict[str, List[List[str]]]
    classes = {}  # type: Dict[str, Dict[str, object]]
    constants = set()
    for name in sorted(os.listdir(stub_dir)):
        if not name.endswith(".pyi") or name in ("curvelib.pyi", "_curvelib.pyi", "_geo.pyi", "geo.pyi"):
            continue
        tree = ast.parse(open(os.path.join(stub_dir, name)).read())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                functions.setdefault(node.name, []).append(_params(node))
            elif isinstance(node, ast.ClassDef):
                methods = {}  # type: Dict[str, List[List[str]]]
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        methods.setdefault(item.name, []).append(_params(item))
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                classes[node.name] = {"bases": bases, "methods": methods}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                constants.add(node.target.id)
            elif isinstance(node, ast.Assign):
                constants.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {"source": "types-nuke==13.2.8.0", "functions": functions, "classes": classes,
            "constants": sorted(constants)}


if __name__ == "__main__":
    out = os.path.join(HERE, "stub_api.json")
    with open(out, "w") as f:
        json.dump(extract(sys.argv[1]), f, indent=1, sort_keys=True)
    print("wrote", out)
