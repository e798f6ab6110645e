import numpy as np
import OpenEXR
import pytest

from nuke_void import exr_probe


def _write(path, channels, compression):
    OpenEXR.File({"compression": compression, "type": OpenEXR.scanlineimage}, channels).write(str(path))
    return str(path)


COMPRESSIONS = [OpenEXR.NO_COMPRESSION, OpenEXR.ZIPS_COMPRESSION, OpenEXR.ZIP_COMPRESSION]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_detects_a_small_matte_among_other_channels(tmp_path, compression, dtype):
    h, w = 37, 53
    alpha = np.zeros((h, w), dtype)
    alpha[30, 40] = 1.0
    plate = np.random.default_rng(1).random((h, w)).astype(dtype)  # noisy rgb must not count
    path = _write(tmp_path / "m.exr", {"A": alpha, "R": plate, "G": plate, "mask.a": np.zeros((h, w), dtype)},
                  compression)
    assert exr_probe.channel_has_signal(path, "A") is True
    assert exr_probe.channel_has_signal(path, "mask.a") is False


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_soft_values_below_half_do_not_count(tmp_path, compression):
    alpha = np.full((20, 30), 0.49, np.float16)
    alpha[0, 0] = -4.0
    path = _write(tmp_path / "soft.exr", {"A": alpha}, compression)
    assert exr_probe.channel_has_signal(path, "A") is False
    alpha[10, 10] = 0.51
    path = _write(tmp_path / "hard.exr", {"A": alpha}, compression)
    assert exr_probe.channel_has_signal(path, "A") is True


def test_other_compressions_are_refused_not_guessed(tmp_path):
    path = _write(tmp_path / "piz.exr", {"A": np.ones((8, 8), np.float16)}, OpenEXR.PIZ_COMPRESSION)
    with pytest.raises(exr_probe.UnsupportedExr):
        exr_probe.channel_has_signal(path, "A")


def test_missing_channel_names_the_ones_present(tmp_path):
    path = _write(tmp_path / "a.exr", {"A": np.ones((8, 8), np.float16)}, OpenEXR.ZIPS_COMPRESSION)
    with pytest.raises(KeyError, match="A"):
        exr_probe.channel_has_signal(path, "mask.a")
