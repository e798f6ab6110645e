"""`void remove` on a video plate without --frames: a spec without a frame range (every frame of the video), valid
against the server's JobSpec, and end to end on the testing server; image sequences still need --frames."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from nuke_void import cli
from nuke_void.jobspec import SpecError, build_spec
from void_server.api.models import InputRole, JobSpec

SIZE = (48, 32)  # width, height


class FakeClient(object):
    """Records what `void remove` would submit; the job 'succeeds' with no files."""

    api = "http://fake/v1"

    def __init__(self):
        self.submitted = []

    def health(self):
        return {"ok": True}  # a server that reports no limits: the command checks none

    def submit(self, spec, local, progress=None):
        self.submitted.append((spec, local))
        return "job1"

    def wait(self, job_id, on_status=None, poll=1.0):
        return {"state": "succeeded", "notes": [], "pipeline_label": "fake"}

    def download_results(self, job_id, dest_dir, progress=None):
        return []


def _remove(*argv):
    args = cli.build_parser().parse_args(["remove"] + list(argv))
    fake = FakeClient()
    assert args.func(args, fake) == 0
    (spec, local), = fake.submitted
    return spec, local


def _touch(path):
    path.write_bytes(b"not really a video: the client never decodes it")
    return str(path)


def test_video_plate_without_frames_builds_a_spec_without_a_range(tmp_path):
    plate, quad = _touch(tmp_path / "input_video.mp4"), _touch(tmp_path / "quadmask.mp4")
    spec, local = _remove("--plate", plate, "--quadmask", quad, "--prompt", "an empty street", "--out", str(tmp_path))
    assert "frames" not in spec
    model = JobSpec.model_validate(spec)
    assert model.frames is None and model.mask_mode.value == "quadmask"
    assert model.inputs[InputRole.plate].files == ["input_video.mp4"]
    assert model.inputs[InputRole.quadmask].files == ["quadmask.mp4"]
    assert model.input_encoding == "srgb"
    assert local == {"plate": [plate], "quadmask": [quad]}


def test_video_plate_and_video_target_without_frames(tmp_path):
    plate, target = _touch(tmp_path / "plate.mov"), _touch(tmp_path / "roto.mp4")
    spec, _ = _remove("--plate", plate, "--target", target, "--prompt", "x", "--out", str(tmp_path))
    model = JobSpec.model_validate(spec)
    assert model.frames is None and model.inputs[InputRole.target].channel == "red"


def test_video_plate_with_frames_keeps_the_range(tmp_path):
    plate, quad = _touch(tmp_path / "input_video.mp4"), _touch(tmp_path / "quadmask.mp4")
    spec, _ = _remove("--plate", plate, "--quadmask", quad, "--frames", "1001-1050", "--prompt", "x",
                      "--out", str(tmp_path))
    assert spec["frames"] == {"first": 1001, "last": 1050}
    assert JobSpec.model_validate(spec).frames.count == 50


@pytest.mark.parametrize("plate, matte, words", [
    ("shot.####.exr", None, "--frames FIRST-LAST is needed for an image sequence plate"),
    ("shot.exr", None, "--frames FIRST-LAST is needed for an image sequence plate"),
    ("plate.mp4", "roto.####.png", "--target: "),
])
def test_sequences_still_need_frames(tmp_path, capsys, plate, matte, words):
    _touch(tmp_path / "plate.mp4")
    _touch(tmp_path / "shot.exr")
    argv = ["remove", "--plate", str(tmp_path / plate), "--target", str(tmp_path / (matte or "roto.mp4")),
            "--prompt", "x", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "--frames" in err


def test_build_spec_without_range_checks_every_used_input():
    ok = build_spec(None, None, "x", plate=["p.mp4"], target=["t.mp4"], affected=["a.mp4"], mask_mode="manual")
    assert "frames" not in ok and JobSpec.model_validate(ok).frames is None
    # an affected matte outside manual mode is not used, so not checked
    build_spec(None, None, "x", plate=["p.mp4"], target=["t.mp4"], affected=["a.####.png"])
    for kwargs, words in [
        (dict(plate=["p.0001.exr", "p.0002.exr"], target=["t.mp4"]), "the plate must be one video file"),
        (dict(plate=["p.mp4"], target=["t.0001.png"]), "the target must be one video file"),
        (dict(plate=["p.mp4"], quadmask=["q.exr"], mask_mode="quadmask"), "the quadmask must be one video file"),
    ]:
        with pytest.raises(SpecError, match=words):
            build_spec(None, None, "x", **kwargs)
    with pytest.raises(SpecError, match="both ends"):
        build_spec(1, None, "x", plate=["p.mp4"], target=["t.mp4"])


def _video(path, count, matte=False):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, SIZE)
    w, h = SIZE
    for i in range(count):
        frame = np.zeros((h, w, 3), np.uint8)
        if matte:
            frame[8:24, 12 + i:28 + i] = 255
        else:
            frame[:] = (30 * i, 120, 200)
        writer.write(frame)
    writer.release()
    return str(path)


def test_void_remove_video_without_frames_end_to_end(testing_server, tmp_path):
    count = 3
    plate, target = _video(tmp_path / "plate.mp4", count), _video(tmp_path / "roto.mp4", count, matte=True)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", VOID_SERVER=testing_server.url)
    env.pop("VOID_TOKEN", None)
    r = subprocess.run([sys.executable, "-m", "nuke_void.cli", "remove", "--plate", plate, "--target", target,
                        "--prompt", "an empty wall", "--passes", "1", "--out", str(out), "--poll", "0.1"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "%d frames in %s" % (count, out) in r.stdout
    assert json.loads((out / "manifest.json").read_text())["frames"] == {"first": 1, "last": count}
    assert sorted(p.name for p in out.glob("clean.*.exr")) == ["clean.%04d.exr" % f for f in range(1, count + 1)]
