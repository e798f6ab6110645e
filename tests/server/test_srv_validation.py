"""Bad specs and bad files are refused up front, each error naming the field and the problem."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import requests

from void_test_harness import H, W, ServerProcess, exr_plates, png_mattes, spec_for, write_exr

BASE = {
    "frames": {"first": 1, "last": 2},
    "prompt": "an empty wall",
    "inputs": {"plate": {"files": ["p.0001.exr", "p.0002.exr"]}, "target": {"files": ["t.0001.png", "t.0002.png"]}},
}


def _with(path, value):
    spec = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return spec


@pytest.mark.parametrize("path, value, field, words", [
    ("inputs.target", KeyError, "inputs.target", "needs inputs.target"),
    ("inputs.plate", KeyError, "inputs.plate", "inputs.plate is missing"),
    ("passes", 3, "passes", "1 or 2"),
    ("prompt", "   ", "prompt", "prompt is empty"),
    ("seeed", 1, "seeed", "Extra inputs"),
    ("frames", {"first": 10, "last": 2}, "frames", "before first frame"),
    ("steps_pass1", 0, "steps_pass1", "greater than or equal to 1"),
    ("mask_mode", "manual", "inputs.affected", "needs inputs.affected"),
    ("inputs.plate.files", ["p.0001.exr"], "inputs.plate.files", "1 files for the 2 frames"),
    ("inputs.target.files", ["t.0001.png", "../t.png"], "inputs.target.files", "not a plain file name"),
    ("inputs.plate.files", ["p.0001.xyz", "p.0002.xyz"], "inputs.plate.files", "unsupported file type"),
    ("inputs.plate", {"source": "path", "path": "/etc/p.####.exr"}, "inputs.plate.path", "--allowed-root"),
])
def test_bad_spec_names_field(testing_server, path, value, field, words):
    r = requests.post(testing_server.url + "/v1/jobs", json=_with(path, value))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field
    assert words in body["error"]


def _job_with(client, tmp_path, plates, mattes, **overrides):
    spec = spec_for(plates, mattes, 1, **overrides)
    job = client.create_job(spec)["id"]
    client.upload_inputs(job, "plate", [str(p) for p in plates])
    client.upload_inputs(job, "target", [str(p) for p in mattes])
    return job


def _start_error(client, job):
    from nuke_void.client import VoidError

    with pytest.raises(VoidError) as e:
        client.start(job)
    return e.value


def test_matte_of_another_size_is_refused_naming_both_sizes(client, tmp_path):
    plates = exr_plates(tmp_path, 1, 2)
    mattes = png_mattes(tmp_path / "small", 1, 2, size=(H - 4, W - 2))
    e = _start_error(client, _job_with(client, tmp_path, plates, mattes))
    assert e.status_code == 422 and e.field == "inputs.target"
    assert "%dx%d" % (W - 2, H - 4) in e.message and "%dx%d" % (W, H) in e.message


def test_exr_matte_without_the_channel_names_the_channels_it_has(client, tmp_path):
    plates = exr_plates(tmp_path, 1, 2)
    mattes = [write_exr(tmp_path / ("roto.%04d.exr" % f), {"R": np.zeros((H, W)), "G": np.zeros((H, W))})
              for f in (1, 2)]
    e = _start_error(client, _job_with(client, tmp_path, plates, mattes))
    assert e.field == "inputs.target"
    assert "roto.0001.exr" in e.message and "no 'alpha' channel" in e.message and "G, R" in e.message


def test_frames_of_different_sizes_are_refused(client, tmp_path):
    plates = exr_plates(tmp_path, 1, 2)
    mattes = png_mattes(tmp_path, 1, 2)
    cv2.imwrite(str(mattes[1]), np.zeros((H + 2, W), np.uint8))
    e = _start_error(client, _job_with(client, tmp_path, plates, mattes))
    assert e.field == "inputs.target" and "roto.0002.png" in e.message and "same size" in e.message


def test_a_file_that_is_not_an_image_is_refused(client, tmp_path):
    plates = exr_plates(tmp_path, 1, 2)
    plates[1].write_bytes(b"not an exr at all")
    mattes = png_mattes(tmp_path, 1, 2)
    e = _start_error(client, _job_with(client, tmp_path, plates, mattes))
    assert e.field == "inputs.plate" and "plate.0002.exr is not a readable EXR" in e.message


@pytest.mark.parametrize("value, words", [(0, "empty on every frame"), (255, "covers the whole frame on every frame")])
def test_target_empty_or_full_on_every_frame_is_refused_at_start(client, tmp_path, value, words):
    plates = exr_plates(tmp_path, 1, 2)
    mattes = png_mattes(tmp_path, 1, 2)
    for m in mattes:
        cv2.imwrite(str(m), np.full((H, W), value, np.uint8))
    job = _job_with(client, tmp_path, plates, mattes)
    e = _start_error(client, job)
    assert e.status_code == 422 and e.field == "inputs.target" and words in e.message
    assert client.status(job)["state"] == "created"  # nothing queued: fix the matte, upload it again, start


def test_shared_paths_inside_allowed_roots_only(tmp_path):
    shared = tmp_path / "shared"
    plates = exr_plates(shared, 1, 2)
    mattes = png_mattes(shared, 1, 2)
    outside = exr_plates(tmp_path / "elsewhere", 1, 2)
    server = ServerProcess(tmp_path / "data", args=["--allowed-root", str(shared), "--token", "s3cret"]).start()
    try:
        from nuke_void.client import VoidClient, VoidError

        anonymous = VoidClient(server.url, retries=0)
        with pytest.raises(VoidError) as e:
            anonymous.create_job({})
        assert e.value.status_code == 401 and e.value.field == "Authorization"
        assert anonymous.health()["ready"] is True  # health needs no token

        client = VoidClient(server.url, token="s3cret", retries=1)
        pattern = str(shared / "plate.####.exr")
        spec = spec_for([pattern], [str(shared / "roto.%04d.png")], 1, shared_paths=True, passes=1, steps_pass1=1)
        spec["frames"]["last"] = 2
        job = client.submit(spec, {})
        assert client.wait(job, poll=0.05)["state"] == "succeeded"

        spec["inputs"]["plate"]["path"] = str(tmp_path / "elsewhere" / "plate.####.exr")
        with pytest.raises(VoidError) as e:
            client.create_job(spec)
        assert e.value.field == "inputs.plate.path" and "outside the server's allowed roots" in e.value.message
        spec["inputs"]["plate"]["path"] = str(shared / "missing.####.exr")
        with pytest.raises(VoidError) as e:
            client.create_job(spec)
        assert e.value.field == "inputs.plate.path" and "missing.0001.exr does not exist" in e.value.message
        assert outside and plates and mattes
    finally:
        server.stop()


def test_server_without_void_weights_says_so(tmp_path):
    server = ServerProcess(tmp_path / "data", pipeline="void").start()
    try:
        health = server.health()
        assert health["ready"] is False and "void-server download" in health["problem"]
        r = requests.post(server.url + "/v1/jobs", json=BASE)
        assert r.status_code == 503 and "void-server download" in r.json()["error"]
        assert "void-server download" in server.read_log()
    finally:
        server.stop()
