"""The `void` command end to end against the testing server, on a tiny cut of the BigBen sample."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest

from void_server.pipelines.testing import FILL

BIGBEN = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples" / "BigBen"
SIZE = (96, 64)  # width, height: BigBen (544x360) scaled down
FRAMES = 4


def _frames(video: Path, count: int, interpolation=cv2.INTER_AREA):
    cap = cv2.VideoCapture(str(video))
    out = []
    for _ in range(count):
        ok, frame = cap.read()
        assert ok, "cannot read %s" % video
        out.append(cv2.resize(frame, SIZE, interpolation=interpolation))
    cap.release()
    return out


@pytest.fixture(scope="module")
def bigben_cut(tmp_path_factory):
    """A 4-frame mp4 plate and a 16-bit PNG target sequence (the quadmask's remove region)."""
    if not (BIGBEN / "input_video.mp4").exists():
        pytest.skip("shared BigBen sample not present")
    folder = tmp_path_factory.mktemp("bigben")
    writer = cv2.VideoWriter(str(folder / "plate.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, SIZE)
    for frame in _frames(BIGBEN / "input_video.mp4", FRAMES):
        writer.write(frame)
    writer.release()
    writer = cv2.VideoWriter(str(folder / "quadmask.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 12, SIZE)
    for frame in _frames(BIGBEN / "trimask_quadmask.mp4", FRAMES, cv2.INTER_NEAREST):
        writer.write(frame)
    writer.release()
    for i, q in enumerate(_frames(BIGBEN / "trimask_quadmask.mp4", FRAMES)):
        target = np.where(q[..., 0] < 95, 65535, 0).astype(np.uint16)
        target[20:30, 40:50] = 65535  # never empty, whatever the downscale kept
        cv2.imwrite(str(folder / ("roto.%04d.png" % (i + 1))), target)
    return folder


def void(*args, server):
    env = dict(os.environ, OMP_NUM_THREADS="1", VOID_SERVER=server)
    env.pop("VOID_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "nuke_void.cli"] + list(args), env=env, capture_output=True,
                          text=True, timeout=120)


def test_void_remove_video_plate_png_target(bigben_cut, testing_server, tmp_path):
    out = tmp_path / "out"
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--target", str(bigben_cut / "roto.####.png"),
             "--frames", "1-%d" % FRAMES, "--prompt", json.loads((BIGBEN / "prompt.json").read_text())["bg"],
             "--passes", "1", "--out", str(out), "--poll", "0.1", server=testing_server.url)
    assert r.returncode == 0, r.stderr
    assert "%d frames in %s" % (FRAMES, out) in r.stdout
    assert "uploading" in r.stderr and "%" in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["width"], manifest["height"]) == SIZE
    assert manifest["encoding"] == "srgb"  # a video plate is display-referred
    assert manifest["frames"] == {"first": 1, "last": FRAMES}
    target = cv2.imread(str(bigben_cut / "roto.0002.png"), cv2.IMREAD_UNCHANGED) > 32767
    ch = OpenEXR.File(str(out / "clean.0002.exr"), separate_channels=True).channels()
    assert np.all(ch["R"].pixels[target] == FILL)
    assert np.array_equal(ch["quadmask.remove"].pixels > 0.5, target)
    assert "pass1.R" not in ch  # one pass: no pass-1 layer

    job = [line.split()[1] for line in r.stderr.splitlines() if line.startswith("job ")][0]
    status = void("status", job, server=testing_server.url)
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "succeeded"


def test_void_remove_with_a_quadmask_video(bigben_cut, testing_server, tmp_path):
    out = tmp_path / "out"
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--quadmask", str(bigben_cut / "quadmask.mp4"),
             "--frames", "1001-%d" % (1000 + FRAMES), "--prompt", "a calm river", "--passes", "1", "--out", str(out),
             "--poll", "0.1", server=testing_server.url)
    assert r.returncode == 0, r.stderr
    source = _frames(BIGBEN / "trimask_quadmask.mp4", 1, cv2.INTER_NEAREST)[0][..., 2]
    ch = OpenEXR.File(str(out / "clean.1001.exr"), separate_channels=True).channels()
    remove = ch["quadmask.remove"].pixels > 0.5
    affected = ch["quadmask.affected"].pixels > 0.5
    # mp4 coding blurs edges a little; the bulk of each region survives the round trip.
    assert remove.any() and affected.any()
    assert np.mean(source[remove] < 32) > 0.9 and np.mean(np.abs(source[affected].astype(int) - 127) < 40) > 0.9
    assert np.all(ch["R"].pixels[remove] == FILL)


def test_void_remove_reports_missing_frames(bigben_cut, testing_server, tmp_path):
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--target", str(bigben_cut / "roto.%04d.png"),
             "--frames", "1-9", "--prompt", "x", "--out", str(tmp_path), server=testing_server.url)
    assert r.returncode == 2
    assert "--target: 5 of 9 frames are missing, first" in r.stderr and "roto.0005.png" in r.stderr


def test_void_remove_video_frame_count_mismatch_names_the_field(bigben_cut, testing_server, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    for f in (1, 2):
        (one / ("roto.%04d.png" % f)).write_bytes((bigben_cut / "roto.0001.png").read_bytes())
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--target", str(one / "roto.####.png"),
             "--frames", "1-2", "--prompt", "x", "--out", str(tmp_path / "out"), server=testing_server.url)
    assert r.returncode == 1
    assert "plate.mp4 has %d frames but the frame range 1-2 has 2" % FRAMES in r.stderr
    assert "field inputs.plate" in r.stderr


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A server that takes at most 3 frames a job and files of at most 0.001 MB (1 KB: PNG mattes of this cut pass,
    its videos do not)."""
    from void_test_harness import ServerProcess

    server = ServerProcess(tmp_path_factory.mktemp("void-strict") / "data",
                           args=["--max-frames", "3", "--max-upload-mb", "0.001"]).start()
    yield server
    server.stop()


def _jobs(server):
    from nuke_void.client import VoidClient

    return VoidClient(server.url).list_jobs()


def test_void_remove_refuses_what_the_servers_limits_refuse_before_uploading(bigben_cut, strict_server, tmp_path):
    # A whole video (no --frames): its frame count comes from its header; every file's size is checked too.
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--target", str(bigben_cut / "roto.%04d.png"),
             "--frames", "1-4", "--prompt", "x", "--out", str(tmp_path), server=strict_server.url)
    assert r.returncode == 2, r.stderr
    assert "Frames 1-4 are 4 frames; this server takes at most 3 per job" in r.stderr
    assert (bigben_cut / "plate.mp4").stat().st_size > 1048 > (bigben_cut / "roto.0001.png").stat().st_size
    assert "plate.mp4 is 0.00" in r.stderr and "at most 0.001 MB" in r.stderr and "--max-upload-mb" in r.stderr
    assert "roto.0001.png" not in r.stderr
    r = void("remove", "--plate", str(bigben_cut / "plate.mp4"), "--quadmask", str(bigben_cut / "quadmask.mp4"),
             "--prompt", "x", "--out", str(tmp_path), server=strict_server.url)
    assert r.returncode == 2, r.stderr
    assert "Frames 1-%d are %d frames" % (FRAMES, FRAMES) in r.stderr and "quadmask.mp4 is" in r.stderr
    assert _jobs(strict_server) == []  # refused before any job or upload


def test_void_health_and_unknown_job(testing_server):
    r = void("health", server=testing_server.url)
    assert r.returncode == 0 and json.loads(r.stdout)["pipeline"] == "testing"
    r = void("cancel", "nosuchjob", server=testing_server.url)
    assert r.returncode == 1 and "no job 'nosuchjob'" in r.stderr
