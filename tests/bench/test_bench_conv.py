"""bench/bench_conv.py's variants compute what they stand for (float32, CPU): its timings compare the same math."""
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bench_conv  # noqa: E402


def test_every_convolution_variant_is_the_causal_conv3d():
    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 8, 6, 10, 12, generator=gen), torch.randn(4, 8, 3, 3, 3, generator=gen), torch.randn(4)
    want = torch.nn.functional.conv3d(x, w, b, padding=(0, 1, 1))
    got = {name: fn() for name, fn in bench_conv.variants(x, w, b).items()}
    assert set(got) >= {"conv3d", "conv3d_cl", "conv2d_taps", "conv2d_stack"}
    for name, out in got.items():
        assert out.shape == want.shape and torch.allclose(out, want, atol=1e-4), name


def test_block_variants_keep_the_block_output():
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXResnetBlock3D

    torch.manual_seed(0)
    block = CogVideoXResnetBlock3D(8, 8, temb_channels=0, groups=4, spatial_norm_dim=4).eval()
    x, zq = torch.randn(1, 8, 4, 8, 12), torch.randn(1, 4, 1, 2, 3)
    with torch.no_grad():
        want = block(x, None, zq)[0]
        for variant in ("cl_weights", "zq_low", "cl_weights+zq_low"):
            changed = bench_conv.block_variant(block, variant)
            assert torch.allclose(changed(x, None, zq)[0], want, atol=1e-5), variant
    assert block.conv1.conv.weight.is_contiguous()  # the bench's copy changed, not the block
