"""ClusterHost: stands where the single-machine PipelineHost stands (the API and job manager use either), connects
to Ray and keeps one GpuWorker actor per free GPU slot of the cluster, each served by one worker thread of the
job manager (the same queue order as the single-machine server: a worker thread claims the next job only while its
GPU is idle). Machines joining add actors; an actor or machine lost ends its thread and its job is queued again."""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Dict, List, Optional

from ..jobs.host_base import BackgroundHost, HostView
from . import import_ray
from .actor import GpuWorker
from .executor import RayExecutor
from .transport import STORAGES

log = logging.getLogger("void_server")
SCAN_S = 1.0  # how often the pool looks for new GPU capacity and dead workers
# A worker loads the VOID models and warms up (compiling ~5 min on a cold cache); a stuck start is dropped.
START_TIMEOUT_S = 1200.0


class ClusterView(HostView):
    """Every worker, its machine, GPU and job."""

    def describe(self) -> Dict[str, object]:
        return {"cluster": self.host.address, "storage": self.host.storage, "resource": self.host.resource,
                "gpus_per_worker": self.host.units, "workers": self.host.workers_info()}


class ClusterHost(BackgroundHost):
    def __init__(self, config: Any) -> None:
        super().__init__()
        if config.cluster_storage not in STORAGES:
            raise ValueError("cluster storage %r is not one of %s" % (config.cluster_storage, ", ".join(STORAGES)))
        self.config, self.name = config, config.pipeline
        self.address = config.cluster
        self.storage, self.resource = config.cluster_storage, config.cluster_resource
        self.units = int(getattr(config, "gpus_per_worker", 1) or 1)  # of the resource, per worker
        self.problem: Optional[str] = None
        self.pipeline: Optional[ClusterView] = None
        self._label: Optional[str] = None
        self._lock = threading.Lock()
        self._executors: Dict[str, RayExecutor] = {}
        self._starting: Dict[str, Any] = {}
        self._threads_started = 0
        self.ray = None

    # -- the PipelineHost interface ------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            self.ray = import_ray()
            address = None if self.address in ("local",) else self.address
            self.ray.init(address=address, namespace="void", log_to_driver=False, ignore_reinit_error=True)
            self.pipeline = ClusterView(self)
            log.info("connected to the Ray cluster at %s: %s", self.address, self.ray.cluster_resources())
        except Exception as e:
            self.problem = "cannot use the Ray cluster at %s: %s: %s" % (self.address, type(e).__name__, e)
            log.error(self.problem)
        self._done.set()

    @property
    def label(self) -> str:
        return self._label or self.name

    def workers(self, manager) -> List[threading.Thread]:
        """The job manager's threads in cluster mode: the pool keeper, which starts one worker thread per actor."""
        return [threading.Thread(target=self._keep_pool, args=(manager,), name="cluster-pool", daemon=True)]

    # -- the pool ------------------------------------------------------------------------------------------------
    def workers_info(self) -> List[Dict[str, object]]:
        with self._lock:
            out = [dict(e.info, job=e.job, workdir=e.workdir, state="running" if e.job else "idle")
                   for e in self._executors.values()]
            out += [{"worker": w, "state": "starting"} for w in self._starting]
        return out

    def _live_nodes(self) -> Dict[str, float]:
        """Every live Ray node -> its units of the worker resource (a machine that left is no longer listed)."""
        return {n["NodeID"]: float((n.get("Resources") or {}).get(self.resource, 0))
                for n in self.ray.nodes() if n.get("Alive")}

    def _slots(self, nodes: Dict[str, float]) -> int:
        # counted per machine: one worker's units must all be on one machine (a job never spans machines)
        return sum(int(units // self.units) for units in nodes.values())

    def _keep_pool(self, manager) -> None:
        self.wait()
        while self.problem is None and not manager.stopping:
            try:
                self._scan(manager)
            except Exception:
                log.exception("cluster pool")
            with manager.wakeup:
                manager.wakeup.wait(SCAN_S)

    def _scan(self, manager) -> None:
        """Drop the workers of machines that left, start workers on new capacity, check the idle ones."""
        nodes = self._live_nodes()
        for e in list(self._executors.values()):
            if e.alive and e.node not in nodes:
                log.warning("worker %s: its machine %s (Ray node %s) left the cluster", e.name, e.info.get("host"),
                            e.node)
                e.lose("its machine left the cluster")  # a running job is requeued by its worker thread
        with self._lock:
            for wid in [w for w, e in self._executors.items() if not e.alive]:
                log.warning("worker %s is gone", wid)
                del self._executors[wid]
            missing = self._slots(nodes) - len(self._executors) - len(self._starting)
        for _ in range(max(0, missing)):
            self._start_worker(manager)
        for e in list(self._executors.values()):
            if e.job is None and e.alive:
                e.check()  # notices a lost idle worker, refreshes what health shows

    def _actor_options(self) -> Dict[str, Any]:
        # --gpus-per-worker N: the actor reserves N GPUs (Ray sets CUDA_VISIBLE_DEVICES to them) and its pipeline
        # gets the same config, so it spreads each job over them
        n = self.units
        need = {"num_gpus": n} if self.resource == "GPU" else {"resources": {self.resource: n}}
        # threads: run, plus progress/cancel/describe calls while it runs; no restarts (the job is retried instead)
        return dict(need, num_cpus=0, max_concurrency=4, max_restarts=0)

    def _start_worker(self, manager) -> None:
        wid = "w-" + uuid.uuid4().hex[:8]
        actor = self.ray.remote(GpuWorker).options(name="void-" + wid, **self._actor_options()).remote(
            wid, self.name, self.config)
        with self._lock:
            self._starting[wid] = actor
        threading.Thread(target=self._await_start, args=(manager, wid, actor), name="start-" + wid, daemon=True).start()

    def _await_start(self, manager, wid: str, actor) -> None:
        from ..jobs.worker import Worker

        try:
            info = self.ray.get(actor.describe.remote(), timeout=START_TIMEOUT_S)
        except Exception as e:
            log.error("worker %s did not start: %s: %s", wid, type(e).__name__, e)
            self.ray.kill(actor)
            with self._lock:
                self._starting.pop(wid, None)
            return
        executor = RayExecutor(actor, info, self.storage, self.config.jobs_dir)
        with self._lock:
            self._starting.pop(wid, None)
            self._executors[wid] = executor
            self._label = self._label or str(info.get("label"))
        if info.get("problem"):
            log.error("worker %s on %s cannot run jobs: %s", wid, info.get("host"), info["problem"])
            return  # kept (it holds its GPU slot and shows in health) but given no jobs
        log.info("worker %s ready on %s (GPU %s)", wid, info.get("host"), ",".join(info.get("gpus") or []) or "-")
        self._threads_started += 1
        Worker(manager, self._threads_started, executor=executor).start()
        manager.notify()
