"""Lossless speed for the CogVideoX transformer (a leaner attention processor, per-block compilation) and the VAE.

Same math as diffusers' `CogVideoXAttnProcessor2_0`; what changes is how it is executed:
- RoPE is applied to the video tokens and concatenated with the text tokens, instead of diffusers' in-place
  write into a slice (which costs a copy of q and k per block and stops fusion);
- attention runs on the fastest exact SDPA backend available, cuDNN first on Hopper (13% faster than the default
  flash path at VOID's 11,314 tokens, docs/performance.md), or on FlashAttention-4 where it is installed (24%
  less time than cuDNN's on an H100; the `attention` pipeline option, `resolve_attention`);
- each transformer block is compiled with `torch.compile` (diffusers' CogVideoX has no `_repeated_blocks`, so we
  compile the blocks ourselves); 42 identical blocks share one compiled graph, and inductor's on-disk cache
  (`compile_cache_dir`) makes a warm server start skip the compile.
- the VAE's encoder (whole) and decoder (resnet block by block, a shorter warm start) are compiled: inductor fuses
  the spatial norms, SiLUs and causal padding around the 3-D convolutions, 1.9x / 2.0x faster on an H200
  (docs/performance.md);
- the feed-forward's first linear and its tanh GELU run as one cuBLASLt GEMM with a GELU epilogue.
Everything here is optional and switchable, so the plain diffusers path stays available for comparison.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import qk_norm_rope
from .qk_norm_rope import rope

log = logging.getLogger(__name__)

ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math", "fa4")
# cu13 for torch's CUDA 13 builds; a CUDA 12 torch takes plain nvidia-cutlass-dsl (install.sh picks)
FA4_INSTALL = "pip install 'flash-attn-4>=4.0.0b36' 'nvidia-cutlass-dsl[cu13]>=4.8'"
_fa4_op = None
_fa4_kernel = None  # flash_attn.cute's flash_attn_func, looked up by the op at each call (tests stand in for it)
FA4_CACHE_FOLDER = "flash-attn-4"  # FlashAttention-4's compiled kernels, inside the compile cache


def fa4_attention_op():
    """FlashAttention-4 (the `flash-attn-4` package: CuTe DSL kernels, FA3's algorithm on Hopper) as the torch custom
    op `void::fa4_attention` on (B, S, heads, d) tensors, so compiled blocks keep it whole. Exact attention like
    SDPA's backends; an optional extra (`FA4_INSTALL`; install.sh adds it on Hopper and Blackwell GPUs), never
    needed. Callers call it by name (`torch.ops.void.fa4_attention`) once this has registered it."""
    global _fa4_op, _fa4_kernel
    if _fa4_kernel is None:
        try:
            from flash_attn.cute import flash_attn_func
        except ImportError as exc:
            raise RuntimeError("attention backend 'fa4' needs the flash-attn-4 package (%s): %s" % (exc, FA4_INSTALL)) from exc
        _fa4_kernel = flash_attn_func
    if _fa4_op is None:
        @torch.library.custom_op("void::fa4_attention", mutates_args=())
        def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            out = _fa4_kernel(q, k, v, causal=False)
            return (out[0] if isinstance(out, tuple) else out).contiguous()

        @fa4_attention.register_fake
        def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return torch.empty_like(q)

        _fa4_op = fa4_attention
    return _fa4_op


def _sdpa_backends(name: str) -> List[object]:
    from torch.nn.attention import SDPBackend

    order = {
        "auto": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "math": [SDPBackend.MATH],
    }
    if name not in order:
        raise ValueError("unknown attention backend %r (one of %s)" % (name, ", ".join(ATTENTION_BACKENDS)))
    return order[name]


def rope_video_tokens(q: torch.Tensor, k: torch.Tensor, text_len: int, rotary: Tuple[torch.Tensor, torch.Tensor],
                      rotate_k: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """q, k (B, heads, text + video, d) -> RoPE on the video tokens only (the text tokens have no position)."""
    cos, sin = (t.to(q.device) for t in rotary)
    q = torch.cat([q[:, :, :text_len], rope(q[:, :, text_len:], cos, sin)], dim=2)
    if rotate_k:
        k = torch.cat([k[:, :, :text_len], rope(k[:, :, text_len:], cos, sin)], dim=2)
    return q, k


_fa4_checked: Dict[str, Optional[str]] = {}


def fa4_self_check(device: torch.device) -> Optional[str]:
    """None if FlashAttention-4 runs on `device` and agrees with float32 SDPA on a small input (bf16 rounding), else
    why not. An optional kernel built at run time (CuTe DSL) must not be able to break a server's jobs: `auto` asks
    this once per device and falls back to SDPA on any failure."""
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, 2, 256, 64, device=device, dtype=torch.bfloat16, generator=g) for _ in range(3))
    try:
        got = ExactAttention("fa4")(q, k, v).float()
    except Exception as e:  # any failure of the optional kernel means: use SDPA
        return "%s: %s" % (type(e).__name__, e)
    want = ExactAttention(None)(q.float(), k.float(), v.float())
    err = float((got - want).norm() / want.norm()) if got.shape == want.shape else float("inf")
    return None if err < 2e-2 else "it differs from SDPA by rel. L2 %.3g on a test input" % err


FA4_NOT_INSTALLED = "flash-attn-4 is not installed (%s)" % FA4_INSTALL


def fa4_unusable_reason(device: torch.device) -> Optional[str]:
    """None where FlashAttention-4 runs on `device`: installed, a Hopper or Blackwell GPU (its kernels' targets), and
    its self-check passed there (once per device); else why not."""
    try:
        fa4_attention_op()  # first: without the package no GPU is touched (models load lazily)
    except RuntimeError:
        return FA4_NOT_INSTALLED
    if device.type != "cuda" or not torch.cuda.is_available():
        return "it runs on CUDA GPUs only"
    if torch.cuda.get_device_capability(device)[0] not in (9, 10):
        return "it runs on Hopper and Blackwell GPUs only"
    key = str(device)
    if key not in _fa4_checked:
        _fa4_checked[key] = fa4_self_check(device)
        if _fa4_checked[key] is not None:
            log.warning("FlashAttention-4 is installed but not used on %s (%s); attention runs on SDPA",
                        device, _fa4_checked[key])
    return _fa4_checked[key]


def fa4_usable(device: torch.device) -> bool:
    return fa4_unusable_reason(device) is None


def resolve_attention(name: str, device: torch.device) -> Optional[str]:
    """The attention the transformers run, from the `attention` pipeline option: 'auto' takes FlashAttention-4 where
    it is installed and the GPU runs it (0.321 vs 0.355 s per forward on an H100, equal output to bf16 rounding:
    docs/performance.md), else diffusers' own processor (None); 'sdpa' keeps diffusers' processor; any other name
    is a backend of `FastCogVideoXAttnProcessor`."""
    if name == "auto":
        return "fa4" if fa4_usable(device) else None
    if name == "sdpa":
        return None
    if name not in ATTENTION_BACKENDS:
        raise ValueError("unknown attention %r (one of auto, sdpa, %s)" % (
            name, ", ".join(b for b in ATTENTION_BACKENDS if b != "auto")))
    if name == "fa4":
        fa4_attention_op()  # a clear error now, not at the first job
    return name


class ExactAttention:
    """softmax(q k^T / sqrt(d)) v for (B, heads, S, d) q, k, v -> (B, S, heads, d), by one backend: SDPA's (in a
    priority order, or torch's own choice for None) or FlashAttention-4, whose native layout this output is."""

    def __init__(self, backend: Optional[str] = None) -> None:
        self.backend = backend
        if backend == "fa4":
            fa4_attention_op()  # registered now: dynamo cannot trace an op's registration
        self._backends = _sdpa_backends(backend) if backend not in (None, "fa4") else None

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.backend == "fa4":
            # Called by name, not through the op object: a precompiled block pickles what its modules hold, and
            # an op object holds its torch.library registration, which does not pickle.
            return torch.ops.void.fa4_attention(*(t.transpose(1, 2).contiguous() for t in (q, k, v)))
        if self._backends is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False).transpose(1, 2)
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(self._backends, set_priority=True):
            return F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False).transpose(1, 2)


