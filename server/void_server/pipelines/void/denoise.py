"""The sampler loop: temporal multidiffusion over latent windows, optional CFG, one scheduler step per window.

docs/void-reference-details.md §3.2: at every step each window of 22 latent frames (overlapping by 4) is denoised
from the same x_t with its own RoPE table (positions restarting at 0); the windows' scheduler outputs are blended
with linear ramps across the overlaps and normalised by the summed weights. The loop runs over every latent frame,
so clips past the reference's 197-frame cap simply get more windows.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Tuple

import torch
from diffusers.models.embeddings import get_3d_rotary_pos_embed

from ..base import CancelCheck, JobCancelled
from .fp8_linear import fp8_matmul as float8_linears
from .parallel import ParallelPlan, StopVote, sequence_parallel
from .step_cache import CacheStats, FirstBlockCache, attach

WINDOW_LATENTS = 22  # 85 video frames
OVERLAP_LATENTS = 4  # 16 video frames

StepCallback = Callable[[int, int], None]  # (step done, total steps)
CallObserver = Callable[[Dict[str, torch.Tensor]], None]  # sees each transformer call's inputs and output


def temporal_windows(t_lat: int, window: int = WINDOW_LATENTS, overlap: int = OVERLAP_LATENTS) -> List[Tuple[int, int]]:
    """Latent index ranges [b, e) covering 0..t_lat; e.g. 50 -> [(0, 22), (18, 40), (36, 50)]."""
    if window <= overlap:
        raise ValueError("window (%d) must be longer than its overlap (%d)" % (window, overlap))
    spans = []
    b = 0
    while True:
        e = min(b + window, t_lat)
        spans.append((b, e))
        if e == t_lat:
            return spans
        b = e - overlap


def window_weights(b: int, e: int, t_lat: int, overlap: int = OVERLAP_LATENTS) -> torch.Tensor:
    """(e - b,) blend weights: 1 inside, linspace(0, 1, overlap + 2)[1:-1] ramps where a neighbour overlaps."""
    w = torch.ones(e - b, dtype=torch.float32)
    ramp = torch.linspace(0, 1, overlap + 2)[1:-1]
    if b > 0:
        w[:overlap] = ramp
    if e < t_lat:
        w[-overlap:] = ramp.flip(0)
    return w


def rotary_embedding(transformer, t_lat: int, h: int, w: int, device: torch.device) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """CogVideoX-1.5 RoPE for a window of t_lat latent frames at h x w latents (positions start at 0)."""
    cfg = transformer.config
    if not cfg.use_rotary_positional_embeddings:
        return None
    p, p_t = cfg.patch_size, cfg.patch_size_t or 1
    grid = (h // p, w // p)
    # "slice" takes the first grid positions of a max_size table: values do not depend on max_size once it fits.
    max_size = (max(cfg.sample_height // p, grid[0]), max(cfg.sample_width // p, grid[1]))
    cos, sin = get_3d_rotary_pos_embed(
        embed_dim=cfg.attention_head_dim,
        crops_coords=None,
        grid_size=grid,
        temporal_size=(t_lat + p_t - 1) // p_t,
        grid_type="slice",
        max_size=max_size,
        device=device,
    )
    return cos, sin


@torch.no_grad()
def denoise(
    transformer,
    scheduler,
    latents: torch.Tensor,
    inpaint_latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    negative_embeds: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    num_steps: int = 30,
    window: int = WINDOW_LATENTS,
    overlap: int = OVERLAP_LATENTS,
    on_step: Optional[StepCallback] = None,
    should_cancel: Optional[CancelCheck] = None,
    observer: Optional[CallObserver] = None,
    parallel: Optional[ParallelPlan] = None,
    step_cache: float = 0.0,
    cache_stats: Optional[CacheStats] = None,
    fp8_matmul: bool = False,
    memory_mode: str = "gpu",
) -> torch.Tensor:
    """Denoise `latents` (1, T_lat, 16, h, w) already scaled by init_noise_sigma, conditioned on
    `inpaint_latents` (1, T_lat, 32, h, w). CFG (guidance > 1) batches [unconditional, conditional].

    `parallel` (a `parallel.ParallelPlan`, every rank calling with the same inputs) splits the guidance pair, the
    windows and the video tokens over ranks; every rank returns the same latents as the single-process loop.

    `step_cache` > 0 turns on the first-block cache (step_cache.py; lossy) with that threshold, one cache per window
    for this pass; `cache_stats` collects its hit count. `fp8_matmul` computes the blocks' linears in float8
    (fp8_linear.py; lossy; needs compute capability 8.9); `memory_mode` is the placement's, which says whether
    their float8 weights stay on the GPU after the pass."""
    plan = parallel or ParallelPlan()
    device, dtype = latents.device, latents.dtype
    t_lat, h, w = latents.shape[1], latents.shape[3], latents.shape[4]
    if t_lat % 2 and (transformer.config.patch_size_t or 1) == 2:
        raise ValueError("the latent frame count must be even for patch_size_t = 2, got %d" % t_lat)
    cfg = guidance_scale > 1.0
    if cfg and negative_embeds is None:
        raise ValueError("guidance needs negative prompt embeddings")
    split_cfg = cfg and plan.cfg.size == 2  # this rank computes one half of the pair
    if split_cfg:
        text = negative_embeds if plan.cfg.rank == 0 else prompt_embeds
    else:
        text = torch.cat([negative_embeds, prompt_embeds]) if cfg else prompt_embeds
    cond = inpaint_latents.to(device, dtype)
    spans = temporal_windows(t_lat, window, overlap)
    ropes = {n: rotary_embedding(transformer, n, h, w, device) for n in {e - b for b, e in spans}}
    weights = [window_weights(b, e, t_lat, overlap).to(device).view(1, -1, 1, 1, 1) for b, e in spans]
    mine = plan.my_windows(len(spans))
    cache = _step_cache(step_cache, cache_stats, plan, split_cfg)

    scheduler.set_timesteps(num_steps, device=device)
    # The scheduler is stepped with plain ints: its step indexes a host table with the timestep and compares it with
    # 0, which with a GPU tensor waited for the GPU twice a step (the queue drained, the next step's launches late).
    timesteps: List[int] = scheduler.timesteps.tolist()
    timestep_dtype = scheduler.timesteps.dtype

    def predict(x: torch.Tensor, c: torch.Tensor, t: int, k: int) -> torch.Tensor:
        """The guided noise prediction for window k."""
        if cfg and not split_cfg:
            x, c = torch.cat([x, x]), torch.cat([c, c])
        timestep = torch.full((x.shape[0],), t, device=device, dtype=timestep_dtype)  # a fill: no host copy
        # A new step for blocks replayed as CUDA graphs (loading.use_cuda_graphs): the last call's block outputs are
        # consumed, so torch's cudagraph trees may reuse their memory. Does nothing where no graphs replay.
        torch.compiler.cudagraph_mark_step_begin()
        with cache.context(k) if cache is not None else contextlib.nullcontext():
            noise_pred = transformer(
                hidden_states=torch.cat([x, c], dim=2),
                encoder_hidden_states=text,
                timestep=timestep,
                image_rotary_emb=ropes[x.shape[1]],
                return_dict=False,
            )[0]
        if observer is not None:
            observer({"hidden_states": x, "encoder_hidden_states": text, "timestep": timestep,
                      "inpaint_latents": c, "output": noise_pred})
        if split_cfg:
            noise_pred = torch.cat(plan.cfg.all_gather(noise_pred))  # [uncond, cond] as the batched call gives
        noise_pred = noise_pred.float()
        if cfg:
            uncond, text_cond = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (text_cond - uncond)
        return noise_pred

    with float8_linears(transformer, device, memory_mode) if fp8_matmul else contextlib.nullcontext(), \
            sequence_parallel(transformer, plan.sequence, plan.sequence_chunks), \
            attach(transformer, cache) if cache is not None else contextlib.nullcontext():
        stop = StopVote(plan.world, device)
        for i, t in enumerate(timesteps):
            if should_cancel is not None and stop(should_cancel()):  # every rank stops at the same step
                raise JobCancelled()
            stepped = {k: scheduler.step(predict(latents[:, b:e], cond[:, b:e], t, k), t, latents[:, b:e], return_dict=False)[0]
                       for k, (b, e) in enumerate(spans) if k in mine}
            if plan.windows.size > 1:
                stepped = dict(enumerate(plan.gather_windows(stepped, [e - b for b, e in spans], latents)))
            if len(spans) == 1:
                latents = stepped[0].to(dtype)
            else:  # blended in window order on every rank, so every rank holds the same latents
                canvas = torch.zeros(latents.shape, device=device, dtype=torch.float32)
                wsum = torch.zeros((1, t_lat, 1, 1, 1), device=device, dtype=torch.float32)
                for k, ((b, e), wgt) in enumerate(zip(spans, weights)):
                    canvas[:, b:e] += stepped[k].float() * wgt
                    wsum[:, b:e] += wgt
                latents = (canvas / wsum).to(dtype)
            if on_step is not None:
                on_step(i + 1, len(timesteps))
    return latents


def _step_cache(threshold: float, stats: Optional[CacheStats], plan: ParallelPlan, split_cfg: bool) -> Optional[FirstBlockCache]:
    """The pass's first-block cache, or None when off. The two halves of a split guidance pair share one decision
    (their sums are added, as the batched pair's would be); sequence-parallel ranks hold different token shards
    inside the blocks, which the cache's residuals cannot span."""
    if threshold == 0:
        return None
    reduce = (lambda t: torch.stack(plan.cfg.all_gather(t)).sum(0)) if split_cfg else None
    cache = FirstBlockCache(threshold, reduce, stats)  # refuses a negative or NaN threshold
    if plan.sequence.size > 1:
        raise ValueError("the step cache does not combine with sequence parallelism; run it with the guidance or "
                         "window split, or turn the step cache off")
    return cache
