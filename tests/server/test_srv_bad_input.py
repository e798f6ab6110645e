"""Bad input: every kind gets a specific error and leaves nothing behind. Property-based (hypothesis) for the spec
and the file readers; the rest through a real server."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError

from nuke_void.client import VoidError
from void_server.api.models import JobSpec
from void_server.media.readers import open_clip
from void_server.media.sequences import MediaError
from void_test_harness import exr_plates, png_mattes, spec_for

VALID = {"frames": {"first": 1, "last": 2}, "prompt": "an empty wall",
         "inputs": {"plate": {"files": ["p.0001.exr", "p.0002.exr"]}, "target": {"files": ["t.0001.png", "t.0002.png"]}}}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELDS = ["frames", "frames.first", "frames.last", "prompt", "passes", "seed", "mask_mode", "steps_pass1", "fps",
          "inputs", "inputs.plate", "inputs.plate.files", "inputs.plate.source", "inputs.plate.path",
          "inputs.target.channel", "output", "memory_mode", "client", "unknown_field"]


def _mutated(path, value):
    spec = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[p]
    node[last] = value
    return spec


@given(st.sampled_from(FIELDS), json_values)
@settings(max_examples=300, deadline=None)
def test_spec_validator_only_ever_raises_validation_errors(path, value):
    try:
        JobSpec.model_validate(_mutated(path, value))
    except ValidationError as e:
        assert e.errors() and all(err["msg"] for err in e.errors())


@given(st.sampled_from(FIELDS), json_values)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_server_answers_any_spec_with_201_or_a_named_422(testing_server, path, value):
    r = requests.post(testing_server.url + "/v1/jobs", json=_mutated(path, value))
    assert r.status_code in (201, 422), r.text
    if r.status_code == 422:
        body = r.json()
        assert body["error"] and (body["field"] or body["detail"])
    else:
        requests.delete(testing_server.url + "/v1/jobs/" + r.json()["id"])


@given(st.binary(max_size=400))
@settings(max_examples=150, deadline=None)
def test_any_bytes_as_exr_or_png_are_a_media_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("bytes")
    for name in ("f.0001.exr", "f.0001.png"):
        path = folder / name
        path.write_bytes(data)
        try:
            clip = open_clip([path], [1], "plate")
            clip[0]
        except MediaError as e:
            assert name in str(e)


@given(st.floats(0.05, 0.95))
@settings(max_examples=25, deadline=None)
def test_a_truncated_file_is_a_media_error_naming_it(tmp_path_factory, keep):
    folder = tmp_path_factory.mktemp("cut")
    for path in exr_plates(folder, 1, 1) + png_mattes(folder, 1, 1):
        path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
        with pytest.raises(MediaError) as e:
            open_clip([path], [1], "plate" if path.suffix == ".exr" else "matte")[0]
        assert path.name in str(e.value)


def test_malformed_json_and_unknown_api_version(testing_server):
    r = requests.post(testing_server.url + "/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    r = requests.post(testing_server.url + "/v2/jobs", json=VALID)
    assert r.status_code == 404 and r.json()["field"] == "api_version" and "speaks v1" in r.json()["error"]
    r = requests.get(testing_server.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["field"] == "path"


def test_empty_prompt_and_mismatched_counts(testing_server):
    for spec, field, words in (
        (_mutated("prompt", ""), "prompt", "prompt is empty"),
        (_mutated("inputs.target.files", ["t.0001.png"]), "inputs.target.files", "1 files for the 2 frames"),
        (_mutated("frames", {"first": 1, "last": 1}), "inputs.plate.files", "2 files for the 1 frames"),
    ):
        r = requests.post(testing_server.url + "/v1/jobs", json=spec)
        assert r.status_code == 422 and r.json()["field"] == field and words in r.json()["error"], r.text


def test_a_frame_missing_in_the_middle_is_named(client, tmp_path):
    plates, mattes = exr_plates(tmp_path, 1, 3), png_mattes(tmp_path, 1, 3)
    job = client.create_job(spec_for(plates, mattes, 1))["id"]
    client.upload_inputs(job, "plate", [str(plates[0]), str(plates[2])])
    client.upload_inputs(job, "target", [str(p) for p in mattes])
    with pytest.raises(VoidError) as e:
        client.start(job)
    assert e.value.status_code == 409 and e.value.field == "inputs.plate" and "plate.0002.exr" in e.value.message
    assert client.status(job)["state"] == "created"


def test_plate_and_matte_over_different_frame_ranges_are_refused(tmp_path):
    from void_test_harness import ServerProcess

    shared = tmp_path / "shared"
    exr_plates(shared, 1, 3)
    png_mattes(shared, 2, 3)  # frames 2-4 where the plate has 1-3
    server = ServerProcess(tmp_path / "data", args=["--allowed-root", str(shared)]).start()
    try:
        spec = spec_for([str(shared / "plate.####.exr")], [str(shared / "roto.####.png")], 1, shared_paths=True)
        spec["frames"]["last"] = 3
        r = requests.post(server.url + "/v1/jobs", json=spec)
        assert r.status_code == 422 and r.json()["field"] == "inputs.target.path"
        assert "roto.0001.png does not exist" in r.json()["error"]
        assert requests.get(server.url + "/v1/jobs").json() == []  # nothing was created
    finally:
        server.stop()


def test_a_single_frame_and_non_ascii_names_with_spaces_work(client, tmp_path):
    folder = tmp_path / "plâte dir ü"
    plates, mattes = exr_plates(folder, 7, 1), png_mattes(folder, 7, 1)
    plate = plates[0].rename(folder / "plâte ü 0007.exr")
    matte = mattes[0].rename(folder / "rotö 0007.png")
    spec = spec_for([plate], [matte], 7, passes=1, steps_pass1=1)
    job = client.submit(spec, {"plate": [str(plate)], "target": [str(matte)]})
    assert client.wait(job, poll=0.05)["state"] == "succeeded"
    out = client.download_results(job, str(tmp_path / "out ü"))
    assert sorted(p.rsplit("/", 1)[-1] for p in out) == ["clean.0007.exr", "manifest.json"]


def test_truncated_plate_fails_the_job_naming_the_file_and_keeps_nothing(client, testing_server, tmp_path):
    from nuke_void.client import JobFailed

    plates, mattes = exr_plates(tmp_path, 1, 2), png_mattes(tmp_path, 1, 2)
    data = plates[1].read_bytes()
    plates[1].write_bytes(data[: len(data) - 200])  # the header reads; the pixels do not
    job = client.submit(spec_for(plates, mattes, 1, passes=1, steps_pass1=1),
                        {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})
    with pytest.raises(JobFailed) as e:
        client.wait(job, poll=0.05)
    assert "plate.0002.exr" in e.value.message and ("truncated" in e.value.message or "not a readable" in e.value.message)
    results = testing_server.data_dir / "jobs" / job / "results"
    assert not any(results.iterdir())
    assert np.isfinite(client.status(job)["updated_at"])