class FastCogVideoXAttnProcessor:
    """Drop-in for diffusers' CogVideoXAttnProcessor2_0 (same inputs, outputs and math). With `fuse_qk_rope` the
    query/key norms and RoPE run as one op (`qk_norm_rope`: one Triton kernel on CUDA instead of three)."""

    def __init__(self, backend: str = "auto", fuse_qk_rope: bool = True) -> None:
        self.backend = backend
        self.attend = ExactAttention(backend)
        self.fuse_qk_rope = fuse_qk_rope
        if fuse_qk_rope:
            qk_norm_rope.qk_norm_rope_op()  # registered now: dynamo cannot trace an op's registration

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise NotImplementedError("CogVideoX runs without an attention mask")
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        return self.attend_joint(attn, x, encoder_hidden_states.size(1), image_rotary_emb)

    def attend_joint(self, attn, x: torch.Tensor, text_len: int,
                     image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The attention of the joint (B, text + video, D) input, text first -> (video, text) outputs."""
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, attn.heads, -1).transpose(1, 2)

        if self.fuse_qk_rope and qk_norm_rope.applies(attn, image_rotary_emb):
            q, k = qk_norm_rope.apply(attn, attn.to_q(x), attn.to_k(x), attn.heads, text_len, image_rotary_emb)
        else:
            q, k = heads(attn.to_q(x)), heads(attn.to_k(x))
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
            if image_rotary_emb is not None:
                q, k = rope_video_tokens(q, k, text_len, image_rotary_emb, not attn.is_cross_attention)
        out = attn.to_out[0](self.attend(q, k, heads(attn.to_v(x))).reshape(b, n, -1))
        return out[:, text_len:], out[:, :text_len]


_linear_gelu_op = None


def linear_gelu_tanh_op():
    """gelu_tanh(x W^T + b) as one torch custom op: cuBLASLt's GELU_BIAS epilogue (`torch._addmm_activation`) applies
    the bias and the tanh GELU to the float32 accumulator, so the feed-forward's 4d-wide hidden state is written
    once, in bf16, instead of written, read back and written again by a separate elementwise kernel. Opaque to
    inductor (which would split it back into a GEMM and a Triton kernel). One rounding fewer than the unfused
    math: at least as close to float32."""
    global _linear_gelu_op
    if _linear_gelu_op is None:
        @torch.library.custom_op("void::linear_gelu_tanh", mutates_args=())
        def linear_gelu_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            if x.device.type != "cuda":  # the CPU kernel's GELU is the erf form, not the tanh one: plain math
                return F.gelu(F.linear(x, weight, bias), approximate="tanh")
            flat = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
            return flat.view(*x.shape[:-1], weight.shape[0])

        @linear_gelu_tanh.register_fake
        def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return x.new_empty(*x.shape[:-1], weight.shape[0])

        _linear_gelu_op = linear_gelu_tanh
    return _linear_gelu_op


class FusedGELUProjection(torch.nn.Module):
    """Drop-in for diffusers' `GELU(approximate="tanh")` (the feed-forward's first layer): the same `proj` linear
    (same parameter names), computed by `linear_gelu_tanh_op`. While something else stands in for `proj` (float8
    matmul's twins during a job), it runs that module and the GELU apart, as diffusers does."""

    def __init__(self, gelu: torch.nn.Module) -> None:
        super().__init__()
        self.proj = gelu.proj
        linear_gelu_tanh_op()  # registered now: dynamo cannot trace an op's registration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # inference only: the op has no backward formula. By name, as ExactAttention calls FlashAttention-4: an
        # attribute holding the op object would not pickle into a precompiled block's guards.
        if type(self.proj) is torch.nn.Linear and not torch.is_grad_enabled():
            return torch.ops.void.linear_gelu_tanh(x, self.proj.weight, self.proj.bias)
        return F.gelu(self.proj(x), approximate="tanh")


def is_tanh_gelu_projection(module: torch.nn.Module) -> bool:
    """Whether `module` is tanh-GELU over a biased `nn.Linear` `proj`: diffusers' `GELU(approximate="tanh")`, or
    `FusedGELUProjection` standing in for one (what the fused GELU and float8's moved GELU both need)."""
    from diffusers.models.activations import GELU

    proj = getattr(module, "proj", None)
    tanh = isinstance(module, FusedGELUProjection) or (isinstance(module, GELU) and module.approximate == "tanh")
    return tanh and type(proj) is torch.nn.Linear and proj.bias is not None


def fuse_feed_forward_gelu(transformer: torch.nn.Module) -> int:
    """Swap every block's tanh-GELU projection for `FusedGELUProjection`; returns how many were swapped."""
    swapped = 0
    for block in transformer.transformer_blocks:
        first = block.ff.net[0]
        if not isinstance(first, FusedGELUProjection) and is_tanh_gelu_projection(first):
            block.ff.net[0] = FusedGELUProjection(first)
            swapped += 1
    return swapped


def compile_cache_folder(root: Path) -> Path:
    """The folder `compile_cache_dir(root)` points inductor at (what `void-server doctor` inspects): `root`, unless
    the process's environment named another at its start. torch's own default does not count: a parent Python
    process that imported torch._dynamo (a test harness, a launcher) passes the variable on without choosing it."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from ... import INDUCTOR_CACHE_DIR_AT_START as named

    if named and os.path.abspath(named) != os.path.abspath(default_cache_dir()):
        return Path(named)
    return Path(root)


# What a process's first compiled call imports, at seconds' cost (inductor's prims, the partitioner and networkx:
# about half of a warm VAE start on the device, docs/performance.md, tenth session).
COMPILER_MODULES = ("torch._functorch.partitioners", "torch._inductor.compile_fx", "torch._inductor.inductor_prims")


def import_compiler() -> List[str]:
    """torch's compiler stack imported now rather than inside the first compiled call. For a process with nothing
    else to do meanwhile (a rank group's worker before its first pass): beside the server's own loading it would
    compete for the GIL. A module this torch lacks is skipped (only time is at stake). Returns those imported."""
    import importlib

    done = []
    for name in COMPILER_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def compile_cache_dir(root: Path) -> Path:
    """Point inductor's on-disk caches at `compile_cache_folder(root)` (persistent across server restarts) and return
    it. Set, not set-if-unset: torch sets TORCHINDUCTOR_CACHE_DIR to its /tmp default itself on importing
    torch._dynamo (diffusers does that), so a setdefault here left every cache in /tmp, lost at a reboot."""
    folder = compile_cache_folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    # FlashAttention-4 JIT-compiles its kernels in every process unless its own disk cache is on (flash-attn-4's
    # cache_utils; read when flash_attn.cute is imported, which comes later, at the models' load). Beside
    # inductor's, so one folder is a server's whole compile cache; a setting of the user's own wins.
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED", "1")
    os.environ.setdefault("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", str(folder / FA4_CACHE_FOLDER))
    return folder


def _allow_recompiles() -> None:
    """Our static graphs (one per shape) outnumber dynamo's default limit of 8 recompiles per code object (the VAE's
    resnet blocks compiled one by one: one graph per channel count x resolution x chunk length)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)


