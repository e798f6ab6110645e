"""The PREVIEW pipeline end to end on a downscaled real sample (BigBen, 544x360), in memory."""
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from void_server.media.frames import ArrayFrames, MemorySink
from void_server.pipelines.base import JobCancelled, PipelineInputs, PipelineSettings
from void_server.pipelines.preview import FILLED_DONE, PreviewPipeline
from void_server.reasoning.combine import quantise

SAMPLE = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples" / "BigBen"
FRAMES, SIZE = 6, (272, 180)  # every 4th frame, half size


def _read(path, gray=False):
    cap = cv2.VideoCapture(str(path))
    out = []
    i = 0
    while len(out) < FRAMES:
        ok, bgr = cap.read()
        if not ok:
            break
        if i % 4 == 0:
            small = cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA)
            out.append(small[..., 0] if gray else cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        i += 1
    cap.release()
    return np.stack(out)


@pytest.fixture(scope="module")
def clip():
    if not (SAMPLE / "input_video.mp4").exists():
        pytest.skip("BigBen sample not available")
    rgb = _read(SAMPLE / "input_video.mp4").astype(np.float32) / 255.0
    # A scene-linear plate with values a compositor would have: HDR highlights and negative ringing.
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)
    linear[:, :4, :4] = 7.5
    linear[:, -3:, -3:] = -0.02
    q = _read(SAMPLE / "trimask_quadmask.mp4", gray=True).astype(np.float32)
    return linear, q


def _inputs(clip, workdir, roi=True):
    plate, q = clip
    settings = PipelineSettings(prompt="", mask_mode="quadmask", input_encoding="linear", roi=roi)
    return PipelineInputs(plate=ArrayFrames(plate, range(1001, 1001 + len(plate))), settings=settings,
                          workdir=workdir, quadmask=ArrayFrames(q))


def test_preview_end_to_end(clip, tmp_path):
    pipe = PreviewPipeline(config=None)
    assert "PREVIEW" in pipe.label and pipe.name == "preview"
    sink, events = MemorySink(), []
    summary = pipe.run(_inputs(clip, tmp_path), sink, events.append, lambda: False)
    plate, q_raw = clip
    assert summary.frames_written == len(plate) == len(sink.clean)
    assert any("PREVIEW" in n for n in summary.notes)
    assert {"quadmask", "pass1", "merge"} <= {e.stage for e in events}
    assert events[-1].fraction == pytest.approx(1.0) and all("PREVIEW" in e.message for e in events)
    changed_any = 0
    for i in range(len(plate)):
        clean, q = sink.clean[i], sink.quadmask[i]
        assert clean.shape == plate[i].shape and clean.dtype == np.float32
        assert np.array_equal(q, quantise(q_raw[i]))
        remove = q == 0
        # The object is gone: the removal region differs from the plate.
        if remove.any():
            changed_any += 1
            assert np.abs(clean[remove] - plate[i][remove]).mean() > 0.01
        # Far from the edit region (beyond the seam) every value is bit-identical, HDR and negatives included.
        far = cv2.dilate((q != 255).astype(np.uint8), np.ones((25, 25), np.uint8)) == 0
        assert far.sum() > 0.5 * far.size
        assert np.array_equal(clean[far].view(np.uint32), plate[i][far].view(np.uint32))
        assert clean[0, 0, 0] == 7.5 and clean[-1, -1, 0] == np.float32(-0.02)
    assert changed_any >= len(plate) // 2
    # Resuming after the fill stage (merge interrupted): the fill is read back, not recomputed.
    assert (tmp_path / FILLED_DONE).exists()
    (tmp_path / "merge.done").unlink()
    again, events2 = MemorySink(), []
    pipe.run(_inputs(clip, tmp_path), again, events2.append, lambda: False)
    assert "pass1" not in {e.stage for e in events2}
    for i in range(len(plate)):
        assert np.array_equal(again.clean[i].view(np.uint32), sink.clean[i].view(np.uint32))


def test_preview_cancel(clip, tmp_path):
    calls = []

    def cancel_after_a_few():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(JobCancelled):
        PreviewPipeline(None).run(_inputs(clip, tmp_path, roi=False), MemorySink(), lambda p: None,
                                  cancel_after_a_few)
    assert not (tmp_path / FILLED_DONE).exists()
