"""The Go-with-the-Flow warper's defining properties: noise stays N(0, 1), moves with the flow, is reproducible."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from void_server.pipelines.void import noise_warp as nw
from void_server.pipelines.void.noise_warp import NoiseWarper, area_downscale, upscale_flow, warp_state


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _swirl_zoom(h, w, zoom, turn):
    """A smooth field with both stretching and squeezing: zoom about the centre plus a rotation (pixels/frame)."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cx, cy = (w - 1) / 2, (h - 1) / 2
    dx, dy = x - cx, y - cy
    fx = (zoom - 1) * dx - turn * dy
    fy = (zoom - 1) * dy + turn * dx
    return torch.stack([fx, fy])


def test_zero_flow_leaves_noise_unchanged():
    w = NoiseWarper(4, 24, 40, _gen(0))
    before = w.noise.clone()
    for _ in range(3):
        w.step(torch.zeros(2, 24, 40))
    torch.testing.assert_close(w.noise, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tx,ty", [(3, -2), (-5, 4)])
def test_integer_translation_moves_the_noise(tx, ty):
    h, w = 32, 48
    warper = NoiseWarper(4, h, w, _gen(1))
    before = warper.noise.clone()
    flow = torch.zeros(2, h, w)
    flow[0], flow[1] = tx, ty
    after = warper.step(flow)
    # Pixels that received exactly one moved pixel (away from the edges that reset or fill in).
    m = abs(tx) + abs(ty)
    ys, xs = slice(m, h - m), slice(m, w - m)
    src = before[:, m - ty:h - m - ty, m - tx:w - m - tx]
    torch.testing.assert_close(after[:, ys, xs], src, rtol=0, atol=1e-5)
    # The uncovered strip is fresh noise, not a copy.
    strip = after[:, :, :tx] if tx > 0 else after[:, :, tx:]
    assert not torch.isclose(strip, before[:, :, :strip.shape[-1]]).all()


def test_seeded_and_deterministic():
    flow = _swirl_zoom(24, 32, 1.08, 0.05) * 3

    def run(seed):
        w = NoiseWarper(3, 24, 32, _gen(seed))
        for _ in range(4):
            w.step(flow)
        return w.noise

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


@pytest.mark.parametrize("zoom", [1.06, 0.94])  # expansion-heavy and contraction-heavy
def test_marginals_stay_standard_gaussian_after_many_warps(zoom):
    h, w, c, seeds, steps = 24, 32, 4, 32, 10
    flow = _swirl_zoom(h, w, zoom, 0.04) * 2.3  # non-integer, non-uniform
    samples = []
    for seed in range(seeds):
        warper = NoiseWarper(c, h, w, _gen(100 + seed))
        for _ in range(steps):
            warper.step(flow)
        samples.append(warper.noise.numpy())
    x = np.stack(samples)  # (seeds, c, h, w): for every pixel, `seeds * c` independent draws
    flat = x.ravel()
    assert abs(flat.mean()) < 0.02
    assert abs(flat.var() - 1) < 0.03
    assert stats.normaltest(flat).pvalue > 1e-3
    assert stats.kstest(flat, "norm").pvalue > 1e-3
    # Per pixel (over seeds and channels): variance 1 everywhere, no pixel systematically off.
    per_pixel_var = x.reshape(seeds * c, h * w).var(axis=0)
    assert abs(per_pixel_var.mean() - 1) < 0.03
    dof = seeds * c - 1
    assert per_pixel_var.max() < 1 + 6 * math.sqrt(2 / dof)
    assert per_pixel_var.min() > 1 - 6 * math.sqrt(2 / dof)
    # The noise really moved: consecutive frames are correlated, but not identical.
    warper = NoiseWarper(c, h, w, _gen(5))
    prev = warper.noise.clone()
    nxt = warper.step(flow * 0.2)
    r = np.corrcoef(prev.numpy().ravel(), nxt.numpy().ravel())[0, 1]
    assert 0.3 < r < 0.999


def test_weights_stay_positive_and_near_one():
    warper = NoiseWarper(2, 24, 32, _gen(3))
    flow = _swirl_zoom(24, 32, 0.9, 0.1) * 2
    for _ in range(10):
        warper.step(flow)
    omega = warper.state[2]
    assert (omega > 0).all()
    assert 0.5 < float(omega.mean()) < 1.5


def test_area_downscale_keeps_unit_variance():
    x = torch.randn(8, 64, 96, generator=_gen(4))
    y = area_downscale(x, 8)
    assert y.shape == (8, 8, 12)
    assert abs(float(y.var()) - 1) < 0.15
    with pytest.raises(ValueError, match="divisible"):
        area_downscale(x, 7)


def test_flow_upscale_scales_values():
    f = torch.ones(2, 4, 6)
    f[1] *= 2
    up = upscale_flow(f, (8, 18))
    torch.testing.assert_close(up[0], torch.full((8, 18), 3.0))
    torch.testing.assert_close(up[1], torch.full((8, 18), 4.0))


def test_bad_inputs_are_clear_errors():
    state = torch.zeros(5, 4, 4)
    with pytest.raises(ValueError, match="flow must be"):
        warp_state(state, torch.zeros(2, 3, 3), _gen(0))
    with pytest.raises(ValueError, match="xy_mode"):
        warp_state(state, torch.zeros(2, 4, 4), _gen(0), xy_mode="int")


@pytest.mark.parametrize("fresh_share", [0.0, 0.5, 0.97])
def test_group_stats_equal_bincount_and_index_add(fresh_share):
    # The contention-free sums must be the plain per-group count and mean (what bincount + index_add give).
    g = torch.Generator().manual_seed(3)
    n, c = 500, 4
    group = torch.randint(0, n, (2 * n,), generator=g)
    group[torch.rand(2 * n, generator=g) < fresh_share] = n
    xi = torch.randn(c, 2 * n, generator=g, dtype=torch.float64)
    counts, mean = nw.group_stats(group, xi, n)
    want_counts = torch.bincount(group, minlength=n + 1).to(xi.dtype)
    want_sums = torch.zeros(c, n + 1, dtype=xi.dtype).index_add_(1, group, xi)
    used = want_counts > 0
    assert torch.equal(counts, want_counts)
    torch.testing.assert_close(mean[:, used], want_sums[:, used] / want_counts[used], rtol=1e-12, atol=1e-12)
    assert torch.all(mean[:, ~used] == 0)


@pytest.mark.parametrize("xy_mode", ["none", "float"])
def test_the_warp_traces_whole_and_equals_the_step(xy_mode):
    # On a GPU the step runs compiled: the core must trace as one graph (fullgraph: a break raises) and give the
    # step's values for the same draw. aot_eager runs dynamo and AOT autograd without inductor's codegen.
    h, w, c = 12, 20, 3
    state = NoiseWarper(c, h, w, _gen(5)).state
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    flow = torch.stack([2.6 * torch.sin(yy / 3), 1.4 * torch.cos(xx / 4)])  # pulls and pushes across the border
    want = warp_state(state, flow, _gen(9), xy_mode)
    xi = torch.randn((c, 2 * h * w), generator=_gen(9))  # warp_state's one draw
    compiled = torch.compile(nw._warp, backend="aot_eager", fullgraph=True, dynamic=False)
    got = compiled(state, flow, xi, xy_mode == "float")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert not torch.equal(want, state)