# How the transformer's blocks are compiled: "compiled", torch.compile (traced at every start); "precompiled", dynamo's
# precompile kept on disk as the VAE's are (precompiled.py): the server's default since the fifteenth session (its
# first steps at a warm start 3.2 -> 1.1-1.25 s on an H100, docs/performance.md); this function's default stays
# "compiled" for direct callers (benches).
TRANSFORMER_UNITS = ("compiled", "precompiled")


def accelerate_transformer(
    transformer: torch.nn.Module,
    attention: Optional[str] = None,
    compile_blocks: bool = True,
    compile_mode: Optional[str] = None,
    fuse_gelu: bool = False,
    unit: str = "compiled",
) -> torch.nn.Module:
    """Compile each block in place (and, with `attention`, swap in the lean processor; with `fuse_gelu`, the
    feed-forward's GELU into its GEMM); returns the same module. `unit` is one of `TRANSFORMER_UNITS`
    ("precompiled" needs no `compile_mode`: CUDA graphs go through torch.compile).

    Measured on the H100 (docs/performance.md): block compilation is worth 1.38x; the lean processor adds nothing
    once compiled, so the server's default keeps diffusers' processor (`attention=None`)."""
    if unit not in TRANSFORMER_UNITS:
        raise ValueError("unknown transformer compile unit %r (one of %s)" % (unit, ", ".join(TRANSFORMER_UNITS)))
    if fuse_gelu:
        fuse_feed_forward_gelu(transformer)
    if attention is not None:
        processor = FastCogVideoXAttnProcessor(attention)
        for block in transformer.transformer_blocks:
            block.attn1.set_processor(processor)
    if compile_blocks and unit == "precompiled" and compile_mode is None:
        from .direct_attention import make_direct
        from .precompiled import precompile

        for block in transformer.transformer_blocks:
            make_direct(block.attn1)  # diffusers' Attention inspects its processor: no saved function can keep that
            # One function per window length x batch x processor x linears' class, shared by every block.
            precompile(block, "transformer-block")
    elif compile_blocks:
        # One graph per window length x batch (1, or the CFG pair) x bf16 or float8 linears (fp8_linear.py).
        _allow_recompiles()
        for block in transformer.transformer_blocks:
            # dynamic=False: window lengths are few (a full window, perhaps one shorter last window), so a
            # specialised graph per length beats a symbolic one.
            block.compile(fullgraph=True, dynamic=False, mode=compile_mode)
    log.info("transformer accelerated: attention=%s compile=%s (%s) mode=%s fused GELU=%s", attention, compile_blocks,
             unit, compile_mode, fuse_gelu)
    return transformer


