"""Loads the server's pipeline in the background and keeps it resident between jobs.

`--concurrency N` starts N worker threads (jobs/manager.py); worker i runs its jobs on slot i of this host:
- a pipeline that owns GPUs (void) gets one instance per slot, slot i on `cuda:(i*g)` with g = --gpus-per-worker
  (its rank group would use cuda:i*g .. i*g+g-1): one job per GPU, never two jobs on one set of models. Several
  slots of several GPUs each are refused at start-up for now: rank 0 of each group would need torch.distributed's
  one default group of this process (check_rank_groups; --cluster gives each group a process of its own);
- a pipeline without per-instance job state (testing, preview) is loaded once and shared by every slot.
Slots load one after another on one thread (a VOID load holds the weights in host memory on the way to the GPU);
the server is ready when the first slot has loaded, and each worker starts taking jobs when its own slot has.
With --cluster the Ray actor builds a host of its own for the GPUs Ray gave it: always one slot there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional

from ..config import ConfigError
from ..pipelines import load_pipeline
from ..pipelines.base import Pipeline, PipelineUnavailable
from .host_base import BackgroundHost, HostView

log = logging.getLogger("void_server")

# Slot states shown in /v1/health (several slots only).
WAITING, LOADING, WARMING, READY, RUNNING, RELOADING, FAILED = (
    "waiting", "loading", "warming up", "ready", "running", "reloading", "failed")


# -- which slot runs where ---------------------------------------------------------------------------------------------

def slot_count(config: Any) -> int:
    """Worker slots this host serves: --concurrency on one machine; one in a cluster actor (the pool makes one
    actor per GPU group, and the actor gets the server's config, --concurrency included)."""
    if getattr(config, "cluster", None):
        return 1
    return max(1, int(getattr(config, "concurrency", 1) or 1))


def instance_per_slot(name: str) -> bool:
    """void: its models, placement hooks and caches are neither thread-safe nor small, and each slot owns its GPUs:
    one instance per slot (on the CPU too). testing / preview keep every job's state in `run`'s locals and the
    job's workdir (the instance holds read-only settings), so one instance serves every slot safely and costs
    nothing more to share."""
    return name == "void"


def configured_device(config: Any) -> Optional[str]:
    """The device the pipeline was told to use (`options: {device: ...}`), None when it picks for itself."""
    device = (getattr(config, "options", None) or {}).get("device")
    return str(device) if device else None


def device_base(device: Optional[str]) -> int:
    """The first GPU of slot 0: N in "cuda:N" (0 for "cuda" or none)."""
    if device and ":" in device:
        return int(device.split(":", 1)[1])
    return 0


def slot_device(index: int, gpus_per_worker: int, visible: int, base: int = 0) -> str:
    """Slot `index`'s device: cuda:(base + index*g); its rank group uses that GPU and the g-1 after it.
    Raises ValueError when those GPUs are not all visible."""
    first = base + index * gpus_per_worker
    if first + gpus_per_worker > visible:
        raise ValueError("slot %d needs cuda:%d..cuda:%d but %d GPU%s visible"
                         % (index, first, first + gpus_per_worker - 1, visible, " is" if visible == 1 else "s are"))
    return "cuda:%d" % first


def check_gpu_count(slots: int, gpus_per_worker: int, visible: int, base: int = 0) -> None:
    """--concurrency x --gpus-per-worker GPUs must be visible: a ConfigError (exit status 2) before the server
    binds, rather than a slot that fails minutes later or two jobs crammed onto one GPU."""
    needed = base + slots * gpus_per_worker
    if needed <= visible:
        return
    start = " from cuda:%d" % base if base else ""
    cpu = " (or --pipeline-option device=cpu to run every worker on the CPU)" if visible == 0 else ""
    raise ConfigError("--concurrency %d x --gpus-per-worker %d needs %d GPU%s%s, but %d GPU%s visible "
                      "(CUDA_VISIBLE_DEVICES=%s): lower --concurrency or --gpus-per-worker%s"
                      % (slots, gpus_per_worker, slots * gpus_per_worker, "" if slots * gpus_per_worker == 1 else "s",
                         start, visible, " is" if visible == 1 else "s are",
                         os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), cpu))


