"""video_probe.py: a video's frame count and size from its MP4 header, with the standard library only, equal to
what OpenCV decodes; anything it cannot read gives None (the server then checks at the job's start)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from nuke_void.video_probe import video_facts

SAMPLES = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples"
VIDEOS = sorted(SAMPLES.glob("*/*.mp4"))


@pytest.mark.parametrize("path", VIDEOS, ids=[p.parent.name + "/" + p.name for p in VIDEOS])
def test_the_header_gives_what_opencv_decodes(path):
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.grab():
        frames += 1
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    assert video_facts(str(path)) == (frames,) + size


def test_an_mp4_written_by_opencv(tmp_path):
    path = tmp_path / "plate.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (96, 64))
    for i in range(7):
        writer.write(np.full((64, 96, 3), 30 * i, np.uint8))
    writer.release()
    assert video_facts(str(path)) == (7, 96, 64)


def test_what_it_cannot_read_gives_none(tmp_path):
    if not VIDEOS:
        pytest.skip("shared samples not present")
    torn = tmp_path / "torn.mp4"
    torn.write_bytes(VIDEOS[0].read_bytes()[:2000])
    (tmp_path / "not.mp4").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    assert video_facts(str(torn)) is None
    assert video_facts(str(tmp_path / "not.mp4")) is None
    assert video_facts(str(tmp_path / "missing.mp4")) is None