VAE_COMPILE_PARTS = {"none": (), "decoder": ("decoder",), "both": ("encoder", "decoder")}
# How a part is cut into graphs: "whole", one graph per chunk shape; "blocks", each resnet block (where nearly all of
# the norm, SiLU and padding work is) its own graph, shared by every block of the same shape. Measured on an H100
# (bench_vae_start.py, docs/performance.md): the decoder as blocks starts faster and peaks 4 GiB lower for 0.04 s a
# decode; the encoder whole is 0.065 s faster a call.
VAE_COMPILE_UNIT = {"encoder": "whole", "decoder": "blocks"}
# "precompiled" (the default): those graphs traced by dynamo once and kept on disk (precompiled.py), so a warm start
# loads them instead of tracing the VAE's Python again (its first encode + decode 9.6 s against 15.0 s as blocks,
# ninth session); "whole" / "blocks": every part cut up so, through torch.compile, traced at every start.
VAE_COMPILE_UNITS = ("precompiled", "whole", "blocks")


def _resnet_blocks(module: torch.nn.Module) -> List[torch.nn.Module]:
    from diffusers.models.autoencoders.autoencoder_kl_cogvideox import CogVideoXResnetBlock3D

    return [block for block in module.modules() if isinstance(block, CogVideoXResnetBlock3D)]


