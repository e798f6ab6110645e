"""A block's six linears at VOID's full size, bf16 against float8 `torch._scaled_mm` in its scalings: what float8
matrix work (`fp8_linear.py`, the lossy `fp8_matmul` option) can buy at best, and what the server's layer gets.

Variants, each timed on the block's shapes (q, k, v, out: 3072 -> 3072; the MLP: 3072 -> 12288 -> 3072) at
M = batch x (video + text) tokens:
- `bf16`: `F.linear` with bias (the lossless path);
- `row`: `_scaled_mm` alone, per-row activation and per-output-channel weight scales (the server's scaling), input
  already quantised; `row+fast`: the same with `use_fast_accum` (Hopper's float8 accumulation, not promoted);
- `tensor`, `tensor+fast`: one scale per operand (cuBLAS's float8 path);
- `row+bias`: `row` with the bias in the GEMM's epilogue (what the server's layer asks for);
- `layer`: the server's `Fp8Linear` as a whole (per-row quantisation, padding, GEMM, bias), compiled.
Run on the device (docs/performance.md gives the command). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transformer import time_calls  # noqa: E402
from full_size import add_clip_args, latent_grid  # noqa: E402
from void_server.pipelines.void.fp8_linear import Fp8Linear  # noqa: E402
from void_server.pipelines.void.fp8_quant import FP8, quantise_rows  # noqa: E402

# (name, in features, out features, calls per block)
LINEARS = (("q/k/v/out", 3072, 3072, 4), ("ff up", 3072, 12288, 1), ("ff down", 12288, 3072, 1))
VARIANTS = ("bf16", "row", "row+fast", "row+bias", "tensor", "tensor+fast", "layer")


def _variant(name: str, x: torch.Tensor, linear: torch.nn.Linear) -> Callable[[], torch.Tensor]:
    w, b = linear.weight, linear.bias
    if name == "bf16":
        return lambda: F.linear(x, w, b)
    if name == "layer":
        layer = torch.compile(Fp8Linear(linear), fullgraph=True, dynamic=False)
        return lambda: layer(x)
    fast, bias = name.endswith("+fast"), b if name.endswith("+bias") else None
    if name.startswith("row"):
        (x_q, x_s), (w_q, w_s) = quantise_rows(x), quantise_rows(w.float())
        w_s = w_s.reshape(1, -1).contiguous()
    else:
        x_s = (x.abs().amax().float() / 448.0).reshape(())
        w_s = (w.abs().amax().float() / 448.0).reshape(())
        x_q, w_q = (x.float() / x_s).to(FP8), (w.float() / w_s).to(FP8)
    return lambda: torch._scaled_mm(x_q, w_q.t(), scale_a=x_s, scale_b=w_s, bias=bias, out_dtype=torch.bfloat16,
                                    use_fast_accum=fast)


def main() -> None:
    ap = argparse.ArgumentParser()
    add_clip_args(ap)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    device = torch.device("cuda")
    t_lat, h, w = latent_grid(args.frames, args.height, args.width)
    tokens = (t_lat // 2) * (h // 2) * (w // 2) + 226
    rows: List[Dict[str, object]] = []
    per_block: Dict[Tuple[int, str], float] = {}
    for batch in (int(b) for b in args.batches.split(",")):
        m = batch * tokens
        for lin_name, k, n, calls in LINEARS:
            g = torch.Generator(device).manual_seed(k + n)
            linear = torch.nn.Linear(k, n, device=device, dtype=torch.bfloat16)
            with torch.no_grad():
                linear.weight.copy_(torch.randn(n, k, device=device, generator=g) * k ** -0.5)
                linear.bias.copy_(torch.randn(n, device=device, generator=g) * 0.02)
            x = torch.randn(m, k, device=device, dtype=torch.bfloat16, generator=g)
            ref = F.linear(x.float(), linear.weight.float(), linear.bias.float())
            for v in args.variants.split(","):
                with torch.no_grad():
                    try:
                        fn = _variant(v, x, linear)
                        out = fn()
                    except RuntimeError as e:  # a scaling this torch/GPU lacks: say so, go on
                        print("%s %s batch %d: %s" % (v, lin_name, batch, str(e).splitlines()[0]), flush=True)
                        continue
                    sec = statistics.median(time_calls(fn, warmup=3, reps=args.reps))
                if v in ("row", "row+fast", "tensor", "tensor+fast") and linear.bias is not None:
                    out = out + linear.bias  # the bare GEMM leaves the bias out; the error is of the whole layer
                err = float((out.float() - ref).norm() / ref.norm())
                row = {"batch": batch, "linear": lin_name, "variant": v, "m": m, "k": k, "n": n, "ms": sec * 1e3,
                       "tflops": 2 * m * k * n / sec / 1e12, "rel_l2_vs_fp32": err}
                rows.append(row)
                per_block[(batch, v)] = per_block.get((batch, v), 0.0) + sec * calls
                print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "fp8_matmul.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows,
         "ms_per_block": {"%d/%s" % bv: s * 1e3 for bv, s in per_block.items()}}, indent=1))
    print("\n%-6s %-10s %-12s %9s %9s %10s" % ("batch", "linear", "variant", "ms", "TFLOP/s", "rel L2"))
    for r in rows:
        print("%-6d %-10s %-12s %9.3f %9.0f %10.2e" % (r["batch"], r["linear"], r["variant"], r["ms"], r["tflops"],
                                                       r["rel_l2_vs_fp32"]))
    print("\nlinears per block (ms), x42 per forward:")
    for (batch, v), s in per_block.items():
        print("  batch %d %-12s %8.3f  %8.1f" % (batch, v, s * 1e3, s * 42e3))


if __name__ == "__main__":
    main()
