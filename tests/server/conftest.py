"""Server tests: a real testing-pipeline server on a loopback port (see void_test_harness.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from void_test_harness import client, testing_server  # noqa: E402,F401
