"""`--cluster-storage object_store`: inputs and results travel through Ray's object store; the worker computes in
its own scratch folder, never in the server's data dir. `--gpus-per-worker 2`: each worker reserves two units."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from void_server.cluster.pool import SCAN_S
from void_test_harness import poll

from conftest import check_clean, cluster_server, health, ran_on, submit, wait_ready, workers

STORE, PAIR = "void_store", "void_pair"  # the head's 1 and 3 units (conftest.HEAD_RESOURCES)


@pytest.fixture(scope="module")
def store_server(tmp_path_factory, ray_address):
    server = cluster_server(tmp_path_factory.mktemp("store") / "data", ray_address, STORE,
                            "--cluster-storage", "object_store")
    yield server
    server.stop()


def test_object_store_jobs_run_outside_the_data_dir_with_the_right_results(store_server, tmp_path):
    from nuke_void.client import VoidClient

    client = VoidClient(store_server.url, retries=2, timeout=30)
    assert health(store_server)["models"]["storage"] == "object_store"
    wait_ready(store_server, 1)
    data = store_server.data_dir.resolve()
    jobs = [submit(client, tmp_path / ("s%d" % k), steps_pass1=30) for k in range(2)]
    running = poll(lambda: [w for w in workers(store_server) if w["job"] == jobs[0] and w["workdir"]], 60, 0.05,
                   "health to show where the job runs")[0]
    workdir = Path(running["workdir"])
    assert data not in workdir.resolve().parents and workdir.name == jobs[0]  # a scratch folder of the worker
    for job_id in jobs:
        final = client.wait(job_id, poll=0.1)
        assert final["state"] == "succeeded", final
        assert ran_on(final) == running["worker"]
        check_clean(client, job_id, tmp_path / ("out-" + job_id))
        server_job = data / "jobs" / job_id
        # the server holds the uploaded inputs and the results that came back, and nothing the pipeline made:
        # the testing pipeline leaves its stage checkpoints and log in the workdir it computes in
        assert not list((server_job / "work").rglob("*")), list((server_job / "work").rglob("*"))
        assert sorted(p.name for p in (server_job / "results").glob("clean.*.exr")) == ["clean.0001.exr",
                                                                                       "clean.0002.exr"]
    assert not workdir.exists()  # the worker's scratch folder is gone with the job


def test_a_two_unit_worker_reserves_two_units(ray_address, tmp_path):
    # 3 units on the cluster, 2 per worker: exactly one worker fits, and it holds 2
    server = cluster_server(tmp_path / "data", ray_address, PAIR, "--gpus-per-worker", "2")
    try:
        (w,) = wait_ready(server, 1)
        assert w["units"] == {PAIR: 2.0}
        assert w["gpus_per_worker"] == 2  # the config its pipeline was built with
        assert health(server)["models"]["gpus_per_worker"] == 2
        # over several pool scans, no second worker is started (not even one left pending) in the unit left over
        deadline = time.monotonic() + 3 * SCAN_S
        while time.monotonic() < deadline:
            assert [x["worker"] for x in workers(server)] == [w["worker"]]
            time.sleep(0.2)
    finally:
        server.stop()
