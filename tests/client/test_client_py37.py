"""The code that runs inside Nuke parses as Python 3.7 (Nuke 13's Python)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

NUKE_VOID = Path(__file__).parents[2] / "nuke_void"


@pytest.mark.parametrize("name", ["__init__.py", "client.py", "cli.py"])
def test_parses_as_python_37(name):
    source = (NUKE_VOID / name).read_text()
    ast.parse(source, filename=name, feature_version=(3, 7))  # a walrus or match statement raises SyntaxError
