"""The pipeline host loads its pipeline once, however often start-up asks."""
import threading

from void_server.config import ServerConfig
from void_server.jobs import pipeline_host
from void_server.jobs.pipeline_host import PipelineHost


def test_start_loading_twice_loads_once(tmp_path, monkeypatch):
    calls, release = [], threading.Event()
    real = pipeline_host.load_pipeline

    def counting(name, config):
        calls.append(name)
        release.wait(10)
        return real(name, config)

    monkeypatch.setattr(pipeline_host, "load_pipeline", counting)
    host = PipelineHost("testing", ServerConfig(data_dir=tmp_path, pipeline="testing"))
    host.start_loading()
    host.start_loading()  # the CLI and the app's start-up both ask
    release.set()
    assert host.wait(30) and host.ready
    assert calls == ["testing"]


class _Warmable:
    """A stand-in pipeline with the warm-up hooks (what the host looks for)."""

    name, label = "fake", "Fake"

    def __init__(self, by_default: bool, fail: bool = False) -> None:
        self.warm_up_by_default, self.fail, self.calls = by_default, fail, []
        self.ready_while_warming = None

    def warm_up(self):
        self.calls.append(1)
        self.ready_while_warming = HOST[0].ready  # jobs must not get the pipeline while it warms up
        self.message_while_warming = HOST[0].loading_message
        if self.fail:
            raise RuntimeError("out of memory while compiling")
        return {"vae": 1.0, "pass1": 2.0, "pass1.x": 0.5}

    def describe(self):
        return {}


HOST = []


def _host_with(tmp_path, monkeypatch, pipeline, warm_up):
    monkeypatch.setattr(pipeline_host, "load_pipeline", lambda name, config: pipeline)
    host = PipelineHost("testing", ServerConfig(data_dir=tmp_path, pipeline="testing", warm_up=warm_up))
    HOST[:] = [host]
    host.start_loading()
    assert host.wait(30)
    return host


def test_warm_up_runs_before_ready_where_asked_or_by_the_pipelines_default(tmp_path, monkeypatch):
    on_gpu = _Warmable(by_default=True)
    assert _host_with(tmp_path, monkeypatch, on_gpu, None).ready
    assert on_gpu.calls == [1] and on_gpu.ready_while_warming is False
    # health's problem while it warms up: still "loading" (clients wait on that word), and why it takes minutes
    assert on_gpu.message_while_warming.startswith("loading the 'testing' pipeline: warming up")
    assert HOST[0].loading_message == "loading the 'testing' pipeline"
    on_cpu = _Warmable(by_default=False)
    _host_with(tmp_path, monkeypatch, on_cpu, None)
    assert on_cpu.calls == []
    forced = _Warmable(by_default=False)
    _host_with(tmp_path, monkeypatch, forced, True)
    assert forced.calls == [1]
    refused = _Warmable(by_default=True)
    _host_with(tmp_path, monkeypatch, refused, False)
    assert refused.calls == []


def test_a_failed_warm_up_leaves_the_pipeline_ready_for_its_first_job(tmp_path, monkeypatch, caplog):
    broken = _Warmable(by_default=True, fail=True)
    host = _host_with(tmp_path, monkeypatch, broken, None)
    assert broken.calls == [1] and host.ready and host.problem is None
    assert "warm-up of pipeline 'fake' failed" in caplog.text
