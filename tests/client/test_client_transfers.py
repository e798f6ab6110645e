"""Resumable, checksummed transfers: an upload cut mid-file resumes from the bytes the server kept."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import requests

from nuke_void.client import VoidError
from void_test_harness import H, W, cut_upload, poll, spec_for, write_exr, png_mattes


def _noisy_plate(path):
    """An EXR that does not compress much, so it spans many network chunks."""
    rng = np.random.default_rng(7)
    return write_exr(path, {c: rng.random((H * 8, W * 8), dtype=np.float32) for c in "RGB"})


def test_upload_resumes_after_cut_connection(client, testing_server, tmp_path):
    plate = _noisy_plate(tmp_path / "plate.0001.exr")
    matte = png_mattes(tmp_path, 1, 1, size=(H * 8, W * 8))[0]
    job = client.create_job(spec_for([plate], [matte], 1, passes=1, steps_pass1=1))["id"]
    data = plate.read_bytes()
    half = len(data) // 2
    url_path = "/v1/jobs/%s/inputs/plate/%s" % (job, plate.name)

    sock = cut_upload(url_path, testing_server.port, data[:half], len(data))
    got = poll(lambda: (lambda st: st if st["size"] == half else None)(
        requests.get(testing_server.url + url_path).json()), what="the server to store the first half")
    sock.close()
    assert got["complete"] is False

    ranges = []
    real_put = client.session.put

    def recording_put(url, **kwargs):
        ranges.append(kwargs["headers"].get("Content-Range"))
        return real_put(url, **kwargs)

    client.session.put = recording_put
    client.upload_inputs(job, "plate", [str(plate)])
    client.upload_inputs(job, "target", [str(matte)])
    assert ranges[0] == "bytes %d-%d/%d" % (half, len(data) - 1, len(data))  # only the second half was sent

    st = requests.get(testing_server.url + url_path).json()
    assert st["complete"] and st["size"] == len(data) and st["sha256"] == hashlib.sha256(data).hexdigest()
    client.start(job)
    assert client.wait(job, poll=0.05)["state"] == "succeeded"


def test_corrupted_upload_is_rejected_and_discarded(client, testing_server, tmp_path):
    plate = _noisy_plate(tmp_path / "plate.0001.exr")
    matte = png_mattes(tmp_path, 1, 1, size=(H * 8, W * 8))[0]
    job = client.create_job(spec_for([plate], [matte], 1, passes=1))["id"]
    url = testing_server.url + "/v1/jobs/%s/inputs/plate/%s" % (job, plate.name)
    r = requests.put(url, data=plate.read_bytes(), headers={"X-Content-SHA256": "0" * 64})
    assert r.status_code == 422
    assert r.json()["field"] == "X-Content-SHA256" and "upload it again" in r.json()["error"]
    assert requests.get(url).json() == {"role": "plate", "name": plate.name, "size": 0, "sha256": None, "complete": False}


def test_upload_of_an_unlisted_file_or_after_start_is_refused(client, testing_server, tmp_path):
    plate = _noisy_plate(tmp_path / "plate.0001.exr")
    matte = png_mattes(tmp_path, 1, 1, size=(H * 8, W * 8))[0]
    spec = spec_for([plate], [matte], 1, passes=1, steps_pass1=1)
    job = client.create_job(spec)["id"]
    with pytest.raises(VoidError) as e:
        client._send("PUT", "/jobs/%s/inputs/plate/other.exr" % job, data=b"x")
    assert e.value.status_code == 404 and e.value.field == "inputs.plate.files" and "other.exr" in e.value.message

    with pytest.raises(VoidError) as e:
        client.start(job)
    assert e.value.status_code == 409 and e.value.field == "inputs.plate" and "plate.0001.exr" in e.value.message

    client.upload_inputs(job, "plate", [str(plate)])
    client.upload_inputs(job, "target", [str(matte)])
    client.start(job)
    with pytest.raises(VoidError) as e:
        client._send("PUT", "/jobs/%s/inputs/plate/%s" % (job, plate.name), data=b"x")
    assert e.value.status_code == 409 and "before it starts" in e.value.message
    client.wait(job, poll=0.05)


def test_download_resumes_from_a_partial_file(client, tmp_path):
    plate = _noisy_plate(tmp_path / "plate.0001.exr")
    matte = png_mattes(tmp_path, 1, 1, size=(H * 8, W * 8))[0]
    spec = spec_for([plate], [matte], 1, passes=1, steps_pass1=1)
    job = client.submit(spec, {"plate": [str(plate)], "target": [str(matte)]})
    client.wait(job, poll=0.05)
    info = next(f for f in client.results(job) if f["name"] == "clean.0001.exr")
    whole = requests.get(client.api + "/jobs/%s/results/clean.0001.exr" % job).content
    out = tmp_path / "out"
    out.mkdir()
    (out / "clean.0001.exr.part").write_bytes(whole[: len(whole) // 3])  # what a dropped download left

    ranges = []
    real_get = client.session.get

    def recording_get(url, **kwargs):
        ranges.append((kwargs.get("headers") or {}).get("Range"))
        return real_get(url, **kwargs)

    client.session.get = recording_get
    client.download_results(job, str(out))
    assert "bytes=%d-" % (len(whole) // 3) in ranges
    assert (out / "clean.0001.exr").read_bytes() == whole
    assert hashlib.sha256(whole).hexdigest() == info["sha256"]
    assert not (out / "clean.0001.exr.part").exists()


def test_download_cut_mid_stream_resumes_with_a_range(client, tmp_path):
    """The connection drops after part of the body: the client keeps the .part and asks for the rest."""
    plate = _noisy_plate(tmp_path / "plate.0001.exr")
    matte = png_mattes(tmp_path, 1, 1, size=(H * 8, W * 8))[0]
    job = client.submit(spec_for([plate], [matte], 1, passes=1, steps_pass1=1),
                        {"plate": [str(plate)], "target": [str(matte)]})
    client.wait(job, poll=0.05)
    ranges, real_get = [], client.session.get

    def cutting_get(url, **kwargs):
        ranges.append((kwargs.get("headers") or {}).get("Range"))
        r = real_get(url, **kwargs)
        if len(ranges) == 1:  # the first transfer dies after 1000 bytes
            body = r.iter_content

            def cut(chunk_size=1):
                yield next(body(1000))
                raise requests.exceptions.ChunkedEncodingError("connection reset by peer")
            r.iter_content = cut
        return r

    client.session.get = cutting_get
    client.backoff = 0.01
    paths = client.download_results(job, str(tmp_path / "out"))
    assert ranges[:2] == [None, "bytes=1000-"]
    whole = requests.get(client.api + "/jobs/%s/results/clean.0001.exr" % job).content
    assert (tmp_path / "out" / "clean.0001.exr").read_bytes() == whole and len(paths) == 2
