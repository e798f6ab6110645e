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
