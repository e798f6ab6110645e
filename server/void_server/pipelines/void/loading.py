"""Loading VOID's models from a model dir: diffusers / transformers classes, our recipe around them.

The 48-channel transformer is built from the base `transformer/config.json` on empty (meta) weights and filled
from `void_passN.safetensors` with `assign=True` (docs/void-reference-details.md §11.1): the 11 GB base transformer
weights are never read. Where models live is a `Placement` (memory mode):

- "gpu": every model resident on the device; both pass transformers resident (two modules, no swapping).
- "model_offload": models live on the CPU and move to the device only while used (diffusers' model offload,
  done by hand so our direct decoder calls are covered too). Both transformers are kept in CPU memory, pinned
  (host_copy.py), so a move is one fast copy in and nothing back.
- "sequential_offload": accelerate's per-module offload hooks (weights stream to the device layer by layer).
- "fp8": as "gpu", with transformer weights stored in float8_e4m3fn and computed in bf16
  (`enable_layerwise_casting`): half the memory, numerically different from the reference.
- "auto": picked from free device memory (see `choose_memory_mode`).
bf16 on CUDA, float32 elsewhere.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from ..base import error_line
from .host_copy import HostCopy
from .packed_state import load_packed
from .weights import ModelLayout

log = logging.getLogger(__name__)

MEMORY_MODES = ("auto", "gpu", "model_offload", "sequential_offload", "fp8")
VOID_IN_CHANNELS = 48  # 16 noisy + 16 VAE(1 - mask) + 16 VAE(video)
_LATENT = 16
# Not CogVideoXTransformer3DModel arguments: VideoX-Fun's noise-augmentation flag (kept) and bookkeeping keys.
_NOISE_FLAG = "add_noise_in_inpaint_model"


class WeightsError(RuntimeError):
    """A checkpoint does not fit the model built from the config."""


def execution_device(model: torch.nn.Module) -> torch.device:
    """Where a model computes: accelerate's offload hooks leave parameters on the meta device, so ask the hook."""
    for m in model.modules():
        dev = getattr(getattr(m, "_hf_hook", None), "execution_device", None)
        if dev is not None:
            return torch.device(dev)
    return next((p.device for p in model.parameters() if not p.is_meta), torch.device("cpu"))


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def choose_memory_mode(device: torch.device, requested: str = "auto") -> str:
    """'auto': everything resident with >= 48 GiB free (the reference peaks at ~31 GiB resident, plus the second
    transformer), model offload with >= 20 GiB (peak ~16 GiB), else sequential offload. fp8 is only ever asked for,
    since it changes the numbers."""
    if requested not in MEMORY_MODES:
        raise ValueError("unknown memory mode %r (one of %s)" % (requested, ", ".join(MEMORY_MODES)))
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "gpu"
    free, _ = torch.cuda.mem_get_info(device)
    gib = free / 2**30
    return "gpu" if gib >= 48 else "model_offload" if gib >= 20 else "sequential_offload"


def read_transformer_config(base: Path) -> Tuple[Dict[str, object], bool]:
    """Base transformer config -> (CogVideoXTransformer3DModel kwargs with in_channels 48, noise-augmentation flag)."""
    raw = json.loads((base / "transformer" / "config.json").read_text())
    add_noise = bool(raw.get(_NOISE_FLAG, False))
    cfg = {k: v for k, v in raw.items() if not k.startswith("_") and k != _NOISE_FLAG}
    cfg["in_channels"] = VOID_IN_CHANNELS
    return cfg, add_noise