def check_rank_groups(name: str, slots: int, gpus_per_worker: int) -> None:
    """VOID over several GPUs keeps rank 0 in this process on torch.distributed's default group, and a process has
    one (parallel/group.py refuses a second): a second multi-GPU slot could never load. Said at start-up."""
    if name != "void" or slots <= 1 or gpus_per_worker <= 1:
        return
    raise ConfigError("--concurrency %d with --gpus-per-worker %d: a multi-GPU job's rank 0 runs in the server process "
                      "on its one torch.distributed group, so one server runs one multi-GPU job at a time: use "
                      "--concurrency 1, --gpus-per-worker 1 (one job per GPU), or --cluster (one Ray worker per %d "
                      "GPUs, each in a process of its own)" % (slots, gpus_per_worker, gpus_per_worker))


def visible_gpus() -> Optional[int]:
    """CUDA devices this process sees; None when torch cannot be imported (the load then reports the install)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_devices(name: str, config: Any, slots: int,
                 count_gpus: Callable[[], Optional[int]] = visible_gpus) -> List[Optional[str]]:
    """One device per slot for a pipeline with an instance per slot (None: the pipeline picks, as before)."""
    device = configured_device(config)
    g = max(1, int(getattr(config, "gpus_per_worker", 1) or 1))
    check_rank_groups(name, slots, g)  # CPU groups (gloo) too
    if device is not None and not device.startswith("cuda"):
        return [device] * slots  # e.g. "cpu": every slot's instance computes there
    base = device_base(device)
    visible = count_gpus()
    if visible is None:  # no torch: every slot's load fails saying so; the devices are only for health
        return ["cuda:%d" % (base + i * g) for i in range(slots)]
    check_gpu_count(slots, g, visible, base)
    return [slot_device(i, g, visible, base) for i in range(slots)]


def with_device(config: Any, device: Optional[str]) -> Any:
    """The config one slot's pipeline is built from: the server's, with its device in `options`, where
    VoidPipeline.from_config reads it."""
    if device is None:
        return config
    return dataclasses.replace(config, options=dict(getattr(config, "options", None) or {}, device=device))


def _cuda_index(device: Optional[str]) -> Optional[int]:
    return device_base(device) if device and device.startswith("cuda") else None


@contextlib.contextmanager
def on_device(device: Optional[str]) -> Iterator[None]:
    """This thread's current CUDA device is the slot's while inside: code that says only "cuda" (a default
    `device="cuda"`, `torch.cuda.synchronize()`) then means the slot's GPU, not cuda:0."""
    index, torch = _cuda_index(device), sys.modules.get("torch")
    if index is None or torch is None or not torch.cuda.is_available():
        yield
        return
    with torch.cuda.device(index):
        yield


# -- the slots -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Slot:
    """One worker's pipeline (or, shared, every worker's), its config and where it is in its life."""

    index: int
    config: Any
    device: Optional[str]  # None: the pipeline picks (one slot, or a shared CPU pipeline)
    pipeline: Optional[Pipeline] = None
    problem: Optional[str] = None
    state: str = WAITING
    job: Optional[str] = None
    loaded: threading.Event = dataclasses.field(default_factory=threading.Event)  # loading over, ok or not
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one reload at a time

    def describe(self) -> Dict[str, object]:
        out: Dict[str, object] = {"slot": self.index, "device": self.device, "state": self.state}
        if self.job:
            out["job"] = self.job
        if self.problem:
            out["problem"] = self.problem
        if self.pipeline is not None:
            try:
                out["models"] = self.pipeline.describe()
            except Exception as e:  # one slot's describe() must not take health down
                out["models"] = {"error": "%s: %s" % (type(e).__name__, e)}
        return out


