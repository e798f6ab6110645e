"""One VOID pass, shared by the pipeline and the parity runner: conditioning -> denoise -> decode.

The reference runs the same pipeline twice with different settings (docs/void-reference.md): pass 1 from seeded
Gaussian noise, 30 DDIM steps, no guidance, tri-level mask; pass 2 from flow-warped noise, 50 CogVideoX-DDIM
steps, guidance 6 against an empty prompt, binary mask.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import torch

from ..base import CancelCheck
from ..stage_clock import StageClock
from .conditioning import apply_mask_rule, encode_conditioning, encode_mask
from .decode import decode_latents
from .denoise import OVERLAP_LATENTS, WINDOW_LATENTS, CallObserver, StepCallback, denoise
from .fp8_linear import require as require_fp8
from .loading import VoidModels, execution_device
from .parallel import ParallelPlan
from .step_cache import CacheStats

REFERENCE_NEGATIVE_PROMPT = (
    "The video is not of a high quality, it has a low resolution. Watermark present in each frame. "
    "The background is solid. Strange body and strange trajectory. Distortion. "
)
LATENT_CHANNELS = 16


@dataclasses.dataclass(frozen=True)
class PassConfig:
    index: int  # which void_passN transformer
    steps: int
    guidance: float
    scheduler: str  # "ddim" (diffusers DDIMScheduler) or "cogvideox_ddim"
    mask_rule: str  # "tri", "binary" or "quad" (see conditioning.apply_mask_rule)
    negative_prompt: str
    # Lossy speed options (issue #6), off by default: first-block cache threshold, float8 linears.
    step_cache: float = 0.0
    fp8_matmul: bool = False


PASS1 = PassConfig(index=1, steps=30, guidance=1.0, scheduler="ddim", mask_rule="tri", negative_prompt=REFERENCE_NEGATIVE_PROMPT)
PASS2 = PassConfig(index=2, steps=50, guidance=6.0, scheduler="cogvideox_ddim", mask_rule="binary", negative_prompt="")


@dataclasses.dataclass
class PassResult:
    latents: torch.Tensor  # (1, T_lat, 16, h, w) denoised
    video: torch.Tensor  # (1, 3, 1 + 4 (T_lat - 1), H, W) float32 in [0, 1], every padded frame
    noise_augmented_video: Optional[torch.Tensor]  # (1, 3, T, H, W) the [-1, 1] conditioning video as encoded
    video_latents: torch.Tensor  # (1, T_lat, 16, h, w) VAE(augmented video): the same for both passes
    step_cache: Optional[CacheStats] = None  # the step cache's hits, when it was on


def seeded_latents(seed: int, t_lat: int, h: int, w: int) -> torch.Tensor:
    """Pass 1's starting noise: torch.Generator("cpu").manual_seed(seed), float32, the same on every device."""
    gen = torch.Generator("cpu").manual_seed(seed)
    return torch.randn((1, t_lat, LATENT_CHANNELS, h, w), generator=gen, dtype=torch.float32)


def embed_prompts(models: VoidModels, prompt: str, negative: Optional[str]):
    """-> (token ids (1, 226), prompt embeddings, negative embeddings or None)."""
    ids, embeds = models.prompt_embeddings(prompt)
    neg = None if negative is None else models.prompt_embeddings(negative)[1]
    return ids, embeds, neg


@torch.no_grad()
def pass_mask_latents(vae, cfg: PassConfig, mask: torch.Tensor) -> torch.Tensor:
    """The pass's conditioning mask latents: its mask rule applied to the inverted quadmask, VAE-encoded (the VAE
    must be on its device, `models.placement.use`), on the VAE's device."""
    return passes_mask_latents(vae, [cfg], mask)[cfg.index]


@torch.no_grad()
def passes_mask_latents(vae, cfgs: Sequence[PassConfig], mask: torch.Tensor) -> Dict[int, torch.Tensor]:
    """`pass_mask_latents` of several passes, by pass index. Passes whose rules give the same mask share one encode:
    pass 2's binary mask equals pass 1's tri-level one wherever the quadmask has no affected-only (127) pixel (a
    rig or wire removal without reasoning), and the encode is a function of its input (the distribution's mode), so
    that is the same result for one encode fewer (~0.6 s on an H100)."""
    mask = mask.to(execution_device(vae))
    ruled: Dict[int, torch.Tensor] = {}
    out: Dict[int, torch.Tensor] = {}
    for cfg in cfgs:
        this = apply_mask_rule(mask, cfg.mask_rule)
        same = next((index for index, other in ruled.items() if torch.equal(other, this)), None)
        out[cfg.index] = out[same] if same is not None else encode_mask(vae, this)
        ruled[cfg.index] = this
    return out


