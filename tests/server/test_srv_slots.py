"""--concurrency N on one machine: a GPU pipeline gets one instance per worker slot, slot i on cuda:(i*g); a CPU
pipeline is shared; an out-of-memory reload touches only the slot that ran out. No GPU needed: the device is
planned from a GPU count the tests give, and a fake pipeline stands in for VOID."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, List, Optional

import pytest

from void_server.api.models import JobState
from void_server.config import ConfigError, ServerConfig
from void_server.jobs import pipeline_host, worker
from void_server.jobs.manager import JobManager
from void_server.jobs.pipeline_host import PipelineHost, check_gpu_count, plan_devices, slot_count, slot_device
from void_server.jobs.worker import Worker
from void_server.pipelines.base import RunSummary
from void_test_harness import BASE_SPEC_JSON


class FakeGpuPipeline:
    """Records where it ran; runs out of memory in mode gpu on the device named by option `oom_on`."""

    name = "testing"
    label = "FAKE GPU"

    def __init__(self, config: Any, barrier: Optional[threading.Barrier] = None) -> None:
        options = config.options or {}
        self.device = options.get("device")
        self.memory_mode = "gpu" if config.memory_mode == "auto" else config.memory_mode
        self.oom_on = options.get("oom_on")
        self.barrier, self.closed, self.ran = barrier, False, []

    def describe(self) -> dict:
        return {"pipeline": self.name, "device": self.device, "memory_mode": self.memory_mode}

    def run(self, inputs, sink, progress, should_cancel) -> RunSummary:
        self.ran.append(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait(20)  # both jobs at once, or the test fails
        if self.device == self.oom_on and self.memory_mode == "gpu":
            raise RuntimeError("CUDA out of memory (fake, %s)" % self.device)
        return RunSummary(frames_written=0)

    def close(self) -> None:
        self.closed = True


def fake_run_pipeline(pipeline, job_id, spec, files, memory_mode, progress, should_cancel, notes, run=None):
    """The worker's call without media: straight into its runner (the out-of-memory fallback)."""
    inputs = SimpleNamespace(settings=SimpleNamespace(memory_mode=memory_mode))
    summary = run(pipeline, inputs, None) if run else pipeline.run(inputs, None, progress, should_cancel)
    notes.extend(summary.notes)


def gpu_host(tmp_path, monkeypatch, slots: int = 2, options: Optional[dict] = None, barrier=None, gpus: int = 2):
    loaded: List[FakeGpuPipeline] = []

    def load(name: str, config: Any) -> FakeGpuPipeline:
        loaded.append(FakeGpuPipeline(config, barrier))
        return loaded[-1]

    monkeypatch.setattr(pipeline_host, "load_pipeline", load)
    monkeypatch.setattr(worker, "run_pipeline", fake_run_pipeline)
    config = ServerConfig(data_dir=tmp_path, pipeline="testing", concurrency=slots, options=options or {})
    return config, PipelineHost("testing", config, per_slot=True, count_gpus=lambda: gpus), loaded


def claimed_job(manager: JobManager) -> dict:
    job_id = manager.store.create(BASE_SPEC_JSON, "testing", "T")
    manager.files(job_id).create()
    manager.store.enqueue(job_id)
    return manager.store.claim_next("testing")


# -- device planning ------------------------------------------------------------------------------------------------

