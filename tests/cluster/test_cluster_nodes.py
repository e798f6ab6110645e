"""Machines joining and leaving while jobs run, simulated by Ray nodes added to and removed from the local test
cluster (each node carries the `void_node` resource, one worker's worth): a machine that joins gets a worker that
takes queued jobs; a machine lost mid-job sends its job back to the queue, it finishes on another machine with the
right output, and its status says it was retried. No server restart anywhere."""
from __future__ import annotations

import os
import signal
from typing import Callable, List, Tuple

import pytest
from ray._private import ray_constants

from void_test_harness import poll

from conftest import check_clean, cluster_server, ran_on, submit, wait_ready, workers

NODE = "void_node"  # none on the head: only the machines these tests add have it


@pytest.fixture(scope="module")
def node_server(tmp_path_factory, ray_address):
    server = cluster_server(tmp_path_factory.mktemp("nodes") / "data", ray_address, NODE)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def machines(ray_cluster) -> Tuple[Callable[[], object], List[object]]:
    added: List[object] = []

    def add():
        node = ray_cluster.add_node(num_cpus=0, resources={NODE: 1})
        added.append(node)
        return node

    yield add, added
    for node in added:
        ray_cluster.remove_node(node, allow_graceful=False)


@pytest.fixture
def client(node_server):
    from nuke_void.client import VoidClient

    return VoidClient(node_server.url, retries=2, timeout=30)


def test_a_machine_joining_gets_a_worker_that_takes_the_queued_jobs(node_server, machines, client, tmp_path):
    add, _ = machines
    assert workers(node_server) == []  # no machine with the resource yet
    jobs = [submit(client, tmp_path / ("q%d" % k)) for k in range(2)]
    assert [client.status(j)["state"] for j in jobs] == ["queued", "queued"]

    node = add()
    (w,) = wait_ready(node_server, 1)
    assert w["node"] == node.node_id and w["ip"] == "127.0.0.1" and w["units"] == {NODE: 1.0}
    for job_id in jobs:
        final = client.wait(job_id, poll=0.1)
        assert final["state"] == "succeeded" and final["attempts"] == 1, final
        assert ran_on(final) == w["worker"]


def test_a_machine_lost_mid_job_and_the_job_finishes_on_another(node_server, machines, ray_cluster, client, tmp_path):
    add, added = machines
    while len(added) < 2:
        add()
    before = wait_ready(node_server, 2)
    assert {w["node"] for w in before} == {n.node_id for n in added}  # one worker per machine

    job_id = submit(client, tmp_path / "lost", steps_pass1=60)
    running = poll(lambda: [w for w in workers(node_server) if w["job"] == job_id and
                            (client.status(job_id).get("step") or 0) >= 3], 60, 0.05, "the job to run")[0]
    doomed = next(n for n in added if n.node_id == running["node"])
    ray_cluster.remove_node(doomed, allow_graceful=False)  # the whole machine goes, as in a power cut
    added.remove(doomed)

    final = client.wait(job_id, poll=0.1)
    assert final["state"] == "succeeded", final
    assert final["attempts"] == 2
    retried = [n for n in final["notes"] if n.startswith("retried: ")]
    assert len(retried) == 1 and running["worker"] in retried[0] and "lost mid-job" in retried[0], final["notes"]
    (survivor,) = [w for w in before if w["node"] != doomed.node_id]
    assert ran_on(final) == survivor["worker"]
    check_clean(client, job_id, tmp_path / "out")
    # health: the lost machine's worker is no longer listed, the other one is
    assert [w["worker"] for w in wait_ready(node_server, 1)] == [survivor["worker"]]


def test_a_machine_that_stops_answering_mid_job_is_given_up(node_server, machines, ray_cluster, client, tmp_path):
    """A frozen machine or a cut network: nothing dies that could tell the server, the machine just goes silent
    (its raylet and worker stopped). Ray's node health check declares it dead; the job runs elsewhere."""
    add, added = machines
    while len(added) < 2:
        add()
    before = wait_ready(node_server, 2)
    job_id = submit(client, tmp_path / "frozen", steps_pass1=60)
    running = poll(lambda: [w for w in workers(node_server) if w["job"] == job_id and
                            (client.status(job_id).get("step") or 0) >= 3], 60, 0.05, "the job to run")[0]
    frozen = next(n for n in added if n.node_id == running["node"])
    pids = [running["pid"]] + [p.process.pid for p in frozen.all_processes[ray_constants.PROCESS_TYPE_RAYLET]]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        final = client.wait(job_id, poll=0.1)
        assert final["state"] == "succeeded" and final["attempts"] == 2, final
        assert any(running["worker"] in n and "lost mid-job" in n for n in final["notes"]), final["notes"]
        (other,) = [w for w in before if w["node"] != frozen.node_id]
        assert ran_on(final) == other["worker"]
        check_clean(client, job_id, tmp_path / "out")
        assert [w["worker"] for w in wait_ready(node_server, 1)] == [other["worker"]]
        # the machine wakes up: Ray does not take it back, its worker ends instead of running the job on
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        poll(lambda: not any(alive(pid) for pid in pids), 30, 0.2, "the thawed machine's raylet and worker to exit")
    finally:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        ray_cluster.remove_node(frozen, allow_graceful=False)
        added.remove(frozen)


def alive(pid: int) -> bool:
    """Running or stopped; not exited (a zombie has exited)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
