"""Colour conversion, the plate-resolution merge and the ROI box: no model."""
import numpy as np
import pytest
import torch

from void_server.pipelines.void.colour import from_model, srgb_eotf, srgb_oetf, to_model
from void_server.pipelines.void.merge import edit_alpha, merge_frame, merge_layers
from void_server.pipelines.void.roi import choose_roi

# ---------------------------------------------------------------- colour


def _oetf(x):
    return srgb_oetf(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def test_srgb_curve_known_values():
    assert _oetf(np.float32([0.18]))[0] == pytest.approx(0.4614, abs=1e-3)  # mid grey
    assert _oetf(np.float32([1.0]))[0] == pytest.approx(1.0, abs=1e-6)
    assert _oetf(np.float32([0.001]))[0] == pytest.approx(0.01292, abs=1e-6)  # linear toe


@pytest.mark.parametrize("encoding", ["linear", "srgb"])
def test_colour_round_trip_inside_unit_range(encoding):
    x = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    y = from_model(to_model(torch.from_numpy(x), encoding).numpy(), encoding)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=2e-6)
    np.testing.assert_allclose(srgb_eotf(_oetf(x)), x, atol=2e-6)


def test_colour_curves_equal_their_textbook_form():
    # The model-side curve is torch's float32 (on the model's device), the merge-side one numpy's written in place:
    # both must be the piecewise formulas, to float32 rounding (the decode back is bit-exact with its formula).
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.random(20000, dtype=np.float32), np.linspace(0, 0.05, 5001, dtype=np.float32),
                        np.float32([0.0031308, 0.04045, 0.0, 1.0])])
    x64 = x.astype(np.float64)
    oetf = np.where(x64 <= 0.0031308, x64 * 12.92, 1.055 * np.power(x64, 1.0 / 2.4) - 0.055)
    eotf = np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4)).astype(np.float32)
    np.testing.assert_allclose(_oetf(x), oetf, rtol=0, atol=3e-7)
    assert np.array_equal(srgb_eotf(x).view(np.uint32), eotf.view(np.uint32))
    y = np.concatenate([x * 3 - 1, np.float32([np.nan, np.inf, -np.inf])]).reshape(-1, 1, 3)
    clipped = np.clip(np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    expected = np.where(clipped <= 0.0031308, clipped * 12.92, 1.055 * np.power(clipped.astype(np.float64), 1.0 / 2.4) - 0.055)
    np.testing.assert_allclose(to_model(torch.from_numpy(y), "linear").numpy(), expected, rtol=0, atol=3e-7)
    assert np.array_equal(to_model(torch.from_numpy(y), "srgb").numpy(), clipped)


def test_to_model_clips_out_of_range_for_the_model_only():
    x = torch.tensor([[[-0.5, 4.0, float("nan")]]])
    m = to_model(x, "linear")
    assert m.min() >= 0 and m.max() <= 1 and torch.isfinite(m).all()
    assert x[0, 0, 1] == 4.0 and torch.isnan(x[0, 0, 2])  # input untouched


def test_unknown_encoding_is_a_clear_error():
    with pytest.raises(ValueError, match="encoding"):
        to_model(torch.zeros((2, 2, 3)), "rec709")


# ---------------------------------------------------------------- merge


def _quadmask(h=64, w=96):
    q = np.full((h, w), 255, np.uint8)
    q[20:40, 30:50] = 0
    q[40:46, 30:60] = 127
    return q


def test_edit_alpha_covers_region_and_is_exactly_zero_far_away():
    q = _quadmask()
    a = edit_alpha(q, dilate_px=2, feather_px=4)
    assert a.dtype == np.float32 and a.shape == q.shape
    assert (a[q != 255] == 1).all()
    assert a[20:40, 28].min() == 1.0  # 2 px out: inside the dilation
    assert 0 < a[30, 25] < 1  # feather: 5 px out
    assert (a[:, :20] == 0).all() and (a[:10] == 0).all()  # beyond dilation + feather
    assert (edit_alpha(np.full((8, 8), 255, np.uint8), 2, 4) == 0).all()


def _whole_frame_alpha(q, dilate, feather):
    """The alpha's definition computed the slow way: the distance transform over the whole frame."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(q == 255).astype(np.float32)
    if feather <= 0:
        return (dist <= dilate).astype(np.float32)
    t = np.clip((dilate + feather - dist) / feather, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


@pytest.mark.parametrize("dilate, feather", [(2, 4), (5.7, 11.3), (0, 0), (3.5, 0), (0.0, 1.0)])
def test_edit_alpha_windowed_equals_the_whole_frame_transform(dilate, feather):
    # The transform runs on a window around the edit region only; every value must be the whole frame's.
    rng = np.random.default_rng(7)
    for trial in range(6):
        q = np.full((90, 160), 255, np.uint8)
        for _ in range(rng.integers(1, 4)):  # blobs anywhere, edges and corners included
            y, x = rng.integers(0, 90), rng.integers(0, 160)
            q[max(y - 6, 0):y + rng.integers(1, 9), max(x - 9, 0):x + rng.integers(1, 12)] = rng.choice([0, 63, 127])
        got = edit_alpha(q, dilate, feather)
        assert np.array_equal(got, _whole_frame_alpha(q, dilate, feather)), (trial, dilate, feather)


def test_merge_layers_shares_one_alpha_and_equals_merging_each_layer():
    plate, q = _hdr_plate(), _quadmask()
    gens = [np.full((32, 48, 3), v, np.float32) for v in (0.25, 0.75)]
    both = merge_layers(plate, gens, q, None, "linear")
    for gen, out in zip(gens, both):
        assert np.array_equal(out.view(np.uint32), merge_frame(plate, gen, q, None, "linear").view(np.uint32))
    assert not np.array_equal(both[0], both[1])
    with pytest.raises(ValueError, match="differ in size"):
        merge_layers(plate, [gens[0], np.zeros((16, 24, 3), np.float32)], q, None, "linear")


def _hdr_plate(h=64, w=96, c=4):
    rng = np.random.default_rng(1)
    plate = rng.normal(0.5, 2.0, (h, w, c)).astype(np.float32)  # HDR and negative values
    plate[0, 0, 0] = 1e6
    plate[1, 1, 1] = -3.0
    return plate


@pytest.mark.parametrize("encoding", ["linear", "srgb"])
def test_merge_keep_region_bit_identical_and_edit_region_replaced(encoding):
    plate, q = _hdr_plate(), _quadmask()
    gen = np.full((32, 48, 3), 0.25, np.float32)  # half resolution: exercises the upscale
    out = merge_frame(plate, gen, q, None, encoding)
    assert out.shape == plate.shape and out.dtype == plate.dtype
    alpha = edit_alpha(q, 2 * 2.0, 4 * 2.0)  # the defaults at 2 plate px per model px
    keep = alpha == 0
    assert keep.sum() > 0.5 * keep.size
    assert np.array_equal(out[keep].view(np.uint32), plate[keep].view(np.uint32))  # bit-identical
    assert np.array_equal(out[..., 3], plate[..., 3])  # extra channel untouched
    expected = from_model(np.full(3, 0.25, np.float32), encoding)
    np.testing.assert_allclose(out[q != 255][:, :3], np.broadcast_to(expected, (int((q != 255).sum()), 3)), atol=1e-6)


def test_merge_into_box_touches_nothing_outside_it():
    plate, q = _hdr_plate(), _quadmask()
    box = (16, 8, 80, 56)  # contains the edit region
    gen = np.full((24, 42, 3), 0.75, np.float32)
    out = merge_frame(plate, gen, q, box, "linear", dilate_px=1, feather_px=2)
    outside = np.ones(q.shape, bool)
    outside[8:56, 16:80] = False
    assert np.array_equal(out[outside].view(np.uint32), plate[outside].view(np.uint32))
    np.testing.assert_allclose(out[25, 35, :3], from_model(np.full(3, 0.75, np.float32), "linear"), atol=1e-6)


def test_merge_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="quadmask"):
        merge_frame(_hdr_plate(), np.zeros((8, 8, 3), np.float32), np.zeros((10, 10), np.uint8), None, "srgb")
    with pytest.raises(ValueError, match="box"):
        merge_frame(_hdr_plate(), np.zeros((8, 8, 3), np.float32), _quadmask(), (0, 0, 200, 10), "srgb")


# ---------------------------------------------------------------- roi


def _clip_with_region(T, H, W, x0, y0, x1, y1):
    q = np.full((T, H, W), 255, np.uint8)
    for t in range(T):  # the region moves right by 2 px a frame
        q[t, y0:y1, x0 + 2 * t:x1 + 2 * t] = 0
    return q


@pytest.mark.parametrize("where", [(1800, 1000, 1900, 1080), (5, 5, 60, 50), (3700, 2050, 3780, 2150)])
def test_roi_box_has_model_aspect_contains_region_and_fits(tmp_path, where):
    T, H, W = 4, 2160, 3840
    path = tmp_path / "q.u8"
    q = np.memmap(path, dtype=np.uint8, mode="w+", shape=(T, H, W))
    q[:] = _clip_with_region(T, H, W, *where)
    box = choose_roi(q, (384, 672))
    assert box is not None
    bx0, by0, bx1, by1 = box
    assert all(isinstance(v, int) for v in box)
    assert 0 <= bx0 < bx1 <= W and 0 <= by0 < by1 <= H
    assert abs((bx1 - bx0) / (by1 - by0) - 672 / 384) < 0.01
    assert (bx1 - bx0) >= 672 and (by1 - by0) >= 384
    edit = np.argwhere((q != 255).any(axis=0))
    assert edit[:, 0].min() >= by0 and edit[:, 0].max() < by1
    assert edit[:, 1].min() >= bx0 and edit[:, 1].max() < bx1


def test_roi_none_when_disabled_or_region_large():
    small = _clip_with_region(2, 720, 1280, 600, 300, 700, 400)
    assert choose_roi(small, (384, 672)) is not None
    assert choose_roi(small, (384, 672), enabled=False) is None
    large = _clip_with_region(2, 720, 1280, 200, 100, 1000, 600)
    assert choose_roi(large, (384, 672)) is None
    assert choose_roi(np.full((2, 720, 1280), 255, np.uint8)) is None
