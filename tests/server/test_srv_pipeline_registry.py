"""load_pipeline: every name plugs in the same way; a VOID server without weights says how to get them."""
from __future__ import annotations

import pytest

from void_server.config import ServerConfig
from void_server.pipelines import load_pipeline
from void_server.pipelines.base import PipelineUnavailable


@pytest.mark.parametrize("name", ["testing", "preview"])
def test_pipelines_load_with_the_same_interface(tmp_path, name):
    pipeline = load_pipeline(name, ServerConfig(data_dir=tmp_path, pipeline=name))
    assert pipeline.name == name and pipeline.label
    assert isinstance(pipeline.describe(), dict) and callable(pipeline.run)


def test_void_without_weights_names_the_download_command(tmp_path):
    with pytest.raises(PipelineUnavailable) as e:
        load_pipeline("void", ServerConfig(data_dir=tmp_path, model_dir=tmp_path / "none"))
    assert "void-server download" in str(e.value) and str(tmp_path / "none") in str(e.value)


def test_unknown_pipeline_is_an_error(tmp_path):
    with pytest.raises(ValueError) as e:
        load_pipeline("vod", ServerConfig(data_dir=tmp_path))
    assert "'vod'" in str(e.value) and "testing" in str(e.value)
