"""A video plate without a frame range: the server counts the frames at start, runs every one, numbers them from 1,
and refuses a video longer than --max-frames naming the count and the limit."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from nuke_void.client import VoidClient, VoidError
from nuke_void.jobspec import build_spec
from void_server.api.models import JobSpec
from void_test_harness import ServerProcess

SIZE = (48, 32)  # width, height
MAX_FRAMES = 5


def write_video(path: Path, count: int, matte: bool = False) -> Path:
    """`count` frames of mp4: a plate (gradients that change per frame) or a matte (a white box moving right)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, SIZE)
    w, h = SIZE
    for i in range(count):
        if matte:
            frame = np.zeros((h, w, 3), np.uint8)
            frame[8:24, 12 + i:28 + i] = 255
        else:
            y, x = np.mgrid[0:h, 0:w]
            frame = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 40 * (i + 1))], -1).astype(np.uint8)
        writer.write(frame)
    writer.release()
    assert int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) == count
    return path


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("video-frames") / "data",
                           args=["--max-frames", str(MAX_FRAMES)]).start()
    yield server
    server.stop()


@pytest.fixture
def vc(limited):
    return VoidClient(limited.url, retries=2, timeout=30)


def whole_video_spec(plate: Path, target: Path, **kw) -> dict:
    spec = build_spec(None, None, "an empty wall", plate=[str(plate)], target=[str(target)], target_channel="red",
                      passes=1, steps_pass1=2, **kw)
    assert "frames" not in spec and JobSpec.model_validate(spec).frames is None
    return spec


def test_video_job_without_frame_range_writes_every_frame(vc, tmp_path):
    count = 4
    plate, target = write_video(tmp_path / "plate.mp4", count), write_video(tmp_path / "roto.mp4", count, matte=True)
    job = vc.submit(whole_video_spec(plate, target), {"plate": [str(plate)], "target": [str(target)]})
    final = vc.wait(job, poll=0.05)
    assert final["state"] == "succeeded", final
    assert final["spec"]["frames"] is None  # the spec stays as sent
    names = ["clean.%04d.exr" % f for f in range(1, count + 1)]
    assert final["results"] == names + ["manifest.json"]
    vc.download_results(job, str(tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["frames"] == {"first": 1, "last": count}
    assert (manifest["width"], manifest["height"]) == SIZE
    assert sorted(p.name for p in (tmp_path / "out").glob("clean.*.exr")) == names


def test_video_longer_than_max_frames_is_refused_at_start(vc, tmp_path):
    count = MAX_FRAMES + 2
    plate, target = write_video(tmp_path / "long.mp4", count), write_video(tmp_path / "roto.mp4", count, matte=True)
    with pytest.raises(VoidError) as e:
        vc.submit(whole_video_spec(plate, target), {"plate": [str(plate)], "target": [str(target)]})
    assert e.value.status_code == 422 and e.value.field == "frames"
    assert "long.mp4 has %d frames" % count in str(e.value) and "at most %d" % MAX_FRAMES in str(e.value)
    assert "--max-frames" in str(e.value)
    assert vc.status(e.value.job_id)["state"] == "created"  # refused before it queued


def test_matte_video_must_match_the_plate_video(vc, tmp_path):
    plate, target = write_video(tmp_path / "plate.mp4", 3), write_video(tmp_path / "roto.mp4", 4, matte=True)
    with pytest.raises(VoidError) as e:
        vc.submit(whole_video_spec(plate, target), {"plate": [str(plate)], "target": [str(target)]})
    assert e.value.status_code == 422 and e.value.field == "inputs.target"
    assert "roto.mp4 has 4 frames but the frame range 1-3 has 3" in str(e.value)
    assert "the plate video's 3 frames" in str(e.value)


@pytest.mark.parametrize("plate, target, field, words", [
    (["p.0001.exr", "p.0002.exr"], ["t.mp4"], "frames", "not 2 files"),
    (["p.0001.exr"], ["t.mp4"], "frames", "not the EXR 'p.0001.exr'"),
    (["p.mp4"], ["t.0001.png", "t.0002.png"], "inputs.target.files", "not 2 files"),
    (["p.mp4"], ["t.png"], "inputs.target.files", "not the image 't.png'"),
])
def test_sequences_without_frame_range_are_refused_at_creation(limited, plate, target, field, words):
    spec = {"prompt": "a wall", "inputs": {"plate": {"files": plate}, "target": {"files": target}}}
    r = requests.post(limited.url + "/v1/jobs", json=spec)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and words in r.json()["error"] and "frames" in r.json()["error"]


def test_frame_range_is_still_checked_against_max_frames_at_creation(limited):
    spec = {"frames": {"first": 1, "last": MAX_FRAMES + 1}, "prompt": "a wall",
            "inputs": {"plate": {"files": ["p.mp4"]}, "target": {"files": ["t.mp4"]}}}
    r = requests.post(limited.url + "/v1/jobs", json=spec)
    assert r.status_code == 422 and r.json()["field"] == "frames" and "at most %d" % MAX_FRAMES in r.json()["error"]
