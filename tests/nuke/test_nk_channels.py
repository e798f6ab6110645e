import pytest

from nuke_void import channels


@pytest.mark.parametrize("name, write, exr, spec", [
    ("rgba.alpha", "alpha", "A", "alpha"),
    ("alpha", "alpha", "A", "alpha"),
    ("a", "alpha", "A", "alpha"),
    ("rgba.red", "rgba", "R", "red"),
    ("mask.a", "mask", "mask.a", "mask.a"),
    ("matte.object", "matte", "matte.object", "matte.object"),
])
def test_mapping(name, write, exr, spec):
    assert channels.write_channels(name) == write
    assert channels.exr_channel(name) == exr
    assert channels.spec_channel(name) == spec


@pytest.mark.parametrize("bad", ["", "foo", ".x", "rgba."])
def test_bad_names_say_what_to_type(bad):
    with pytest.raises(ValueError, match="rgba.alpha"):
        channels.split_channel(bad)
