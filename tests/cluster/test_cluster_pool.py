"""Jobs spread over both Ray workers; a worker killed mid-job: the job is queued again and finishes on the other
with the right output; health lists every worker with what it runs."""
from __future__ import annotations

import os
import signal

import numpy as np
import requests

from void_server.pipelines.testing import FILL
from void_test_harness import exr_plates, plate_frame, png_mattes, poll, spec_for, target_frame

from conftest import WORKERS
from test_cluster_api import read_exr


def workers(server) -> list:
    return requests.get(server.url + "/v1/health", timeout=10).json()["models"].get("workers", [])


def ready_workers(server) -> list:
    ws = [w for w in workers(server) if w.get("state") in ("idle", "running")]
    return ws if len(ws) >= WORKERS else []


def ran_on(status: dict) -> str:
    return next(n for n in status["notes"] if n.startswith("ran on worker ")).split()[3]


def submit(client, tmp_path, name: str, **overrides) -> str:
    plates = exr_plates(tmp_path / name, 1, 2)
    mattes = png_mattes(tmp_path / name, 1, 2)
    return client.submit(spec_for(plates, mattes, 1, **overrides),
                         {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})


def test_jobs_from_several_clients_spread_over_both_workers(testing_server, tmp_path):
    from nuke_void.client import VoidClient

    poll(lambda: ready_workers(testing_server), 120, 0.2, "both Ray workers to start")
    clients = [VoidClient(testing_server.url, retries=2, timeout=30) for _ in range(3)]
    jobs = [submit(c, tmp_path, "c%d_%d" % (i, k), steps_pass1=20) for i, c in enumerate(clients) for k in range(2)]
    finals = [clients[i // 2].wait(j, poll=0.1) for i, j in enumerate(jobs)]
    assert [f["state"] for f in finals] == ["succeeded"] * len(jobs)
    assert {ran_on(f) for f in finals} == {w["worker"] for w in ready_workers(testing_server)}


def test_a_worker_killed_mid_job_and_the_job_finishes_on_the_other(testing_server, client, tmp_path):
    poll(lambda: ready_workers(testing_server), 120, 0.2, "both Ray workers to start")
    job_id = submit(client, tmp_path, "kill", steps_pass1=60)
    running = poll(lambda: [w for w in workers(testing_server) if w.get("job") == job_id and
                            (client.status(job_id).get("step") or 0) >= 3], 60, 0.05, "the job to run on a worker")[0]
    assert running["pid"] and running["host"] and running["state"] == "running"
    os.kill(running["pid"], signal.SIGKILL)  # the worker process dies as in a crash

    final = client.wait(job_id, poll=0.1)
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2
    assert any("lost mid-job" in n for n in final["notes"]), final["notes"]
    assert ran_on(final) != running["worker"]

    out = client.download_results(job_id, str(tmp_path / "out"))
    assert len(out) == 3
    ch = read_exr(tmp_path / "out" / "clean.0002.exr")
    expected = plate_frame(1)
    expected[target_frame(1) > 0.5] = FILL
    np.testing.assert_allclose(np.stack([ch["R"], ch["G"], ch["B"]], -1), expected, atol=1e-6)
    # the pool replaces the lost worker: two workers again
    poll(lambda: ready_workers(testing_server), 120, 0.2, "the pool to start a replacement worker")
