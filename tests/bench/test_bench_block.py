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


def test_the_latent_grid_of_a_clip():
    import full_size

    assert full_size.latent_grid(85, 384, 672) == (22, 48, 84)  # 22 latent frames: 21 padded to even
    assert full_size.latent_grid(81, 384, 672) == (22, 48, 84)
    assert full_size.latent_grid(77, 64, 112) == (20, 8, 14)
