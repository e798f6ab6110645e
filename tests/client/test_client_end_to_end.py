"""A whole job through the client against a real server running the testing pipeline."""
from __future__ import annotations

import json
import os

import numpy as np
import OpenEXR
import pytest

from nuke_void.client import JobCancelledError, VoidClient, VoidError
from void_server.pipelines.testing import FILL, PASS1_FILL
from void_server.reasoning.combine import from_regions
from void_test_harness import exr_plates, plate_frame, png_mattes, poll, spec_for, target_frame

FIRST = 1001


def read_exr(path):
    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    return {name: np.asarray(c.pixels, dtype=np.float32) for name, c in channels.items()}


def test_job_end_to_end_exr_plate_png_matte(client, tmp_path):
    plates = exr_plates(tmp_path / "in", FIRST, 3)
    mattes = png_mattes(tmp_path / "in", FIRST, 3)
    spec = spec_for(plates, mattes, FIRST)
    seen = []
    sent = []
    job_id = client.submit(spec, {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]},
                           progress=lambda done, total, name: sent.append((done, total)))
    assert sent[-1][0] == sent[-1][1] == sum(os.path.getsize(p) for p in plates + mattes)

    final = client.wait(job_id, on_status=seen.append, poll=0.05)
    assert final["state"] == "succeeded" and final["progress"] == 1.0
    assert final["attempts"] == 1
    assert [s["progress"] for s in seen] == sorted(s["progress"] for s in seen)  # never goes backwards

    assert job_id in [j["id"] for j in client.list_jobs()]
    paths = client.download_results(job_id, str(tmp_path / "out"))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["clean.1001.exr", "clean.1002.exr", "clean.1003.exr", "manifest.json"]

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["frames"] == {"first": FIRST, "last": FIRST + 2}
    assert (manifest["width"], manifest["height"]) == (32, 24)
    assert manifest["pattern"] == "clean.%04d.exr" and manifest["encoding"] == "linear"
    assert manifest["pipeline"] == "testing" and "TESTING" in manifest["label"]
    assert manifest["layers"]["pass1"] == ["pass1.R", "pass1.G", "pass1.B"]

    for i in range(3):
        ch = read_exr(tmp_path / "out" / ("clean.%04d.exr" % (FIRST + i)))
        q = manifest["layers"]["quadmask"]
        assert set(ch) == {"R", "G", "B", "pass1.R", "pass1.G", "pass1.B", q["remove"], q["overlap"], q["affected"]}
        remove = target_frame(i) > 0.5
        quadmask = from_regions(ch[q["remove"]], ch[q["overlap"]], ch[q["affected"]])
        np.testing.assert_array_equal(quadmask, np.where(remove, 0, 255))
        rgb = np.stack([ch["R"], ch["G"], ch["B"]], -1)
        expected = plate_frame(i)
        expected[remove] = FILL
        np.testing.assert_allclose(rgb, expected, atol=1e-6)
        assert np.all(ch["pass1.R"][remove] == PASS1_FILL)

    # Downloading again keeps identical files; a different file in the way is never overwritten.
    again = client.download_results(job_id, str(tmp_path / "out"))
    assert sorted(again) == sorted(paths)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "clean.1002.exr").write_bytes(b"someone else's render")
    with pytest.raises(VoidError) as e:
        client.download_results(job_id, str(tmp_path / "other"))
    assert "clean.1002.exr" in str(e.value) and e.value.field == "dest_dir"
    assert (tmp_path / "other" / "clean.1002.exr").read_bytes() == b"someone else's render"

    client.delete(job_id)
    with pytest.raises(VoidError) as e:
        client.status(job_id)
    assert e.value.status_code == 404


def test_cancel_mid_run(client, tmp_path):
    plates = exr_plates(tmp_path / "in", 1, 2)
    mattes = png_mattes(tmp_path / "in", 1, 2)
    spec = spec_for(plates, mattes, 1, steps_pass1=200)
    job_id = client.submit(spec, {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})
    running = poll(lambda: (lambda s: s if s["stage"] == "pass1" and s["eta_seconds"] is not None else None)(
        client.status(job_id)), what="the job to be in pass 1 with an ETA")
    assert running["state"] == "running" and 0 < running["progress"] < 1 and running["eta_seconds"] > 0
    assert job_id in client.health()["running"]
    client.cancel(job_id)
    with pytest.raises(JobCancelledError):
        client.wait(job_id, poll=0.05)
    final = client.status(job_id)
    assert final["state"] == "cancelled" and final["step"] < 200 and final["results"] == []
    with pytest.raises(VoidError) as e:
        client.download_results(job_id, str(tmp_path / "out"))
    assert e.value.status_code == 409 and "cancelled" in e.value.message


def test_unreachable_server_raises_server_unreachable():
    from nuke_void.client import ServerUnreachable
    from void_test_harness import free_port

    c = VoidClient("http://127.0.0.1:%d" % free_port(), retries=1, timeout=2)
    c.backoff = 0.01
    with pytest.raises(ServerUnreachable) as e:
        c.health()
    assert "127.0.0.1" in str(e.value)
