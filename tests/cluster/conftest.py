"""One local Ray cluster for the cluster tests (CPU only): two "GPU" workers through a custom resource, and one
`void-server serve --cluster` (testing pipeline) on it. The `testing_server` and `client` fixtures are the
cluster-mode server, so API tests imported from tests/client run unchanged against it."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from void_test_harness import STEP_DELAY, ServerProcess  # noqa: E402

# (tests/conftest.py keeps Ray on loopback.)
ray = pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
RESOURCE = "void_gpu"
WORKERS = 2


@pytest.fixture(scope="session")
def ray_address():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(num_cpus=2, resources={RESOURCE: WORKERS}, include_dashboard=False, namespace="void-tests",
                   log_to_driver=False)
    address = ctx.address_info["address"]
    assert address.startswith("127.0.0.1:"), "the test cluster must stay on loopback, got %s" % address
    yield address
    ray.shutdown()


@pytest.fixture(scope="session")
def testing_server(tmp_path_factory, ray_address):
    server = ServerProcess(tmp_path_factory.mktemp("cluster") / "data", step_delay=STEP_DELAY,
                           args=["--cluster", ray_address, "--cluster-resource", RESOURCE]).start()
    yield server
    server.stop()


@pytest.fixture
def client(testing_server):
    from nuke_void.client import VoidClient

    return VoidClient(testing_server.url, retries=2, timeout=30)
