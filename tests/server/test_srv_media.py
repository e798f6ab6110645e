"""Readers pick the right channels and values from real EXR/PNG files; the sink writes what the manifest says."""
from __future__ import annotations

import json

import cv2
import numpy as np
import OpenEXR
import pytest

from void_server.media.readers import open_clip
from void_server.media.sequences import MediaError, expand_pattern
from void_server.media.sink import ExrResultSink
from void_server.reasoning.combine import from_regions
from void_test_harness import write_exr


def test_expand_pattern_hashes_and_printf():
    assert expand_pattern("/s/a.####.exr", [1, 1001]) == ["/s/a.0001.exr", "/s/a.1001.exr"]
    assert expand_pattern("/s/a.%04d.exr", [7]) == ["/s/a.0007.exr"]
    with pytest.raises(MediaError):
        expand_pattern("/s/a.exr", [1])


def test_exr_matte_channel_by_name_and_alias(tmp_path):
    a = np.full((4, 6), 0.25, np.float32)
    p = write_exr(tmp_path / "m.0001.exr", {"R": a, "G": a * 2, "B": a * 3, "A": a * 4, "mask.roto": a * 0 + 1})
    assert open_clip([p], [1], "matte", "alpha")[0][..., 0].max() == 1.0
    assert open_clip([p], [1], "matte", "green")[0][0, 0, 0] == pytest.approx(0.5)
    assert open_clip([p], [1], "matte", "mask.roto")[0].shape == (4, 6, 1)
    lum = open_clip([p], [1], "matte", "luminance")[0][0, 0, 0]
    assert lum == pytest.approx(0.25 * (0.2126 + 2 * 0.7152 + 3 * 0.0722), rel=1e-5)
    plate = open_clip([p], [1], "plate")[0]
    assert plate.shape == (4, 6, 4) and plate[0, 0].tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_png_16_bit_normalised_rgb_order_and_quadmask_scale(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint16)
    rgb[..., 0] = 65535  # red
    cv2.imwrite(str(tmp_path / "p.0001.png"), rgb[..., ::-1])
    assert open_clip([tmp_path / "p.0001.png"], [1], "plate")[0][0, 0].tolist() == [1.0, 0.0, 0.0]
    q = np.array([[0, 63, 127, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "q.0001.png"), q)
    assert open_clip([tmp_path / "q.0001.png"], [1], "quadmask", "red")[0][..., 0].tolist() == [[0, 63, 127, 255]]


def test_frame_count_must_match_the_range(tmp_path):
    p = write_exr(tmp_path / "a.exr", {"R": np.zeros((2, 2)), "G": np.zeros((2, 2)), "B": np.zeros((2, 2))})
    with pytest.raises(MediaError) as e:
        open_clip([p], [1, 2], "plate")
    assert "1 files for 2 frames" in str(e.value)


def test_sink_writes_channels_layers_and_manifest(tmp_path):
    sink = ExrResultSink(tmp_path, [1001, 1002], half_float=True, manifest={"job": "j", "pipeline": "testing",
                                                                           "label": "T", "encoding": "linear"})
    q = np.array([[0, 63], [127, 255]], np.uint8)
    clean = np.full((2, 2, 3), 0.5, np.float32)
    for i in range(2):
        sink.write_frame(i, clean, q, {"pass1": clean * 0})
    manifest = json.loads(sink.finish(["a note"]).read_text())
    assert manifest["frames"] == {"first": 1001, "last": 1002} and manifest["notes"] == ["a note"]
    assert manifest["layers"]["pass1"] == ["pass1.R", "pass1.G", "pass1.B"]
    ch = OpenEXR.File(str(tmp_path / "clean.1002.exr"), separate_channels=True).channels()
    assert ch["R"].pixels.dtype == np.float16
    qm = manifest["layers"]["quadmask"]
    assert np.array_equal(from_regions(ch[qm["remove"]].pixels, ch[qm["overlap"]].pixels, ch[qm["affected"]].pixels), q)
    assert not list(tmp_path.glob("*.tmp"))


def test_exr_data_window_smaller_than_the_format_is_placed_in_it(tmp_path):
    """Nuke writes a roto's bounding box as the data window; the matte must land where it was drawn."""
    import OpenEXR

    box = np.ones((3, 4), np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "displayWindow": (np.array([0, 0], np.int32), np.array([9, 7], np.int32)),
              "dataWindow": (np.array([5, 2], np.int32), np.array([8, 4], np.int32))}
    path = tmp_path / "roto.0001.exr"
    OpenEXR.File(header, {"A": box}).write(str(path))
    clip = open_clip([path], [1], "matte", "alpha")
    assert (clip.width, clip.height) == (10, 8)
    expected = np.zeros((8, 10), np.float32)
    expected[2:5, 5:9] = 1.0
    np.testing.assert_array_equal(clip[0][..., 0], expected)


def test_a_video_plate_read_from_many_threads_gives_every_frame_its_own_pixels(tmp_path):
    # The pipeline's frame pool asks for frames i, i + 1, ... from several threads at once; one decoder must still
    # hand each index its own frame (every frame here has its own blue level), in any order of arrival.
    from concurrent.futures import ThreadPoolExecutor

    path, count = tmp_path / "plate.mp4", 24
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (64, 48))
    for i in range(count):
        writer.write(np.full((48, 64, 3), (10 * i, 128, 60), np.uint8))  # BGR: blue carries the index
    writer.release()
    serial = open_clip([path], list(range(1, count + 1)), "plate")
    want = [serial[i] for i in range(count)]
    assert [round(float(f[..., 2].mean()) * 255 / 10) for f in want] == list(range(count))
    clip = open_clip([path], list(range(1, count + 1)), "plate")
    order = list(range(count)) * 3 + [5, 3, 20, 0, 23, 1]  # in order from many threads, then backwards and jumps
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda i: (i, clip[i]), order))
    for i, frame in got:
        np.testing.assert_array_equal(frame, want[i])
    clip.close()


