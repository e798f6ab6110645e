"""The pool's bookkeeping without a cluster (a stand-in for Ray's node table): workers on machines that left are
given up even when no Ray call has failed yet, and capacity is counted per machine in whole workers."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Dict, List

from void_server.cluster.pool import ClusterHost


class StubExecutor:
    def __init__(self, node: str) -> None:
        self.info, self.alive, self.job, self.lost = {"node": node, "host": "gpu-" + node}, True, None, None
        self.checked = 0

    name = property(lambda self: "w-" + self.info["node"])
    node = property(lambda self: self.info["node"])

    def lose(self, reason: str) -> None:
        self.alive, self.lost = False, reason

    def check(self) -> bool:
        self.checked += 1
        return self.alive


def host_with(nodes: List[Dict], executors: Dict[str, StubExecutor], gpus_per_worker: int) -> ClusterHost:
    config = SimpleNamespace(cluster_storage="shared", pipeline="testing", cluster="test", cluster_resource="void_gpu",
                             gpus_per_worker=gpus_per_worker)
    host = ClusterHost(config)
    host.ray = SimpleNamespace(nodes=lambda: nodes)
    host._executors = dict(executors)
    host.started = 0

    def start(manager) -> None:
        host.started += 1
    host._start_worker = start
    return host


def node(node_id: str, units: float, alive: bool = True) -> Dict:
    return {"NodeID": node_id, "Alive": alive, "Resources": {"void_gpu": units, "CPU": 8.0}}


def test_a_worker_whose_machine_left_is_given_up_and_new_capacity_gets_workers():
    kept, running_on_gone, idle_on_gone = StubExecutor("n1"), StubExecutor("n2"), StubExecutor("n4")
    running_on_gone.job = "job1"
    nodes = [node("n1", 4), node("n2", 4, alive=False), node("n3", 3)]  # n4 is not even listed any more
    host = host_with(nodes, {"a": kept, "b": running_on_gone, "c": idle_on_gone}, gpus_per_worker=2)
    host._scan(manager=None)
    assert running_on_gone.lost and idle_on_gone.lost and kept.lost is None
    assert list(host._executors) == ["a"]
    # 2 workers fit on n1 (4 units), 1 on n3 (3 units; the odd unit is no worker): one runs, two are started
    assert host.started == 2
    assert kept.checked == 1  # idle workers are asked whether they still answer


def test_units_on_different_machines_do_not_add_up_to_a_worker():
    host = host_with([node("n1", 1), node("n2", 1)], {}, gpus_per_worker=2)
    host._scan(manager=None)
    assert host.started == 0
