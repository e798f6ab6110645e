"""Go-with-the-Flow noise warping (Burgert et al. 2025), our own torch implementation of the algorithm the
reference runs for pass 2 (docs/void-reference-details.md §4.2).

A noise image is carried along optical flow while every pixel stays exactly N(0, 1):
- the state is [dx, dy, ω, noise_1..c] per pixel (sub-pixel offsets, a weight, the noise);
- expansion: every pixel pulls the state from where the flow says it came from (nearest, with -flow); pixels
  that pull from outside the frame start fresh (ω = 1);
- contraction: every pixel pushes its state to round(position + flow); pixels pushed outside the frame are
  reset in place; pushed values are summed per target as Σ ω·x / sqrt(Σ ω²), a unit-variance combination;
- targets that receive a push use it; the rest use the expansion sample;
- before combining, values that were duplicated (one source pulled into n pixels) are re-Gaussianised:
  x / sqrt(n) + (ξ - mean_group(ξ)) with fresh ξ, which keeps every copy N(0, 1) and the copies mutually
  independent (and their sum still equal to the original, so the noise really moves with the flow); ω / n.
Duplicates are grouped by where they came from (their source pixel), which is what the reference's grouping by
identical values finds, without sorting millions of 16-channel rows. All fresh pixels (reset or pulled from
outside) form one group, as the reference's all-zero group does.

Unlike the reference (unseeded torch.randn), every random draw comes from the caller's torch.Generator.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

X, Y, W = 0, 1, 2  # state channels: sub-pixel offsets and the weight ω; noise follows
XY_MODES = ("none", "float")


def device_generator(generator: torch.Generator, device: Union[str, torch.device]) -> torch.Generator:
    """A generator on `device`: the caller's own if it lives there, else one seeded from it (deterministic)."""
    device = torch.device(device)
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return torch.Generator(device).manual_seed(seed)


