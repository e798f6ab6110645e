"""bench/bench_block.py's variant names and its inductor patch (the bench itself runs on the device)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_block  # noqa: E402


def test_variants_are_flags_joined_by_plus():
    assert bench_block.parse_variant("qk+persist") == ["qk", "persist"]
    with pytest.raises(ValueError, match="unknown flag"):
        bench_block.parse_variant("qk+fast")


def test_the_persistent_patch_is_undone():
    from torch._inductor.choices import InductorChoices

    before = InductorChoices.should_use_persistent_reduction
    undo = bench_block._persistent_up_to(4096)
    assert InductorChoices.should_use_persistent_reduction is not before
    undo()
    assert InductorChoices.should_use_persistent_reduction is before
