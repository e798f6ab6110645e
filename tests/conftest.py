"""Suite-wide set-up: where the shared fixtures live.

The shared fixtures (`../shared` beside the checkout, as on CI) hold the real VOID sample clips and the reference's
parity cases. Tests find them through VOID_SHARED_DIR; a run without them stops here instead of skipping the
tests that prove the most.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VOID_SHARED_DIR", str(REPO.parent / "shared"))
SHARED = Path(os.environ["VOID_SHARED_DIR"])
# Test servers stay on loopback. Ray otherwise swaps 127.0.0.1 for the machine's network address; it reads this
# when first imported, and every server the tests start inherits it.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def pytest_sessionstart(session: pytest.Session) -> None:
    if not (SHARED / "fixtures" / "void-samples").is_dir() and not os.environ.get("VOID_ALLOW_MISSING_SHARED"):
        pytest.exit("shared fixtures not found at %s (set VOID_SHARED_DIR, or VOID_ALLOW_MISSING_SHARED=1 to run "
                    "without them)" % SHARED, returncode=3)
