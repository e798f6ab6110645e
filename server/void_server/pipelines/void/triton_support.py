"""Whether our own Triton kernels (qk_norm_rope.py, fp8_quant.py, modulated_norm.py) can run on a tensor's device:
CUDA with Triton importable. Elsewhere their ops run the same math in torch."""
from __future__ import annotations

import torch


def usable(x: torch.Tensor) -> bool:
    if x.device.type != "cuda":
        return False
    try:
        import triton
    except ImportError:
        return False
    return hasattr(triton, "jit")
