"""Client tests: the same real server and files as the server tests (see tests/server/void_test_harness.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from void_test_harness import client, testing_server  # noqa: E402,F401
