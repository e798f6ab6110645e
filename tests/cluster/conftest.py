"""One local Ray cluster for all cluster tests (CPU only; `ray.cluster_utils.Cluster`, so tests can add and remove
nodes, i.e. machines). Workers take custom resources instead of GPUs, and every server of these tests takes its
own resource, so servers sharing the cluster never compete for workers:
- `void_gpu` (2 on the head): the `testing_server` (`void-server serve --cluster`, testing pipeline); with the
  `client` fixture, API tests imported from tests/client run unchanged against it;
- the other modules start their own servers on the resources below (`void_store`, `void_pair`) or on nodes they
  add (`void_node`)."""
import os
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from void_test_harness import STEP_DELAY, ServerProcess, poll  # noqa: E402

# (tests/conftest.py keeps Ray on loopback.)
ray = pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
RESOURCE = "void_gpu"
WORKERS = 2
HEAD_RESOURCES = {RESOURCE: WORKERS, "void_store": 1, "void_pair": 3}
# A machine that stops answering is declared dead after about 1.5 s instead of Ray's default ~15-30 s.
FAST_NODE_FAILURE = {"health_check_initial_delay_ms": 500, "health_check_period_ms": 500,
                     "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@pytest.fixture(scope="session")
def ray_cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=1, resources=HEAD_RESOURCES, include_dashboard=False, _system_config=FAST_NODE_FAILURE))
    assert cluster.address.startswith("127.0.0.1:"), "the test cluster must stay on loopback, got %s" % cluster.address
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster) -> str:
    return ray_cluster.address


def cluster_server(data_dir: Path, address: str, resource: str, *args: str) -> ServerProcess:
    return ServerProcess(data_dir, step_delay=STEP_DELAY,
                         args=["--cluster", address, "--cluster-resource", resource, *args]).start()


@pytest.fixture(scope="session")
def testing_server(tmp_path_factory, ray_address):
    server = cluster_server(tmp_path_factory.mktemp("cluster") / "data", ray_address, RESOURCE)
    yield server
    server.stop()


@pytest.fixture
def client(testing_server):
    from nuke_void.client import VoidClient

    return VoidClient(testing_server.url, retries=2, timeout=30)


# -- helpers shared by the modules -------------------------------------------------------------------------------

def health(server) -> dict:
    return requests.get(server.url + "/v1/health", timeout=10).json()


def workers(server) -> List[Dict]:
    return health(server)["models"].get("workers", [])


def ready(server) -> List[Dict]:
    return [w for w in workers(server) if w.get("state") in ("idle", "running")]


def wait_ready(server, count: int, timeout: float = 120) -> List[Dict]:
    """Exactly `count` started workers (none starting) once the pool has settled."""
    def settled():
        ws = workers(server)
        return ws if len(ws) == count and all(w["state"] in ("idle", "running") for w in ws) else None
    return poll(settled, timeout, 0.2, "%d ready workers on %s" % (count, server.url))


def ran_on(status: dict) -> str:
    return next(n for n in status["notes"] if n.startswith("ran on worker ")).split()[3]


def submit(client, folder: Path, frames: int = 2, **overrides) -> str:
    from void_test_harness import exr_plates, png_mattes, spec_for

    plates, mattes = exr_plates(folder, 1, frames), png_mattes(folder, 1, frames)
    return client.submit(spec_for(plates, mattes, 1, **overrides),
                         {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})


def check_clean(client, job_id: str, out: Path, frames: int = 2) -> None:
    """The job's results are the testing pipeline's exact output for the `submit` inputs."""
    import numpy as np

    from void_server.pipelines.testing import FILL
    from void_test_harness import plate_frame, target_frame

    sys.path.insert(0, str(Path(__file__).parents[1] / "client"))
    from test_client_end_to_end import read_exr

    files = client.download_results(job_id, str(out))
    assert len(files) == frames + 1  # the frames and manifest.json
    for i in range(frames):
        ch = read_exr(out / ("clean.%04d.exr" % (i + 1)))
        expected = plate_frame(i)
        expected[target_frame(i) > 0.5] = FILL
        np.testing.assert_allclose(np.stack([ch["R"], ch["G"], ch["B"]], -1), expected, atol=1e-6)
