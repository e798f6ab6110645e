"""float8 matrix work (lossy, off by default): the transformer blocks' linear layers computed in float8 e4m3.

Not the `fp8` memory mode (loading.Placement), which *stores* weights in float8 and computes in bf16. Here:
- weights are quantised once per transformer (kept with it, see `fp8_matmul`) with one scale per output channel;
- activations are quantised per row (per token) at every call;
- `torch._scaled_mm` multiplies the two float8 operands with those scales and writes bf16.
Only the blocks' attention projections (q, k, v, out) and MLP layers are converted: the modulation linears
(`norm1.linear`, `norm2.linear`: a handful of rows), the embeddings and the final projection stay bf16. The MLP's
tanh GELU moves from after its first linear into the second's input quantisation (fp8_quant.py: one pass over the
4d-wide hidden state instead of GELU and a two-pass quantisation).

The forward is a plain function of tensors and custom ops (no data-dependent Python branch), so it traces inside our
per-block `torch.compile(fullgraph=True)`. Requirements: a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper).
`emulate=True` is for tests on the CPU: the same quantisation, dequantised and multiplied in float32.

Memory: in the memory modes whose transformers stay on the GPU (gpu, fp8) the float8 twins are kept next to the
bf16 weights (lossless jobs keep using those), about half the transformer's size again: ~4.6 GB per pass
transformer at full size, ~9 GB with both passes resident. Under model offload a transformer is lent to the GPU
for its pass only, and so are its twins: quantised from the lent weights as the pass starts and freed as it ends
(the same modules and buffer objects each time, only their storage changes, so compiled blocks keep their graphs).
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Any, Dict, Iterator, List, NamedTuple, Optional

import torch
from torch import nn

from .fp8_quant import gelu_quantise_op, quantise_rows

_ALIGN = 16  # _scaled_mm wants K and N in multiples of 16 (not M: the token count needs no padding)
# Which linears of a CogVideoX block run in float8 (names relative to the block); the feed-forward's two apart.
ATTENTION = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")
BIAS_IN_GEMM = ("attn1.to_q", "attn1.to_k", "attn1.to_v")
# Memory modes whose transformer stays on the GPU, where the float8 twins can stay beside it.
RESIDENT_MODES = ("gpu", "fp8")
# Memory modes that lend a transformer to the GPU whole for its pass: its twins are made there per pass.
LENT_MODES = ("model_offload",)


class Fp8Unsupported(RuntimeError):
    """float8 matrix work cannot run here; the message says what it needs."""


def support_problem(device: torch.device) -> Optional[str]:
    """None where `torch._scaled_mm` runs on `device`, else why not."""
    if device.type != "cuda":
        return ("float8 matrix work (fp8_matmul) needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, "
                "Hopper); this server computes on %s" % device)
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return ("float8 matrix work (fp8_matmul) needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, "
                "Hopper); %s is %d.%d" % (torch.cuda.get_device_name(device), major, minor))
    return None


def _bf16_bias(bias: Optional[torch.Tensor], emulate: bool) -> Optional[torch.Tensor]:
    """A bias as the float8 path adds it: bf16 (the GEMM's output dtype), also from float8 storage (fp8 memory mode);
    otherwise the bf16 layer's own parameter, shared, not copied."""
    if bias is not None and (bias.dtype.itemsize == 1 or (not emulate and bias.dtype != torch.bfloat16)):
        return nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
    return bias


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in float8 e4m3 (per-row / per-output-channel scales), y in x's dtype.

    Where the bias goes is the caller's choice, by what reads y next: `bias_in_gemm` puts it in `_scaled_mm`'s
    epilogue, which costs that GEMM 13-19% on an H100 (docs/performance.md, "Nineteenth session") and pays only
    where y is read by nothing inductor can fuse an add into (q, k, v: custom ops); by default it is added after,
    where inductor folds it into the next kernel (the gated residuals). `bias=False` leaves it out, for the next
    layer to add as its `input_bias`. `gelu_input`: y = GELU_tanh(x + input_bias) W^T + b, the bias and GELU
    applied while quantising x (fp8_quant.py)."""

    def __init__(self, linear: nn.Linear, emulate: bool = False, gelu_input: bool = False,
                 input_bias: Optional[torch.Tensor] = None, bias: bool = True, bias_in_gemm: bool = False) -> None:
        super().__init__()
        if input_bias is not None and not gelu_input:
            raise ValueError("input_bias is added inside the GELU's quantisation: it needs gelu_input")
        self.gelu_input, self.bias_in_gemm = gelu_input, bias_in_gemm
        if gelu_input:
            gelu_quantise_op()  # registered now: dynamo cannot trace an op's registration
        n, k = linear.weight.shape
        if n % _ALIGN or k % _ALIGN:
            raise ValueError("float8 matmul needs in/out features in multiples of %d, got %dx%d" % (_ALIGN, n, k))
        self.in_features, self.out_features = k, n
        self.emulate = emulate
        w_q, w_scale = self._quantised(linear.weight)
        self.register_buffer("weight_fp8", w_q)  # (N, K) row-major: .t() is the column-major operand _scaled_mm wants
        self.register_buffer("weight_scale", w_scale)  # (1, N)
        self.bias = _bf16_bias(linear.bias if bias else None, emulate)
        self.input_bias = _bf16_bias(input_bias, emulate)

    def _quantised(self, weight: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
        # .float() first: under the fp8 memory mode the stored weight is already float8 (no arithmetic on it).
        w_q, w_scale = quantise_rows(weight.detach().float())
        return w_q, w_scale.reshape(1, self.out_features).contiguous()

    @property
    def released(self) -> bool:
        return self.weight_fp8.numel() == 0

    @torch.no_grad()
    def load(self, weight: torch.Tensor) -> None:
        """Quantise `weight` (N, K) into this layer's buffers: new storage in the same tensor objects, so graphs
        compiled over this layer still match (a lent transformer's next pass)."""
        w_q, w_scale = self._quantised(weight)
        self.weight_fp8.data, self.weight_scale.data = w_q, w_scale

    def release(self) -> None:
        """Free the float8 weights' storage (the transformer goes back to the host); `load` refills it."""
        self.weight_fp8.data = self.weight_fp8.new_empty(0)
        self.weight_scale.data = self.weight_scale.new_empty(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, rows = x.shape[:-1], x.reshape(-1, self.in_features)
        if self.gelu_input:
            # by name, as accel's ops: an attribute holding the op would not pickle into a precompiled block's guards
            x_q, x_scale = torch.ops.void.gelu_quantise_rows(rows, self.input_bias)
        else:
            x_q, x_scale = quantise_rows(rows)
        in_gemm = self.bias_in_gemm and not self.emulate
        if self.emulate:
            y = (x_q.float() * x_scale) @ (self.weight_fp8.float() * self.weight_scale.t()).t()
        else:
            y = torch._scaled_mm(x_q, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                 bias=self.bias if in_gemm else None, out_dtype=torch.bfloat16)
        if self.bias is not None and not in_gemm:
            y = y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)


# transformer -> {qualified name: its float8 twin}; made once per transformer, dropped with it.
_TWINS: "weakref.WeakKeyDictionary[nn.Module, Dict[str, Fp8Linear]]" = weakref.WeakKeyDictionary()


class _Target(NamedTuple):
    name: str  # qualified, as the twins are keyed
    parent: nn.Module
    attr: str
    original: nn.Module  # what the twin stands in for, put back after
    linear: nn.Linear  # what the twin is quantised from
    options: Dict[str, Any]  # Fp8Linear's keywords: where its bias goes, GELU on its input


def _targets(transformer: nn.Module) -> List[_Target]:
    """What every block converts: its attention projections, and the feed-forward's two linears. Where the
    feed-forward is `tanh-GELU(proj) -> dropout -> linear`, its first module becomes a float8 linear without its
    bias, and that bias and the GELU move into the second's input quantisation; otherwise each linear is converted
    where it stands. q, k and v keep their bias in the GEMM (their outputs go to custom ops, which inductor cannot
    fuse an add into); the others add it after, in the kernel that reads their output."""
    from .accel import is_tanh_gelu_projection

    out = []
    for i, block in enumerate(transformer.transformer_blocks):
        prefix = "transformer_blocks.%d." % i
        for rel in ATTENTION:
            parent_name, _, attr = rel.rpartition(".")
            parent = block.get_submodule(parent_name)
            linear = parent[int(attr)] if attr.isdigit() else getattr(parent, attr)
            if isinstance(linear, nn.Linear):
                out.append(_Target(prefix + rel, parent, attr, linear, linear,
                                   {"bias_in_gemm": rel in BIAS_IN_GEMM}))
        net = block.ff.net  # diffusers' FeedForward: activation(proj), dropout, linear, (dropout)
        linears = [j for j, m in enumerate(net) if isinstance(m, nn.Linear)]
        if len(linears) != 1:
            continue
        up, d = net[0], linears[0]
        down_name = prefix + "ff.net.%d" % d
        if is_tanh_gelu_projection(up) and all(isinstance(m, nn.Dropout) for m in list(net)[1:d]):
            out.append(_Target(prefix + "ff.net.0", net, "0", up, up.proj, {"bias": False}))
            moved = {"gelu_input": True, "input_bias": up.proj.bias}
            out.append(_Target(down_name, net, str(d), net[d], net[d], moved))
        else:
            if isinstance(getattr(up, "proj", None), nn.Linear):
                out.append(_Target(prefix + "ff.net.0.proj", up, "proj", up.proj, up.proj, {}))
            out.append(_Target(down_name, net, str(d), net[d], net[d], {}))
    return out


def twins(transformer: nn.Module, emulate: bool = False,
          targets: Optional[List[_Target]] = None) -> Dict[str, Fp8Linear]:
    """The float8 twins of `transformer`'s converted linears, quantised on first use and kept (`targets`: its
    `_targets`, where the caller has them already)."""
    made = _TWINS.get(transformer)
    targets = _targets(transformer) if targets is None else targets
    # made again if the blocks changed since (e.g. their GELU fused after a first float8 job named other modules)
    if made is None or any(t.emulate != emulate for t in made.values()) or set(made) != {t.name for t in targets}:
        with torch.no_grad():
            made = {t.name: Fp8Linear(t.linear, emulate, **t.options) for t in targets}
        _TWINS[transformer] = made
    return made


def _set(parent: nn.Module, attr: str, module: nn.Module) -> None:
    if attr.isdigit():
        parent[int(attr)] = module
    else:
        setattr(parent, attr, module)


def require(device: torch.device, memory_mode: str = "gpu") -> None:
    """Raise Fp8Unsupported, naming the requirement, where float8 matrix work cannot run."""
    problem = support_problem(device)
    modes = RESIDENT_MODES + LENT_MODES
    if problem is None and memory_mode not in modes:
        problem = ("float8 matrix work (fp8_matmul) needs each transformer whole on the GPU while it runs (memory "
                   "mode %s), and memory mode %s streams its weights layer by layer"
                   % (", ".join(modes[:-1]) + " or " + modes[-1], memory_mode))
    if problem is not None:
        raise Fp8Unsupported(problem)


@contextlib.contextmanager
def fp8_matmul(transformer: nn.Module, device: torch.device, memory_mode: str = "gpu",
               emulate: bool = False) -> Iterator[nn.Module]:
    """`transformer` computes its blocks' linears in float8 inside the `with`; its bf16 layers are put back after.
    Under a lending memory mode (LENT_MODES) the twins' float8 weights exist only inside the `with`.
    Raises Fp8Unsupported (naming the requirement) where that cannot run, unless `emulate` (tests only)."""
    if not emulate:
        require(device, memory_mode)
    targets = _targets(transformer)
    made = twins(transformer, emulate, targets)
    lent = memory_mode in LENT_MODES
    try:
        for t in targets:
            if made[t.name].released:
                made[t.name].load(t.linear.weight)
            _set(t.parent, t.attr, made[t.name])
        yield transformer
    finally:
        for t in targets:
            _set(t.parent, t.attr, t.original)
            if lent:
                made[t.name].release()