@torch.no_grad()
def run_pass(
    models: VoidModels,
    cfg: PassConfig,
    video01: torch.Tensor,
    mask: torch.Tensor,
    prompt: str,
    seed: int,
    initial_noise: Optional[torch.Tensor] = None,
    window: int = WINDOW_LATENTS,
    overlap: int = OVERLAP_LATENTS,
    on_step: Optional[StepCallback] = None,
    should_cancel: Optional[CancelCheck] = None,
    observer: Optional[CallObserver] = None,
    parallel: Optional[ParallelPlan] = None,
    video_latents: Optional[torch.Tensor] = None,
    clock: Optional[StageClock] = None,
    denoiser: Optional[Callable[..., torch.Tensor]] = None,
    augment_noise: Optional[Callable[[], torch.Tensor]] = None,
    mask_latents: Optional[torch.Tensor] = None,
    on_decoded: Optional[Callable[[int, torch.Tensor], None]] = None,
    pipelined_decode: Optional[Tuple[object, Union[int, str]]] = None,
) -> PassResult:
    """video01 (1, 3, T, H, W) in [0, 1] and inverted mask (1, 1, T, H, W), T = 4k + 1 with an even latent count.
    `parallel` splits the denoising over ranks (every rank runs this with the same inputs; see parallel/).

    `initial_noise` (1, T_lat, 16, h, w) replaces the seeded noise (pass 2's warped noise); `video_latents` from
    an earlier pass over the same video and seed skip its encoding. `denoiser` stands in for `denoise.denoise`
    (same arguments): the pipeline's rank group runs the loop over several devices with it. `augment_noise` gives
    the conditioning video's augmentation noise drawn ahead (`conditioning.augmentation_noise`; a future's
    `result`, asked for after the mask encode); `mask_latents` are this pass's `pass_mask_latents` when they
    were encoded ahead. `on_decoded` gets the decoded frames chunk by chunk (decode.decode_latents' `on_chunk`);
    `pipelined_decode` is decode_latents' `pipelined` (the decode split over two GPUs)."""
    if cfg.fp8_matmul:  # before any work: a clear error where float8 matmul cannot run
        require_fp8(models.device, models.placement.mode)
    vae = models.vae
    clock = clock or StageClock()
    with clock("encode"), models.placement.use(vae):
        if mask_latents is None:
            mask_latents = pass_mask_latents(vae, cfg, mask)
        # Only what is still to encode goes to the device: pass 2 has pass 1's plate latents.
        video = video01.to(models.device) if video_latents is None else None
        inpaint, augmented = encode_conditioning(vae, video, None, models.add_noise, seed, video_latents, augment_noise,
                                                 mask_latents)
    _, t_lat, _, h, w = inpaint.shape
    _, embeds, neg = embed_prompts(models, prompt, cfg.negative_prompt if cfg.guidance > 1.0 else None)

    scheduler = models.scheduler(cfg.scheduler)
    noise = seeded_latents(seed, t_lat, h, w) if initial_noise is None else initial_noise.float()
    if tuple(noise.shape) != (1, t_lat, LATENT_CHANNELS, h, w):
        raise ValueError("initial noise is %s, the clip needs %s" % (tuple(noise.shape), (1, t_lat, LATENT_CHANNELS, h, w)))
    latents = (noise * scheduler.init_noise_sigma).to(models.device, models.dtype)

    transformer = models.transformer(cfg.index)
    stats = CacheStats(cfg.step_cache) if cfg.step_cache > 0 else None
    lossy = dict(step_cache=cfg.step_cache, cache_stats=stats) if stats is not None else {}
    if cfg.fp8_matmul:
        lossy.update(fp8_matmul=True, memory_mode=models.placement.mode)  # model offload: twins made per pass
    with clock("denoise"), models.placement.use(transformer):
        latents = (denoiser or denoise)(transformer, scheduler, latents, inpaint, embeds, neg, cfg.guidance, cfg.steps,
                                        window, overlap, on_step, should_cancel, observer, parallel, **lossy)
    with clock("decode"), models.placement.use(vae):
        models.wait_for_decoder()
        video = decode_latents(vae, latents, on_chunk=on_decoded, pipelined=pipelined_decode)
    return PassResult(latents=latents, video=video, noise_augmented_video=augmented,
                      video_latents=inpaint[:, :, LATENT_CHANNELS:], step_cache=stats)