def upscale_flow(flow: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(2, h, w) flow in pixels -> (2, H, W) bilinear, values scaled to the new pixel size per axis."""
    _, h, w = flow.shape
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow[None], size=size, mode="bilinear", align_corners=False)[0]
    # Scaled per axis by Python numbers: a small tensor made from a list would be a blocking host-to-device copy,
    # which made every warp step wait for the previous one (docs/performance.md).
    out[X] *= size[1] / w
    out[Y] *= size[0] / h
    return out


def _init_like(state: torch.Tensor) -> torch.Tensor:
    """A fresh pixel's state: no offset, ω = 1, noise 0 (filled by the re-Gaussianisation)."""
    init = torch.zeros((state.shape[0], 1, 1), dtype=state.dtype, device=state.device)
    init[W].fill_(1)  # fill_ takes the number as a kernel argument; `init[W] = 1` goes through a host tensor
    return init


def group_stats(group: torch.Tensor, xi: torch.Tensor, fresh: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Member count (fresh + 1,) and mean of xi (c, fresh + 1) per group id in [0, fresh]; id `fresh` is the big group.

    The fresh group takes most of the elements (every pulled sample that a push replaces), so summing it with
    atomic adds would send millions of them to one address each step, serialised on a GPU; it is summed by a
    reduction instead, and its elements add zeros to slots of their own in the scatter (no host sync either, unlike
    bincount). Empty groups get a mean of 0: nothing gathers them."""
    is_fresh = group == fresh
    member = (~is_fresh).to(xi.dtype)
    slot = torch.where(is_fresh, torch.arange(group.numel(), device=group.device) % fresh, group)
    counts = torch.zeros(fresh, device=xi.device, dtype=xi.dtype).index_add_(0, slot, member)
    xi_member = xi * member
    sums = torch.zeros((xi.shape[0], fresh), device=xi.device, dtype=xi.dtype).index_add_(1, slot, xi_member)
    n_fresh = is_fresh.sum().to(xi.dtype)
    fresh_sum = (xi - xi_member).sum(1)  # exact per element: xi where fresh, 0 elsewhere
    counts = torch.cat([counts, n_fresh[None]])
    sums = torch.cat([sums, fresh_sum[:, None]], dim=1)
    return counts, sums / counts.clamp(min=1)


def warp_state(
    state: torch.Tensor, flow: torch.Tensor, generator: torch.Generator, xy_mode: str = "none"
) -> torch.Tensor:
    """One warp of a (3 + c, H, W) state along a (2, H, W) forward flow (pixels, same grid). Returns the new state."""
    if xy_mode not in XY_MODES:
        raise ValueError("xy_mode must be one of %s, got %r" % (XY_MODES, xy_mode))
    if state.ndim != 3 or state.shape[0] < 4:
        raise ValueError("state must be (3 + c, H, W) with c >= 1, got %s" % (tuple(state.shape),))
    k, h, w = state.shape
    if flow.shape != (2, h, w):
        raise ValueError("flow must be (2, %d, %d), got %s" % (h, w, tuple(flow.shape)))
    # The step's only random draw (the re-Gaussianisation's fresh samples, one per noise value of both halves),
    # made here from the caller's generator so the rest is a pure function of tensors, which compiles.
    xi = torch.randn((k - W - 1, 2 * h * w), generator=generator, device=state.device, dtype=state.dtype)
    return _warp_fn(state.device)(state, flow, xi, xy_mode == "float")


_compiled_warp = None


def _warp_fn(device: torch.device):
    """On a GPU, `_warp` compiled: a step is ~60 elementwise, gather and scatter kernels over (3 + c) x H x W values
    (19 x 5.5 million at the reference's size), memory-bound, which inductor fuses; on the CPU, as written."""
    global _compiled_warp
    if device.type != "cuda":
        return _warp
    if _compiled_warp is None:
        _compiled_warp = torch.compile(_warp, fullgraph=True, dynamic=False)
    return _compiled_warp


def _warp(state: torch.Tensor, flow: torch.Tensor, xi: torch.Tensor, float_xy: bool) -> torch.Tensor:
    """`warp_state` given its random draw `xi` (c, 2 H W)."""
    k, h, w = state.shape
    n = h * w
    dev = state.device
    flat = state.reshape(k, n)
    init = _init_like(state).reshape(k, 1)
    fresh = n  # group id shared by every fresh pixel
    ys = torch.arange(h, device=dev).repeat_interleave(w)
    xs = torch.arange(w, device=dev).repeat(h)
    fx, fy = flow[X].reshape(n), flow[Y].reshape(n)

    # Expansion: pixel q pulls from q - round(flow(q)).
    sx = xs - fx.round().long()
    sy = ys - fy.round().long()
    pulled_inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    src = (sy.clamp(0, h - 1) * w + sx.clamp(0, w - 1))
    expand = torch.where(pulled_inside, flat[:, src], init)

    # Contraction: pixel p pushes to round(p + offset + flow); outside the frame it resets in place.
    px = xs + flat[X] + fx
    py = ys + flat[Y] + fy
    tx, ty = px.round(), py.round()
    pushed_inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    target = torch.where(pushed_inside, ty.long() * w + tx.long(), ys * w + xs)
    shrink = torch.where(pushed_inside, flat, init)
    residual = torch.stack([px - tx, py - ty]) if float_xy else torch.zeros(2, n, device=dev, dtype=flat.dtype)
    shrink[:W] = torch.where(pushed_inside, residual, shrink[:W])
    pushed = torch.zeros(n, dtype=torch.bool, device=dev).index_fill_(0, target, True)
    # Where a push arrives, the pulled sample is dropped (it becomes a fresh placeholder, never used).
    expand = torch.where(pushed, init, expand)

    # Re-Gaussianise both halves together: group = source pixel, or `fresh`.
    group = torch.cat([
        torch.where(pushed_inside, torch.arange(n, device=dev), fresh),
        torch.where(pulled_inside & ~pushed, src, fresh),
    ])
    both = torch.cat([shrink, expand], dim=1)
    counts, group_mean = group_stats(group, xi, fresh)
    per_pixel = counts[group]
    both[W + 1:] = both[W + 1:] / per_pixel.sqrt() + (xi - group_mean[:, group])
    both[W] = both[W] / per_pixel
    shrink, expand = both[:, :n], both[:, n:]

    # Combine the pushes per target: weights add, noise as Σ ω·x / sqrt(Σ ω²), offsets ω-weighted.
    omega = shrink[W]
    sum_w = torch.zeros(n, device=dev, dtype=flat.dtype).index_add_(0, target, omega)
    sum_w2 = torch.zeros(n, device=dev, dtype=flat.dtype).index_add_(0, target, omega * omega)
    safe_w = torch.where(pushed, sum_w, torch.ones_like(sum_w))
    safe_w2 = torch.where(pushed, sum_w2, torch.ones_like(sum_w2))
    combined = torch.zeros_like(shrink).index_add_(1, target, shrink * omega)
    combined[:W] = combined[:W] / safe_w
    combined[W] = sum_w
    combined[W + 1:] = combined[W + 1:] / safe_w2.sqrt()

    out = torch.where(pushed, combined, expand)
    # Keep the weights near 1 (the reference's bookkeeping, so they neither vanish nor explode over many frames).
    omega = out[W] / out[W].mean() + 1e-5
    out[W] = omega.pow(0.9999)
    return out.reshape(k, h, w)


class NoiseWarper:
    """A noise state of `channels` x (height, width) that follows flow frame by frame."""

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        generator: torch.Generator,
        device: Optional[Union[str, torch.device]] = None,
        xy_mode: str = "none",
    ) -> None:
        if channels < 1 or height < 1 or width < 1:
            raise ValueError("NoiseWarper needs positive channels/height/width, got %d/%d/%d" % (channels, height, width))
        if xy_mode not in XY_MODES:
            raise ValueError("xy_mode must be one of %s, got %r" % (XY_MODES, xy_mode))
        self.device = torch.device(device) if device is not None else generator.device
        self.generator = device_generator(generator, self.device)
        self.xy_mode = xy_mode
        noise = torch.randn((channels, height, width), generator=self.generator, device=self.device)
        self.state = torch.cat([torch.zeros((2, height, width), device=self.device),
                                torch.ones((1, height, width), device=self.device), noise])

    @property
    def size(self) -> Tuple[int, int]:
        return int(self.state.shape[1]), int(self.state.shape[2])

    @property
    def noise(self) -> torch.Tensor:
        """The current (c, H, W) noise, each pixel N(0, 1)."""
        return self.state[W + 1:]

    def step(self, flow: torch.Tensor) -> torch.Tensor:
        """Advance by one forward flow (2, h, w) in pixels of its own grid (upscaled to the state's); returns noise."""
        flow = upscale_flow(flow.to(self.device, torch.float32), self.size)
        self.state = warp_state(self.state, flow, self.generator, self.xy_mode)
        return self.noise


def area_downscale(noise: torch.Tensor, factor: int) -> torch.Tensor:
    """(..., H, W) -> (..., H/f, W/f) by f x f averages, times f: keeps unit variance for independent pixels."""
    h, w = noise.shape[-2:]
    if h % factor or w % factor:
        raise ValueError("noise of %dx%d is not divisible by the downscale factor %d" % (w, h, factor))
    lead = noise.shape[:-2]
    pooled = F.avg_pool2d(noise.reshape(-1, 1, h, w), factor)
    return pooled.reshape(*lead, h // factor, w // factor) * factor
