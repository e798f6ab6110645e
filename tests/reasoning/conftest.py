"""Shared fixtures for the reasoning tests."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402

from reasoning_helpers import SAMPLES, decode_quadmask  # noqa: E402


@pytest.fixture(scope="session")
def bigben_quadmask():
    path = SAMPLES / "BigBen" / "trimask_quadmask.mp4"
    if not path.exists():
        pytest.skip("sample fixtures not available")
    return decode_quadmask(path)