def _frames(n, h=64, w=96):
    rng = np.random.default_rng(4)
    q = np.full((h, w), 255, np.uint8)
    q[10:30, 20:50] = 0
    q[25:40, 40:70] = 127
    return [(rng.random((h, w, 3), dtype=np.float32), q) for _ in range(n)]


def test_sink_written_on_threads_gives_the_files_one_writer_gives(tmp_path):
    # The writes run on threads while the pipeline goes on; the files must be byte for byte what one writer makes.
    frames = _frames(12)
    made = {}
    for writers in (1, 4):
        out = tmp_path / ("w%d" % writers)
        sink = ExrResultSink(out, list(range(1001, 1013)), half_float=True, manifest={"job": "j"}, writers=writers)
        for i, (clean, q) in enumerate(frames):
            sink.write_frame(i, clean, q, {"pass1": clean[::-1].copy()})
        sink.finish()
        made[writers] = {p.name: p.read_bytes() for p in sorted(out.glob("clean.*.exr"))}
        assert not list(out.glob("*.tmp"))
    assert len(made[4]) == 12 and made[4] == made[1]


def test_a_failed_frame_write_fails_the_finish_and_close_waits_quietly(tmp_path, monkeypatch):
    from void_server.media import sink as sink_module

    real = sink_module.write_exr

    def full_disk_at_1004(path, channels):
        if path.name == "clean.1004.exr":
            raise OSError(28, "No space left on device", str(path))
        return real(path, channels)

    monkeypatch.setattr(sink_module, "write_exr", full_disk_at_1004)
    frames = _frames(6)
    sink = ExrResultSink(tmp_path / "a", list(range(1001, 1007)), half_float=True, manifest={}, writers=2)
    with pytest.raises(OSError, match="No space left"):
        for i, (clean, q) in enumerate(frames):
            sink.write_frame(i, clean, q)
        sink.finish()
    sink.close()
    assert not (tmp_path / "a" / "manifest.json").exists()
    # a job that failed on its own account: close() waits for the writes under way and raises nothing
    monkeypatch.setattr(sink_module, "write_exr", real)
    other = ExrResultSink(tmp_path / "b", list(range(1001, 1007)), half_float=True, manifest={}, writers=2)
    for i, (clean, q) in enumerate(frames):
        other.write_frame(i, clean, q)
    other.close()
    assert not any(t.is_alive() for t in other._pool._threads)
