"""float8 matrix work (lossy, off by default): the transformer blocks' linear layers computed in float8 e4m3.

Not the `fp8` memory mode (loading.Placement), which *stores* weights in float8 and computes in bf16. Here:
- weights are quantised once per transformer (kept with it, see `fp8_matmul`) with one scale per output channel;
- activations are quantised per row (per token) at every call;
- `torch._scaled_mm` multiplies the two float8 operands with those scales and writes bf16.
Only the blocks' attention projections (q, k, v, out) and MLP layers are converted: the modulation linears
(`norm1.linear`, `norm2.linear`: a handful of rows), the embeddings and the final projection stay bf16.

The forward is a plain function of tensors (no data-dependent Python branch), so it traces inside our per-block
`torch.compile(fullgraph=True)`. Requirements: a CUDA GPU of compute capability 8.9 or newer (Ada, Hopper).
`emulate=True` is for tests on the CPU: the same quantisation, dequantised and multiplied in float32.

Memory: the float8 twins are kept next to the bf16 weights (lossless jobs keep using those), about half the
transformer's size again: ~4.6 GB per pass transformer at full size, ~9 GB with both passes resident.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
_ALIGN = 16  # _scaled_mm wants K and N in multiples of 16 (not M: the token count needs no padding)
# Which linears of a CogVideoX block run in float8 (names relative to the block).
CONVERTED = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2")
# Memory modes whose transformer stays on the GPU, where the float8 twins can stay beside it.
RESIDENT_MODES = ("gpu", "fp8")


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


def quantise_rows(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(R, K) -> (float8 (R, K), float32 scales (R, 1)) with x ~= q * scale; each row's absmax maps to 448."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in float8 e4m3 (per-row / per-output-channel scales), y in x's dtype."""

    def __init__(self, linear: nn.Linear, emulate: bool = False) -> None:
        super().__init__()
        n, k = linear.weight.shape
        if n % _ALIGN or k % _ALIGN:
            raise ValueError("float8 matmul needs in/out features in multiples of %d, got %dx%d" % (_ALIGN, n, k))
        self.in_features, self.out_features = k, n
        self.emulate = emulate
        # .float() first: under the fp8 memory mode the stored weight is already float8 (no arithmetic on it).
        w_q, w_scale = quantise_rows(linear.weight.detach().float())
        self.register_buffer("weight_fp8", w_q)  # (N, K) row-major: .t() is the column-major operand _scaled_mm wants
        self.register_buffer("weight_scale", w_scale.reshape(1, n).contiguous())  # (1, N)
        bias = linear.bias
        # bf16 for the GEMM's epilogue (which takes the output's dtype), from float8 storage (fp8 memory mode) too.
        if bias is not None and (bias.dtype.itemsize == 1 or (not emulate and bias.dtype != torch.bfloat16)):
            bias = nn.Parameter(bias.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = bias  # otherwise shared with the bf16 layer, not copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, rows = x.shape[:-1], x.reshape(-1, self.in_features)
        x_q, x_scale = quantise_rows(rows)
        if self.emulate:
            y = (x_q.float() * x_scale) @ (self.weight_fp8.float() * self.weight_scale.t()).t()
            if self.bias is not None:
                y = y + self.bias
        else:
            # The bias in the GEMM's epilogue, as cuBLAS does it for the bf16 layers: a separate add would read and
            # write the whole output again (q, k and v: three passes a block).
            y = torch._scaled_mm(x_q, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=torch.bfloat16)
        return y.to(x.dtype).reshape(*lead, self.out_features)


# transformer -> {qualified name: its float8 twin}; made once per transformer, dropped with it.
_TWINS: "weakref.WeakKeyDictionary[nn.Module, Dict[str, Fp8Linear]]" = weakref.WeakKeyDictionary()


def _targets(transformer: nn.Module) -> List[Tuple[str, nn.Module, str, nn.Linear]]:
    """(qualified name, parent, attribute, linear) for every converted linear of every block."""
    out = []
    for i, block in enumerate(transformer.transformer_blocks):
        for rel in CONVERTED:
            parent_name, _, attr = rel.rpartition(".")
            parent = block.get_submodule(parent_name)
            linear = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
            if isinstance(linear, nn.Linear):
                out.append(("transformer_blocks.%d.%s" % (i, rel), parent, attr, linear))
    return out


def twins(transformer: nn.Module, emulate: bool = False) -> Dict[str, Fp8Linear]:
    """The float8 twins of `transformer`'s converted linears, quantised on first use and kept."""
    made = _TWINS.get(transformer)
    if made is None or any(t.emulate != emulate for t in made.values()):
        with torch.no_grad():
            made = {name: Fp8Linear(linear, emulate) for name, _, _, linear in _targets(transformer)}
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
    if problem is None and memory_mode not in RESIDENT_MODES:
        problem = ("float8 matrix work (fp8_matmul) needs the transformer resident on the GPU (memory mode %s); "
                   "this job runs in memory mode %s" % (" or ".join(RESIDENT_MODES), memory_mode))
    if problem is not None:
        raise Fp8Unsupported(problem)


@contextlib.contextmanager
def fp8_matmul(transformer: nn.Module, device: torch.device, memory_mode: str = "gpu",
               emulate: bool = False) -> Iterator[nn.Module]:
    """`transformer` computes its blocks' linears in float8 inside the `with`; its bf16 layers are put back after.
    Raises Fp8Unsupported (naming the requirement) where that cannot run, unless `emulate` (tests only)."""
    if not emulate:
        require(device, memory_mode)
    made = twins(transformer, emulate)
    targets = _targets(transformer)
    try:
        for name, parent, attr, _ in targets:
            _set(parent, attr, made[name])
        yield transformer
    finally:
        for _, parent, attr, linear in targets:
            _set(parent, attr, linear)
