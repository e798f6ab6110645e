"""quality.metrics: PSNR and SSIM gathered frame by frame, over the edit region and the whole frame, and the step
cache's hit rate read back from a job's notes."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("cv2")

from void_server.quality.metrics import SSIM_C1, SSIM_C2, ClipDifference, compare_clips, ssim_map  # noqa: E402

RNG = np.random.default_rng(7)


def _clip(t=3, h=24, w=32):
    return RNG.uniform(0.1, 0.9, (t, h, w, 3)).astype(np.float32)


def test_identical_clips_are_infinitely_close():
    a = _clip()
    m = compare_clips(a, a.copy(), np.full(a.shape[:3], 255, np.uint8))
    assert m["psnr_db"] == math.inf and m["rel_l2"] == 0.0
    assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert math.isnan(m["psnr_edit_db"]) and math.isnan(m["ssim_edit"])  # no edit region: nothing to say


def test_an_offset_inside_the_edit_region_gives_the_psnr_of_its_square_there_and_diluted_over_the_frame():
    ref = _clip()
    quad = np.full(ref.shape[:3], 255, np.uint8)
    quad[:, 4:12, 8:24] = 0  # 8 of 24 rows x 16 of 32 columns
    out = ref.copy()
    out[quad != 255] += 0.01
    m = compare_clips(out, ref, quad)
    assert m["psnr_edit_db"] == pytest.approx(40.0, abs=1e-4)  # 10 log10(1 / 0.01^2)
    fraction = (8 * 16) / (24 * 32)
    assert m["psnr_db"] == pytest.approx(40.0 - 10 * math.log10(fraction), abs=1e-4)
    assert m["ssim"] > m["ssim_edit"]  # outside the region the frames are equal


def test_means_run_over_every_pixel_of_the_clip_not_over_per_frame_figures():
    ref = np.full((2, 8, 8, 3), 0.5, np.float32)
    out = ref.copy()
    out[0] += 0.1  # frame 0: MSE 1e-2, frame 1: 0
    m = compare_clips(out, ref)
    assert m["psnr_db"] == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)  # the clip's MSE is 0.005


def test_ssim_of_flat_frames_is_the_luminance_term_alone():
    a = np.full((16, 16, 3), 0.5, np.float32)
    b = np.full((16, 16, 3), 0.4, np.float32)
    expected = (2 * 0.5 * 0.4 + SSIM_C1) / (0.5 ** 2 + 0.4 ** 2 + SSIM_C1)  # no variance: the contrast term is 1
    assert np.allclose(ssim_map(a, b), expected, atol=1e-5)


def test_ssim_map_matches_wangs_definition_computed_with_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    a, b = _clip(1, 40, 40)[0], _clip(1, 40, 40)[0]
    luma = np.array([0.2126, 0.7152, 0.0722])
    x, y = a.astype(np.float64) @ luma, b.astype(np.float64) @ luma

    def blur(z):  # an 11x11 window (radius 5) of sigma 1.5, mirrored at the border as cv2's BORDER_REFLECT
        return ndimage.gaussian_filter(z, 1.5, truncate=5 / 1.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    want = (2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2) / ((mx ** 2 + my ** 2 + SSIM_C1) * (vx + vy + SSIM_C2))
    assert np.abs(ssim_map(a, b) - want).max() < 1e-4


def test_more_noise_means_lower_psnr_and_ssim():
    ref = _clip()
    small = compare_clips(ref + RNG.normal(0, 0.01, ref.shape).astype(np.float32), ref)
    large = compare_clips(ref + RNG.normal(0, 0.1, ref.shape).astype(np.float32), ref)
    assert small["psnr_db"] > large["psnr_db"] and small["ssim"] > large["ssim"]
    assert small["rel_l2"] < large["rel_l2"]


def test_frames_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        ClipDifference().add(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def test_the_step_cache_hit_rate_reads_back_what_its_notes_say():
    pytest.importorskip("torch")
    from void_server.pipelines.void.step_cache import CacheStats, hit_rate_from_notes

    notes = ["the plate is a video file", CacheStats(0.1, hits=3, calls=30).note("pass 1"),
             CacheStats(0.1, hits=20, calls=50).note("pass 2")]
    assert hit_rate_from_notes(notes) == pytest.approx(23 / 80)
    assert hit_rate_from_notes(["the plate is a video file"]) is None