def adapt_patch_embed(state: Dict[str, torch.Tensor], patch_volume: int) -> Dict[str, torch.Tensor]:
    """Make a checkpoint's patch embedding 48-channel, the reference's way.

    Feature index = channel * patch_volume + position, so each channel owns `patch_volume` consecutive columns.
    A 33-channel (InP: 16 noisy + 1 mask + 16 video) checkpoint gets its one mask channel's columns copied into
    each of the 16 VAE-mask channels."""
    key = "patch_embed.proj.weight"
    w = state.get(key)
    if w is None or w.shape[1] == VOID_IN_CHANNELS * patch_volume:
        return state
    channels = w.shape[1] // patch_volume
    if channels != 2 * _LATENT + 1:
        raise WeightsError("%s has %d input channels; VOID needs %d (or a %d-channel InP checkpoint to adapt)"
                           % (key, channels, VOID_IN_CHANNELS, 2 * _LATENT + 1))
    pv = patch_volume
    noisy, mask, video = w[:, : _LATENT * pv], w[:, _LATENT * pv: (_LATENT + 1) * pv], w[:, (_LATENT + 1) * pv:]
    log.warning("adapting a %d-channel patch embedding to %d channels", channels, VOID_IN_CHANNELS)
    return {**state, key: torch.cat([noisy, mask.repeat(1, _LATENT), video], dim=1)}


def transformer_skeleton(layout: ModelLayout) -> torch.nn.Module:
    """The transformer built from its config with its parameters on the meta device, for load_transformer to fill."""
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    cfg, _ = read_transformer_config(layout.base)
    with init_empty_weights():
        return CogVideoXTransformer3DModel(**cfg)


def vae_skeleton(layout: ModelLayout) -> torch.nn.Module:
    """The VAE built from its config with its parameters on the meta device (its structure, no weights read)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX

    with init_empty_weights():
        return AutoencoderKLCogVideoX.from_config(AutoencoderKLCogVideoX.load_config(layout.base, subfolder="vae"))


def load_transformer(layout: ModelLayout, pass_index: int, device: torch.device, dtype: torch.dtype):
    """The 48-channel CogVideoXTransformer3DModel with void_pass{pass_index} weights, on `device` in `dtype`."""
    from safetensors.torch import load_file

    model = transformer_skeleton(layout)
    path = layout.pass_files[pass_index]
    if not path.is_file():
        raise FileNotFoundError("missing %s: run `void-server download --model-dir %s`" % (path, layout.root))
    if load_packed(model, path, device, dtype):  # one copy (packed_state.py says why); no parameter needs grad
        _move_buffers(model, device)
        return model.eval()
    state = load_file(str(path), device=str(device) if device.type == "cuda" else "cpu")
    patch_volume = model.config.patch_size ** 2 * (model.config.patch_size_t or 1)
    state = adapt_patch_embed(state, patch_volume)
    state = {k: v.to(dtype) for k, v in state.items()}
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            "%s does not match the transformer built from %s: %d missing keys %s, %d unexpected keys %s"
            % (path, layout.base / "transformer" / "config.json", len(missing), missing[:5], len(unexpected), unexpected[:5]))
    for k, v in model.state_dict().items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise WeightsError("%s: %s has shape %s, the config gives %s" % (path, k, tuple(state[k].shape), tuple(v.shape)))
    model.load_state_dict(state, assign=True, strict=True)
    _move_buffers(model, device)
    on_meta = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if on_meta:
        raise WeightsError("%s left %s uninitialised" % (path, on_meta[:5]))
    return model.eval().requires_grad_(False)


def _move_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """Buffers are not in a checkpoint (init_empty_weights leaves them real, on the CPU)."""
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and buf.device != device:
                module._buffers[name] = buf.to(device)


def load_vae(layout: ModelLayout, dtype: torch.dtype):
    from diffusers import AutoencoderKLCogVideoX

    return AutoencoderKLCogVideoX.from_pretrained(layout.base, subfolder="vae", torch_dtype=dtype).eval().requires_grad_(False)


def load_text(layout: ModelLayout, dtype: torch.dtype):
    """(T5Tokenizer, T5EncoderModel) from the base folder."""
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(layout.base / "tokenizer")
    encoder = T5EncoderModel.from_pretrained(layout.base / "text_encoder", dtype=dtype).eval().requires_grad_(False)
    return tokenizer, encoder


def load_scheduler(layout: ModelLayout, kind: str):
    """'ddim' (pass 1: diffusers DDIMScheduler, as the reference) or 'cogvideox_ddim' (pass 2), from scheduler/."""
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    cls = {"ddim": DDIMScheduler, "cogvideox_ddim": CogVideoXDDIMScheduler}[kind]
    return cls.from_pretrained(layout.base, subfolder="scheduler")


class Placement:
    """Where models live for a memory mode, and `use(model)` to have one on the execution device meanwhile."""

    def __init__(self, device: torch.device, mode: str) -> None:
        self.device = device
        self.mode = choose_memory_mode(device, mode)
        self.dtype = default_dtype(device)
        self._host_copies: "weakref.WeakKeyDictionary[torch.nn.Module, HostCopy]" = weakref.WeakKeyDictionary()

    @property
    def load_device(self) -> torch.device:
        """Where a freshly loaded model goes."""
        return self.device if self.mode in ("gpu", "fp8") else torch.device("cpu")

    def prepare(self, model: torch.nn.Module, is_transformer: bool = False) -> torch.nn.Module:
        if self.mode == "fp8" and is_transformer:
            model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        if self.mode == "sequential_offload" and self.device.type != "cpu":
            from accelerate import cpu_offload

            cpu_offload(model, execution_device=self.device)
        else:
            model.to(self.load_device)
        return model

    def host_copy(self, model: torch.nn.Module) -> HostCopy:
        """The model's host copy, made at first use: the weights are pinned once and stay in host memory."""
        home = self._host_copies.get(model)
        if home is None:
            home = self._host_copies[model] = HostCopy(model)
        return home

    @contextlib.contextmanager
    def use(self, model: torch.nn.Module, offload: bool = False) -> Iterator[torch.nn.Module]:
        """`model` on the execution device meanwhile; `offload` asks for that in every memory mode."""
        if (self.mode != "model_offload" and not offload) or self.device.type == "cpu":
            yield model
            return
        home = self.host_copy(model)
        home.lend(self.device)
        try:
            yield model
        finally:
            home.restore()
            torch.cuda.empty_cache()


