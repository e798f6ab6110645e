"""Jobs spread over both Ray workers; a worker killed mid-job: the job is queued again and finishes on the other
with the right output; health lists every worker with its machine, Ray node, reserved units and running job."""
from __future__ import annotations

import os
import signal

from void_test_harness import poll

from conftest import RESOURCE, WORKERS, check_clean, health, ran_on, submit, wait_ready, workers


def test_jobs_from_several_clients_spread_over_both_workers(testing_server, tmp_path):
    from nuke_void.client import VoidClient

    wait_ready(testing_server, WORKERS)
    clients = [VoidClient(testing_server.url, retries=2, timeout=30) for _ in range(3)]
    jobs = [submit(c, tmp_path / ("c%d_%d" % (i, k)), steps_pass1=20) for i, c in enumerate(clients) for k in range(2)]
    finals = [clients[i // 2].wait(j, poll=0.1) for i, j in enumerate(jobs)]
    assert [f["state"] for f in finals] == ["succeeded"] * len(jobs)
    assert {ran_on(f) for f in finals} == {w["worker"] for w in wait_ready(testing_server, WORKERS)}


def test_health_lists_every_worker_with_its_node_units_and_job(testing_server, client, tmp_path):
    idle = wait_ready(testing_server, WORKERS)
    h = health(testing_server)
    assert h["ready"] and h["models"]["resource"] == RESOURCE and h["models"]["gpus_per_worker"] == 1
    for w in idle:
        assert w["state"] == "idle" and w["job"] is None and w["workdir"] is None
        assert w["host"] and w["pid"] and w["ip"] == "127.0.0.1" and len(w["node"]) == 56  # a Ray node id (hex)
        assert w["units"] == {RESOURCE: 1.0} and w["gpus"] == []  # no real GPUs here: the custom resource's unit
    job_id = submit(client, tmp_path / "h", steps_pass1=40)
    running = poll(lambda: [w for w in workers(testing_server) if w["job"] == job_id and w["workdir"]], 60, 0.05,
                   "health to show the job on a worker")[0]
    assert running["state"] == "running"
    assert running["workdir"] == str(testing_server.data_dir / "jobs" / job_id)  # shared storage: in place
    assert client.wait(job_id, poll=0.1)["state"] == "succeeded"
    assert ran_on(client.status(job_id)) == running["worker"]


def test_a_worker_killed_mid_job_and_the_job_finishes_on_the_other(testing_server, client, tmp_path):
    wait_ready(testing_server, WORKERS)
    job_id = submit(client, tmp_path / "kill", steps_pass1=60)
    running = poll(lambda: [w for w in workers(testing_server) if w.get("job") == job_id and
                            (client.status(job_id).get("step") or 0) >= 3], 60, 0.05, "the job to run on a worker")[0]
    assert running["pid"] and running["host"] and running["state"] == "running"
    os.kill(running["pid"], signal.SIGKILL)  # the worker process dies as in a crash

    final = client.wait(job_id, poll=0.1)
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2
    assert any("lost mid-job" in n for n in final["notes"]), final["notes"]
    assert ran_on(final) != running["worker"]
    check_clean(client, job_id, tmp_path / "out")
    # the pool replaces the lost worker: two workers again, the dead one no longer listed
    again = wait_ready(testing_server, WORKERS)
    assert running["worker"] not in {w["worker"] for w in again}