class SlotsView(HostView):
    """Several instances: health lists each slot's device and state. Workers take their own slot's pipeline."""

    def describe(self) -> Dict[str, object]:
        h = self.host
        return {"pipeline": h.name, "label": h.label,
                "gpus_per_worker": int(getattr(h.config, "gpus_per_worker", 1) or 1),
                "slots": [s.describe() for s in h.slots]}


class PipelineHost(BackgroundHost):
    def __init__(self, name: str, config: Any, slots: Optional[int] = None, per_slot: Optional[bool] = None,
                 count_gpus: Callable[[], Optional[int]] = visible_gpus) -> None:
        """`slots`: worker slots (default: slot_count(config)); `per_slot`: one instance per slot (default:
        instance_per_slot(name)); `count_gpus`: the visible GPU count (tests pass their own). Raises ConfigError
        when the slots need more GPUs than are visible."""
        super().__init__()
        self.name = name
        n = slot_count(config) if slots is None else max(1, int(slots))
        self.per_slot = n > 1 and (instance_per_slot(name) if per_slot is None else bool(per_slot))
        devices = plan_devices(name, config, n, count_gpus) if self.per_slot else [None]
        self.slots = [Slot(i, with_device(config, d), d) for i, d in enumerate(devices)]
        self._view = SlotsView(self)

    # -- what the API, the manager and the cluster actor read ---------------------------------------------------
    @property
    def config(self) -> Any:
        return self.slots[0].config

    @property
    def pipeline(self) -> Optional[Any]:  # type: ignore[override]
        """One instance: it, exactly as before (health shows its describe()). Several: a view for health, once
        any slot has loaded."""
        if not self.per_slot:
            return self.slots[0].pipeline
        return self._view if any(s.pipeline is not None for s in self.slots) else None

    @pipeline.setter
    def pipeline(self, pipeline: Optional[Pipeline]) -> None:
        """Slot 0's (the one or shared) instance, for callers that hand the host a pipeline of their own."""
        self.slots[0].pipeline = pipeline

    @property
    def label(self) -> str:
        loaded = next((s.pipeline for s in self.slots if s.pipeline is not None), None)
        return loaded.label if loaded is not None else self.name

    def slot(self, index: int) -> Slot:
        """Worker `index`'s slot (the one shared slot when the pipeline is shared)."""
        return self.slots[index] if self.per_slot else self.slots[0]

    def pipeline_for(self, index: int) -> Optional[Pipeline]:
        return self.slot(index).pipeline

    def wait_slot(self, index: int, timeout: Optional[float] = None) -> bool:
        return self.slot(index).loaded.wait(timeout)

    def slot_problem(self, index: int) -> Optional[str]:
        return self.slot(index).problem

    def memory_mode(self, index: int) -> str:
        return str(self.slot(index).config.memory_mode)

    @contextlib.contextmanager
    def running(self, index: int, job_id: str) -> Iterator[None]:
        """Worker `index` runs a job: its thread computes on its slot's GPU, and health shows the job there."""
        slot = self.slot(index)
        if self.per_slot:
            slot.job, slot.state = job_id, RUNNING
        try:
            with on_device(slot.device):
                yield
        finally:
            if self.per_slot:
                slot.job = None
                if slot.state == RUNNING:
                    slot.state = READY

    # -- loading -----------------------------------------------------------------------------------------------
    def load(self) -> None:
        try:
            for slot in self.slots:
                self._load_slot(slot)
                if slot.pipeline is not None:
                    self._done.set()  # ready at the first slot: jobs start while the others load
            if all(s.pipeline is None for s in self.slots):
                self.problem = self._all_failed()
        finally:
            for slot in self.slots:
                slot.loaded.set()  # never leave a worker waiting, whatever happened
            self._done.set()

    def _load_slot(self, slot: Slot) -> None:
        where = " (slot %d, %s)" % (slot.index, slot.device) if self.per_slot else ""
        slot.state = LOADING
        try:
            with on_device(slot.device):
                pipeline = load_pipeline(self.name, slot.config)
                self._warm_up(slot, pipeline, where)  # before the slot is handed out: no job runs meanwhile
            slot.pipeline = pipeline
            slot.state = READY
            log.info("pipeline '%s' loaded%s: %s", self.name, where, slot.pipeline.label)
        except PipelineUnavailable as e:
            slot.problem = str(e)
        except Exception as e:  # a broken install must show in /v1/health, not kill the server
            log.exception("loading pipeline '%s'%s failed", self.name, where)
            slot.problem = "loading the '%s' pipeline failed: %s: %s" % (self.name, type(e).__name__, e)
        if slot.problem:
            slot.state = FAILED
            log.error("pipeline '%s'%s is NOT available: %s", self.name, where, slot.problem)
        slot.loaded.set()

    @property
    def loading_message(self) -> str:
        if any(s.state == WARMING for s in self.slots):
            return ("loading the '%s' pipeline: warming up (compiling its graphs: minutes on a first start, much less "
                    "once DATA_DIR/compile-cache is warm)" % self.name)
        return super().loading_message

    @staticmethod
    def _warm_up(slot: Slot, pipeline: Pipeline, where: str) -> None:
        """The pipeline's warm_up() where the config asks for it (--warm-up; by default where the pipeline says so:
        on a GPU). A failed warm-up is logged and left to the first job, which loads the same way and has the
        memory-mode fallback."""
        warm = getattr(pipeline, "warm_up", None)
        wanted = getattr(slot.config, "warm_up", None)
        if warm is None or wanted is False or (wanted is None and not getattr(pipeline, "warm_up_by_default", False)):
            return
        slot.state = WARMING
        log.info("warming up pipeline '%s'%s: loading every model and compiling its graphs", pipeline.name, where)
        try:
            timings = warm()
        except Exception:
            log.warning("warm-up of pipeline '%s'%s failed; the first job will load what is missing", pipeline.name,
                        where, exc_info=True)
            return
        from ..pipelines.stage_clock import top_level  # (imports torch: only where a pipeline warms up)

        stages = top_level(timings)
        log.info("pipeline '%s'%s warmed up in %.1f s (%s)", pipeline.name, where, sum(stages.values()),
                 ", ".join("%s %.1f s" % kv for kv in stages.items()))

    def _all_failed(self) -> str:
        problems = [s.problem or "not loaded" for s in self.slots]
        if len(set(problems)) == 1:
            return problems[0]  # one slot, or the same cause everywhere (weights missing): said once
        return "; ".join("slot %d (%s): %s" % (s.index, s.device, p) for s, p in zip(self.slots, problems))

    def reload(self, memory_mode: str, index: int = 0) -> Pipeline:
        """Slot `index`'s pipeline again in another memory mode (after running out of GPU memory); that slot's
        later jobs keep it. Other slots are left alone: they have GPUs of their own. A shared pipeline is one
        slot, so every worker gets the reloaded one (it has no close() and holds no GPU: nothing is cut)."""
        slot = self.slot(index)
        with slot.lock:
            if slot.pipeline is not None and slot.config.memory_mode == memory_mode:
                return slot.pipeline  # another worker sharing it reloaded it already
            slot.state = RELOADING
            self._release(slot)
            slot.config = dataclasses.replace(slot.config, memory_mode=memory_mode)
            try:
                with on_device(slot.device):
                    slot.pipeline = load_pipeline(self.name, slot.config)
            except Exception as e:  # the slot stops taking jobs; health says why
                slot.problem = "reloading in memory mode %s failed: %s: %s" % (memory_mode, type(e).__name__, e)
                slot.state = FAILED
                raise
            slot.state = RUNNING if slot.job else READY
            log.warning("pipeline '%s'%s reloaded with memory mode %s", self.name,
                        " (slot %d, %s)" % (slot.index, slot.device) if self.per_slot else "", memory_mode)
            return slot.pipeline

    @staticmethod
    def _release(slot: Slot) -> None:
        close = getattr(slot.pipeline, "close", None)
        if close is not None:  # a multi-GPU pipeline's other ranks hold GPU memory in processes of their own
            close()
        slot.pipeline = None
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            with on_device(slot.device):
                torch.cuda.empty_cache()