def use_cuda_graphs(requested: Optional[bool], compile_blocks: bool, mode: str, device: torch.device) -> bool:
    """Whether the compiled blocks replay as CUDA graphs (torch.compile's "reduce-overhead"), where asked for. Off by
    default: the launches they save (~10 ms a batch-1 forward on an H100) have not shown in a whole job yet, on one
    GPU or two (docs/performance.md, twelfth session). Only in the `gpu` mode: a graph captures its weights'
    addresses, which model offload moves and fp8 storage casts per call."""
    return bool(requested) and compile_blocks and mode == "gpu" and device.type == "cuda"


class VoidModels:
    """Tokenizer, T5, VAE and the two pass transformers of one model dir, loaded lazily and placed per memory mode."""

    def __init__(self, layout: ModelLayout, device: torch.device, memory_mode: str = "auto",
                 compile_blocks: Optional[bool] = None, compile_vae: Optional[str] = None,
                 attention: str = "auto", fuse_gelu: Optional[bool] = None, vae_unit: Optional[str] = None,
                 cuda_graphs: Optional[bool] = None, transformer_unit: Optional[str] = None,
                 vae_rewrites: Optional[bool] = None) -> None:
        self.layout = layout
        self.placement = Placement(device, memory_mode)
        # Block compilation (accel.py) is lossless and 1.38x faster on the GPU, and the feed-forward's GELU in its
        # GEMM's epilogue (accel.FusedGELUProjection) reads its linear's weight directly: both only in the modes
        # whose weights sit on the GPU as they are, not cast or streamed per layer by hooks (fp8, sequential
        # offload), which would break the compiled graphs and hide the weights.
        plain_weights = self.placement.mode in ("gpu", "model_offload")
        if compile_blocks is None:
            compile_blocks = device.type == "cuda"
        self.compile_blocks = bool(compile_blocks) and plain_weights
        if fuse_gelu is None:
            fuse_gelu = device.type == "cuda"
        self.fuse_gelu = bool(fuse_gelu) and plain_weights
        self.cuda_graphs = use_cuda_graphs(cuda_graphs, self.compile_blocks, self.placement.mode, device)
        # The VAE compiles with the blocks where its weights sit whole on the GPU while it runs (`gpu`, and
        # `model_offload`, which lends it): 2x faster and closer to float32 than eager bf16. Under model offload
        # that took 5 s off a job and its peak did not rise (11.7 against 12.1 GiB, H100 under a 22 GiB cap,
        # twentieth session; the third session's whole-decoder compile had peaked 5 GiB higher).
        from .accel import TRANSFORMER_UNITS, VAE_COMPILE_PARTS, VAE_COMPILE_UNITS, resolve_attention

        if compile_vae is None:
            compile_vae = "both" if compile_blocks and self.placement.mode in ("gpu", "model_offload") else "none"
        if compile_vae not in VAE_COMPILE_PARTS:
            raise ValueError("compile_vae must be one of %s, not %r" % (", ".join(VAE_COMPILE_PARTS), compile_vae))
        self.compile_vae = compile_vae if self.placement.mode in ("gpu", "model_offload", "fp8") else "none"
        if vae_unit is not None and vae_unit not in VAE_COMPILE_UNITS:
            raise ValueError("vae_unit must be one of %s, not %r" % (", ".join(VAE_COMPILE_UNITS), vae_unit))
        self.vae_unit = vae_unit  # None: accel.VAE_COMPILE_UNIT's choice per part
        # vae_rewrites' layout for the compiled VAE, by default where it was measured: the `gpu` mode, whose VAE stays
        # on the GPU (offload hooks move weights per call: untried). False keeps diffusers' layout (an A/B, or a cuDNN
        # whose channels-last kernels are slower).
        if vae_rewrites is None:
            vae_rewrites = self.placement.mode == "gpu"
        self.vae_rewrites = self.compile_vae != "none" and bool(vae_rewrites)
        if transformer_unit is not None and transformer_unit not in TRANSFORMER_UNITS:
            raise ValueError("transformer_unit must be one of %s, not %r" % (", ".join(TRANSFORMER_UNITS),
                                                                            transformer_unit))
        # Precompiled by default: a warm start loads the blocks' function instead of tracing them (2 s, H100,
        # fifteenth session). CUDA graphs need torch.compile's.
        self.transformer_unit = "compiled" if self.cuda_graphs else (transformer_unit or "precompiled")
        if transformer_unit == "precompiled" and self.cuda_graphs:  # say what runs: describe() reports the unit
            log.warning("transformer_unit=precompiled with CUDA graphs: the blocks go through torch.compile")
        # None = diffusers' own attention processor; "fa4" where FlashAttention-4 is installed and runs here.
        self.attention = resolve_attention(attention, device)
        self.dtype = self.placement.dtype
        _, self.add_noise = read_transformer_config(layout.base)
        self._vae = None
        self._text = None
        self._embeddings: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        # One T5 at a time: a job's prompt is embedded on a thread (VoidPipeline.run); should another thread ask
        # meanwhile, two lends of T5 at once would put it on the GPU twice.
        self._text_lock = threading.Lock()
        # T5-XXL (9.5 GB) is needed for a moment per prompt: on the GPU it waits in host memory between uses, which
        # keeps the resident set to the two transformers and the VAE (docs/performance.md).
        self.park_text_encoder = device.type == "cuda" and self.placement.mode in ("gpu", "fp8")
        self._transformers: Dict[int, torch.nn.Module] = {}
        # The decoder's warm-up where the server's left it running behind ready (VoidPipeline.warm_up).
        self.decoder_warming: Optional["Future[None]"] = None

    def wait_for_decoder(self) -> None:
        """Before a decode: the decoder's warm-up, if one is still running on its thread, has finished. Its failure
        costs only time (the decode then compiles or loads what it needs), so it is logged, not raised."""
        warming, self.decoder_warming = self.decoder_warming, None
        if warming is None:
            return
        try:
            warming.result()
        except Exception as exc:  # noqa: BLE001
            log.warning("the VAE decoder's warm-up failed (%s); the first decode compiles what it needs",
                        error_line(exc))

    @property
    def holds_every_transformer(self) -> bool:
        """False where loading one pass's transformer drops the other's (sequential offload)."""
        return self.placement.mode != "sequential_offload"

    def load_resident_transformers(self) -> List[int]:
        """Every pass's transformer, loaded now where the memory mode keeps them all (the server's warm-up, a rank
        group's worker before its first pass); none where it holds one at a time (each pass then loads its own).
        Returns the passes loaded."""
        if not self.holds_every_transformer:
            return []
        passes = sorted(self.layout.pass_files)
        for index in passes:
            self.transformer(index)
        return passes

    @property
    def device(self) -> torch.device:
        return self.placement.device

    @property
    def vae(self):
        if self._vae is None:
            self._vae = self._compiled(self.placement.prepare(load_vae(self.layout, self.dtype)))
        return self._vae

    def vae_copy(self, device: torch.device):
        """Another VAE from the model dir, resident on `device` and compiled as `vae` is (a rank group's second GPU
        takes some of the VAE's work, parallel/second_vae.py)."""
        return self._compiled(load_vae(self.layout, self.dtype).to(device))

    def _compiled(self, vae):
        if self.compile_vae != "none":
            from .accel import compile_vae

            compile_vae(vae, self.compile_vae, unit=self.vae_unit, rewrites=self.vae_rewrites)
        return vae

    @property
    def text(self):
        if self._text is None:
            tokenizer, encoder = load_text(self.layout, self.dtype)
            if self.park_text_encoder:
                encoder.to("cpu")
            else:
                encoder = self.placement.prepare(encoder)
            self._text = (tokenizer, encoder)
        return self._text

    def prompt_embeddings(self, prompt: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(token ids, T5 embeddings on the device) for `prompt`, cached: both passes and the guidance's empty
        prompt share them, so T5 runs at most once per distinct text."""
        from .text import encode_prompt

        with self._text_lock:
            hit = self._embeddings.pop(prompt, None)
            if hit is None:
                tokenizer, encoder = self.text
                with self.placement.use(encoder, offload=self.park_text_encoder):
                    hit = encode_prompt(tokenizer, encoder, prompt, self.device, self.dtype)
            self._embeddings[prompt] = hit  # most recent last
            while len(self._embeddings) > 8:
                self._embeddings.pop(next(iter(self._embeddings)))
            return hit

    def transformer(self, pass_index: int) -> torch.nn.Module:
        if pass_index not in self._transformers:
            if not self.holds_every_transformer and self._transformers:
                self._transformers.clear()  # one transformer's hooks at a time keeps host memory at one copy
            model = load_transformer(self.layout, pass_index, self.placement.load_device, self.dtype)
            model = self.placement.prepare(model, is_transformer=True)
            if self.compile_blocks or self.attention is not None or self.fuse_gelu:
                from .accel import accelerate_transformer

                accelerate_transformer(model, attention=self.attention, compile_blocks=self.compile_blocks,
                                       fuse_gelu=self.fuse_gelu, unit=self.transformer_unit,
                                       compile_mode="reduce-overhead" if self.cuda_graphs else None)
            self._transformers[pass_index] = model
        return self._transformers[pass_index]

    def scheduler(self, kind: str):
        return load_scheduler(self.layout, kind)

    def describe(self) -> Dict[str, object]:
        return {
            "model_dir": str(self.layout.root),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "memory_mode": self.placement.mode,
            "compiled_blocks": self.compile_blocks,
            "transformer_unit": self.transformer_unit,
            "cuda_graphs": self.cuda_graphs,
            "compiled_vae": self.compile_vae,
            "vae_unit": self.vae_unit,
            "vae_rewrites": self.vae_rewrites,
            "fused_gelu": self.fuse_gelu,
            "attention": self.attention or "sdpa",
            "loaded": sorted(["vae"] * (self._vae is not None) + ["text_encoder"] * (self._text is not None)
                             + ["transformer_pass%d" % p for p in self._transformers]),
        }
