"""The lossy speed options on the wire: off by default, range-checked with errors that name the field."""
from __future__ import annotations

import pytest
import requests
from pydantic import ValidationError

from void_server.api.models import JobSpec

VALID = {"frames": {"first": 1, "last": 2}, "prompt": "an empty wall",
         "inputs": {"plate": {"files": ["p.0001.exr", "p.0002.exr"]}, "target": {"files": ["t.0001.png", "t.0002.png"]}}}


def test_off_by_default_and_carried_when_set():
    spec = JobSpec.model_validate(VALID)
    assert (spec.step_cache, spec.fp8_matmul) == (0.0, False)
    spec = JobSpec.model_validate(dict(VALID, step_cache=0.1, fp8_matmul=True))
    assert (spec.step_cache, spec.fp8_matmul) == (0.1, True)


@pytest.mark.parametrize("field, value, words", [
    ("step_cache", -0.1, "0 turns it off"),
    ("step_cache", 1.5, "outside 0..1"),
    ("step_cache", float("nan"), "outside 0..1"),
    ("step_cache", "fast", "valid number"),
    ("fp8_matmul", "maybe", "valid boolean"),
])
def test_bad_values_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ValidationError) as e:
        JobSpec.model_validate(dict(VALID, **{field: value}))
    (err,) = e.value.errors()
    assert err["loc"] == (field,) and words in err["msg"]


def test_the_server_answers_422_naming_step_cache(testing_server):
    r = requests.post(testing_server.url + "/v1/jobs", json=dict(VALID, step_cache=2))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "step_cache" and "0 turns it off" in r.json()["error"]


def test_the_request_maps_onto_the_pipeline_settings(tmp_path, monkeypatch):
    from void_server.jobs import inputs

    monkeypatch.setattr(inputs, "open_inputs", lambda spec, files: {inputs.InputRole.plate: object()})
    monkeypatch.setattr(inputs, "is_display_referred", lambda paths: False)
    monkeypatch.setattr(inputs, "input_paths", lambda spec, role, files: [])

    class Files:
        workdir = tmp_path

    spec = JobSpec.model_validate(dict(VALID, step_cache=0.15, fp8_matmul=True))
    s = inputs.pipeline_inputs(spec, Files(), "gpu", []).settings
    assert (s.step_cache, s.fp8_matmul) == (0.15, True)
