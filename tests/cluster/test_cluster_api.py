"""The API behaves in cluster mode exactly as on one machine: the client end-to-end tests, run against
`void-server serve --cluster` (the fixtures of this folder's conftest)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "client"))

from test_client_end_to_end import read_exr, test_cancel_mid_run, test_job_end_to_end_exr_plate_png_matte  # noqa: E402,F401