def _compile_vae_part(module: torch.nn.Module, unit: str, backend: str, name: str, rewrites: bool) -> torch.nn.Module:
    """`module` (the VAE's part `name`) compiled as `unit` says: what stands in for it. `rewrites`: each compiled
    module gets vae_rewrites' layout first."""
    cut = VAE_COMPILE_UNIT[name] if unit == "precompiled" else unit
    targets = [module] if cut == "whole" else _resnet_blocks(module)
    if rewrites:
        from .vae_rewrites import rewrite_for_compilation

        for target in targets:
            rewrite_for_compilation(target)
    if unit == "precompiled" and backend == "inductor":  # only inductor's output is saved
        from .precompiled import precompile

        for target in targets:
            precompile(target, "vae-%s%s" % (name, "" if cut == "whole" else "-block"), backend)
        return module
    if cut == "whole":
        return torch.compile(module, dynamic=False, backend=backend)
    for block in targets:
        block.compile(fullgraph=True, dynamic=False, backend=backend)
    return module


def compile_vae(vae: torch.nn.Module, parts: str = "decoder", backend: str = "inductor",
                unit: Optional[str] = None, rewrites: bool = True) -> torch.nn.Module:
    """Compile the VAE's `parts` ("none", "decoder" or "both") in place; returns the same module.

    Static graphs, one per chunk shape (the decode's first latent, its pairs, a trailing single latent; the
    encode's frame batches): the shapes are few and fixed by the model resolution. Against a float32 run of the
    same weights (random, full size, docs/performance.md) the compiled encoder and decoder are closer than eager
    bf16 is (2.0e-2 vs 2.8e-2, 5.7e-4 vs 7.2e-4 relative L2): lossless in the issue's sense.

    `unit` is one of `VAE_COMPILE_UNITS` (None: "precompiled"); "whole" and "blocks" apply to every part.
    `rewrites`: the compiled modules' convolutions laid out faster, the same math (vae_rewrites.py; 11-17% off a
    decode's resnet blocks on an H100)."""
    if parts not in VAE_COMPILE_PARTS:
        raise ValueError("unknown VAE compile parts %r (one of %s)" % (parts, ", ".join(VAE_COMPILE_PARTS)))
    if unit is not None and unit not in VAE_COMPILE_UNITS:
        raise ValueError("unknown VAE compile unit %r (one of %s)" % (unit, ", ".join(VAE_COMPILE_UNITS)))
    _allow_recompiles()
    for name in VAE_COMPILE_PARTS[parts]:
        setattr(vae, name, _compile_vae_part(getattr(vae, name), unit or VAE_COMPILE_UNITS[0], backend, name,
                                             rewrites))
    log.info("VAE compiled: %s (%s, %s, rewrites %s)", parts, unit or VAE_COMPILE_UNITS[0], VAE_COMPILE_UNIT,
             rewrites)
    return vae
