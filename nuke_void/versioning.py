"""Versioned output folders (v001, v002...): a run claims the next free one and never reuses an earlier one.

Pure Python (no nuke): the claim is an atomic `os.mkdir`, so two runs started at once still get two folders.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional

_VERSION = re.compile(r"^v(\d{3,})$")


def version_name(number: int) -> str:
    return "v%03d" % number


def existing_versions(root: str) -> List[int]:
    """Version numbers already present under `root` (folders or files named vNNN), sorted."""
    if not os.path.isdir(root):
        return []
    found = (_VERSION.match(name) for name in os.listdir(root))
    return sorted(int(m.group(1)) for m in found if m)


def next_version(root: str) -> int:
    """One above the highest existing version: a deleted v002 between v001 and v003 is never reused."""
    versions = existing_versions(root)
    return versions[-1] + 1 if versions else 1


def claim_next_version(root: str, attempts: int = 1000) -> str:
    """Create and return the next version folder under `root` (created too if missing)."""
    os.makedirs(root, exist_ok=True)
    number = next_version(root)
    for _ in range(attempts):
        path = os.path.join(root, version_name(number))
        try:
            os.mkdir(path)
            return path
        except FileExistsError:  # another run took it between listing and mkdir
            number += 1
    raise RuntimeError("Could not create a new version folder in %s." % root)


def default_output_root(script_path: Optional[str], node_name: str) -> Optional[str]:
    """`<script folder>/void/<script name>/<node name>`, or None for a script that was never saved."""
    if not script_path:
        return None
    folder, base = os.path.split(os.path.abspath(script_path))
    stem = os.path.splitext(base)[0] or "untitled"
    return os.path.join(folder, "void", stem, node_name)
