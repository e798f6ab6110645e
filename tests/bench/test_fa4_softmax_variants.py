"""bench/fa4_softmax_variants.py's variant syntax (its kernels need a Hopper GPU and the CuTe DSL: not run here)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from fa4_softmax_variants import Variant, parse_variant  # noqa: E402


def test_off_means_flash_attn_4_as_it_is():
    assert parse_variant("off") is None and parse_variant("") is None and parse_variant("sum1") is None


@pytest.mark.parametrize("text, want", [
    ("1/4", Variant(period=4, emulated=1, degree=3)),
    ("3/16/4", Variant(period=16, emulated=3, degree=4)),
    ("skip", Variant(skip_unit_rescale=True)),
    ("sum4", Variant(sum_chains=4)),
    ("skip+sum4", Variant(skip_unit_rescale=True, sum_chains=4)),
    ("1/8+skip", Variant(period=8, emulated=1, skip_unit_rescale=True)),
])
def test_variants_parse_to_their_fields(text, want):
    assert parse_variant(text) == want


@pytest.mark.parametrize("text", ["5/4", "1/0", "1/4/2", "sum3", "fast", "1/4/x"])
def test_bad_variants_are_refused(text):
    with pytest.raises(ValueError):
        parse_variant(text)