def test_slot_i_starts_at_gpu_i_times_gpus_per_worker():
    assert [slot_device(i, 1, 4) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [slot_device(i, 2, 4) for i in range(2)] == ["cuda:0", "cuda:2"]  # ranks on 0-1 and 2-3
    assert slot_device(1, 2, 8, base=2) == "cuda:4"
    with pytest.raises(ValueError, match="slot 2 needs cuda:4..cuda:5 but 4 GPUs are visible"):
        slot_device(2, 2, 4)


def test_more_slots_than_gpus_is_a_startup_error_naming_the_flags():
    check_gpu_count(4, 2, 8)
    with pytest.raises(ConfigError) as e:
        check_gpu_count(3, 2, 4)
    assert "--concurrency 3 x --gpus-per-worker 2 needs 6 GPUs, but 4 GPUs are visible" in str(e.value)
    config = ServerConfig(pipeline="void", concurrency=3)
    with pytest.raises(ConfigError, match="--concurrency 3 x --gpus-per-worker 1 needs 3 GPUs, but 1 GPU is"):
        PipelineHost("void", config, count_gpus=lambda: 1)  # before anything loads: the CLI exits with status 2


def test_several_multi_gpu_slots_in_one_process_are_refused_at_start_up():
    """Each VOID rank group keeps rank 0 on this process's one torch.distributed group (parallel/group.py)."""
    for options in ({}, {"device": "cpu"}):
        config = ServerConfig(pipeline="void", concurrency=2, gpus_per_worker=2, options=options)
        with pytest.raises(ConfigError, match="--concurrency 2 with --gpus-per-worker 2: .* or --cluster"):
            PipelineHost("void", config, count_gpus=lambda: 4)
    assert PipelineHost("void", ServerConfig(pipeline="void", gpus_per_worker=2), count_gpus=lambda: 0).slots


def test_void_gets_a_device_per_slot_and_cpu_slots_all_compute_on_the_cpu():
    config = ServerConfig(pipeline="void", concurrency=3)
    host = PipelineHost("void", config, count_gpus=lambda: 4)
    assert host.per_slot and [s.device for s in host.slots] == ["cuda:0", "cuda:1", "cuda:2"]
    assert [s.config.options["device"] for s in host.slots] == ["cuda:0", "cuda:1", "cuda:2"]  # VoidPipeline reads it
    assert plan_devices("testing", ServerConfig(concurrency=2, gpus_per_worker=2), 2, lambda: 4) == ["cuda:0", "cuda:2"]
    assert config.options == {}  # the server's own config is untouched
    cpu = ServerConfig(pipeline="void", concurrency=3, options={"device": "cpu"})
    assert plan_devices("void", cpu, 3, count_gpus=lambda: 0) == ["cpu"] * 3  # no GPU count check for the CPU
    based = ServerConfig(pipeline="void", concurrency=2, options={"device": "cuda:1"})
    assert plan_devices("void", based, 2, count_gpus=lambda: 3) == ["cuda:1", "cuda:2"]
    one = PipelineHost("void", ServerConfig(pipeline="void"), count_gpus=lambda: 0)
    assert not one.per_slot and one.slots[0].device is None  # one slot: the pipeline picks, as before


def test_a_cluster_actor_host_is_always_one_slot():
    assert slot_count(ServerConfig(concurrency=4)) == 4
    assert slot_count(ServerConfig(concurrency=4, cluster="auto")) == 1  # the actor gets the server's config


# -- instances, loading, health -------------------------------------------------------------------------------------

def test_a_cpu_pipeline_is_shared_and_keeps_the_single_health_shape(tmp_path):
    config = ServerConfig(data_dir=tmp_path, pipeline="testing", concurrency=3)
    host = PipelineHost("testing", config)
    host.load()
    assert not host.per_slot and host.pipeline_for(0) is host.pipeline_for(2) is host.pipeline
    assert host.pipeline.describe() == {"pipeline": "testing", "models": [], "step_delay": 0.0, "memory_mode": "gpu"}


def test_ready_at_the_first_slot_and_health_shows_each_slots_device_and_state(tmp_path, monkeypatch):
    config, host, loaded = gpu_host(tmp_path, monkeypatch)
    release = threading.Event()
    fake_load = pipeline_host.load_pipeline

    def slow_second(name: str, cfg: Any):
        if cfg.options["device"] == "cuda:1":
            release.wait(20)
        return fake_load(name, cfg)

    monkeypatch.setattr(pipeline_host, "load_pipeline", slow_second)
    host.start_loading()
    assert host.wait(20) and host.ready and not host.wait_slot(1, 0.05)
    slots = host.pipeline.describe()["slots"]
    assert [(s["slot"], s["device"], s["state"]) for s in slots] == [(0, "cuda:0", "ready"), (1, "cuda:1", "loading")]
    assert slots[0]["models"]["device"] == "cuda:0"
    release.set()
    assert host.wait_slot(1, 20)
    assert [s["state"] for s in host.pipeline.describe()["slots"]] == ["ready", "ready"]
    assert host.label == "FAKE GPU"


def test_a_slot_that_fails_to_load_stops_only_its_worker(tmp_path, monkeypatch):
    config, host, loaded = gpu_host(tmp_path, monkeypatch)
    fake_load = pipeline_host.load_pipeline

    def broken_second(name: str, cfg: Any):
        if cfg.options["device"] == "cuda:1":
            raise RuntimeError("CUDA error: uncorrectable ECC error encountered")
        return fake_load(name, cfg)

    monkeypatch.setattr(pipeline_host, "load_pipeline", broken_second)
    host.load()
    assert host.ready and host.problem is None and host.slot_problem(0) is None
    assert "uncorrectable ECC error" in host.slot_problem(1)
    assert host.pipeline.describe()["slots"][1]["state"] == "failed"
    manager = JobManager(config, host)
    assert not Worker(manager, 0)._cannot_run() and Worker(manager, 1)._cannot_run()
    manager.store.close()


# -- workers --------------------------------------------------------------------------------------------------------

def test_two_workers_run_two_jobs_at_once_on_their_own_instances(tmp_path, monkeypatch):
    barrier = threading.Barrier(2)
    config, host, loaded = gpu_host(tmp_path, monkeypatch, barrier=barrier)
    manager = JobManager(config, host)
    host.start_loading()
    jobs = [manager.store.create(BASE_SPEC_JSON, "testing", "T") for _ in range(2)]
    for job_id in jobs:
        manager.files(job_id).create()
        manager.store.enqueue(job_id)
    manager.launch()
    try:
        deadline = time.monotonic() + 30
        states = lambda: [manager.store.get(j)["state"] for j in jobs]  # noqa: E731
        while time.monotonic() < deadline and states() != ["succeeded"] * 2:
            time.sleep(0.05)
        assert states() == ["succeeded"] * 2
    finally:
        manager.shutdown()
    assert len(loaded) == 2 and loaded[0] is not loaded[1]
    assert [p.device for p in loaded] == ["cuda:0", "cuda:1"]
    assert [p.ran for p in loaded] == [["job-worker-0"], ["job-worker-1"]]  # each worker on its own slot, at once


def test_out_of_memory_reloads_only_the_slot_that_ran_out(tmp_path, monkeypatch):
    config, host, loaded = gpu_host(tmp_path, monkeypatch, options={"oom_on": "cuda:1"})
    host.load()
    first, second = loaded
    manager = JobManager(config, host)
    for index in (0, 1):
        Worker(manager, index).run_job(claimed_job(manager))
    states = [r["state"] for r in manager.store.all()]
    assert states == [JobState.succeeded.value] * 2
    assert host.pipeline_for(0) is first and not first.closed and first.memory_mode == "gpu"
    assert second.closed  # its rank group (a real VoidPipeline) would be stopped
    third = host.pipeline_for(1)
    assert third is loaded[2] and third.device == "cuda:1" and third.memory_mode == "model_offload"
    assert host.memory_mode(0) == "auto" and host.memory_mode(1) == "model_offload"
    notes = [n for r in manager.store.all() for n in (r["notes"] or [])]
    assert any("out of GPU memory in memory mode gpu: retried from the last finished stage in model_offload" in n
               for n in notes)
    models = host.pipeline.describe()["slots"]
    assert [m["models"]["memory_mode"] for m in models] == ["gpu", "model_offload"]
    manager.store.close()
