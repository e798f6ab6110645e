"""Two kernel-level levers of the transformer forward, measured alone at VOID's full size (device, one GPU):

    python3 bench/bench_fusions.py [--tokens 11314] [--tiles 192x128,192x192,128x128,192x160]

1. The feed-forward's first linear + tanh GELU: eager (cuBLAS GEMM, then an elementwise kernel), compiled (inductor
   fuses the bias and GELU into one Triton kernel after the GEMM), and cuBLASLt's GELU_BIAS epilogue
   (`torch._addmm_activation(use_gelu=True)`, one kernel, no round trip of the 4d-wide hidden state through
   memory). Each against float32 math on the same inputs.
2. FlashAttention-4's forward tile (tile_m x tile_n) at head dim 64, batch 1 and 2.
3. `--exp-splits off,1/8,1/4,skip,sum4`: FlashAttention-4's Hopper forward with its softmax varied
   (fa4_softmax_variants.py: a share of the exponentials on the FMA units, the unit rescale skipped, the row sum in
   partial sums), timed at batch 1 and 2 and each against float32 attention on the same inputs, at two logit
   scales (random q, k, v; and q x 4, for peakier rows).
Prints a table and writes JSON under $OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from report import print_markdown_table  # noqa: E402


def timed(fn: Callable[[], object], reps: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps / 1e3


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b).norm() / b.norm())


def gelu_rows(tokens: int, rows: List[Dict[str, object]]) -> None:
    d, inner = 3072, 12288
    g = torch.Generator("cuda").manual_seed(0)
    w = torch.randn(inner, d, device="cuda", generator=g, dtype=torch.bfloat16) * d ** -0.5
    b = torch.randn(inner, device="cuda", generator=g, dtype=torch.bfloat16) * 0.1
    # Which GELU the epilogue computes (the tanh form is CogVideoX's; the erf form differs by up to ~5e-4): float32
    # inputs, so the difference is not lost under bf16 rounding.
    x32 = torch.randn(4096, d, device="cuda", generator=g) * 3
    pre = F.linear(x32, w.float(), b.float())
    got = torch._addmm_activation(b.float(), x32, w.float().t(), use_gelu=True)
    form = {"what": "epilogue GELU form (float32)", "batch": 1,
            "max_abs_vs_tanh": float((got - F.gelu(pre, approximate="tanh")).abs().max()),
            "max_abs_vs_erf": float((got - F.gelu(pre)).abs().max())}
    rows.append(form)
    print(json.dumps(form), flush=True)
    for batch in (1, 2):
        x = torch.randn(batch * tokens, d, device="cuda", generator=g, dtype=torch.bfloat16)
        ref = F.gelu(F.linear(x.float(), w.float(), b.float()), approximate="tanh")

        def eager() -> torch.Tensor:
            return F.gelu(F.linear(x, w, b), approximate="tanh")

        compiled = torch.compile(lambda: F.gelu(F.linear(x, w, b), approximate="tanh"), dynamic=False)

        def epilogue() -> torch.Tensor:
            return torch._addmm_activation(b, x, w.t(), use_gelu=True)

        def gemm_only() -> torch.Tensor:
            return torch.mm(x, w.t())

        flop = 2 * batch * tokens * d * inner
        for name, fn in (("gemm only (floor)", gemm_only), ("eager linear + gelu", eager),
                         ("compiled linear + gelu", compiled), ("cuBLASLt GELU_BIAS epilogue", epilogue)):
            s = timed(fn)
            row = {"what": "ff linear+gelu", "variant": name, "batch": batch, "ms": s * 1e3,
                   "tflops": flop / s / 1e12}
            if name != "gemm only (floor)":
                row["rel_l2_vs_fp32"] = rel(fn(), ref)
            rows.append(row)
            print(json.dumps(row), flush=True)


def fa4_rows(tokens: int, tiles: List[str], rows: List[Dict[str, object]]) -> None:
    from flash_attn.cute.interface import _flash_attn_fwd

    heads, hd = 48, 64
    g = torch.Generator("cuda").manual_seed(0)
    for batch in (1, 2):
        q, k, v = (torch.randn(batch, tokens, heads, hd, device="cuda", generator=g, dtype=torch.bfloat16)
                   for _ in range(3))
        flop = 4 * batch * heads * tokens * tokens * hd
        base = None
        for tile in tiles:
            m, n = (int(x) for x in tile.split("x"))
            row: Dict[str, object] = {"what": "fa4 forward", "tile": tile, "batch": batch}
            try:
                def fn() -> torch.Tensor:
                    return _flash_attn_fwd(q, k, v, causal=False, tile_mn=(m, n))[0]

                s = timed(fn, reps=10)
                out = fn()
                base = out if base is None else base
                row.update(ms=s * 1e3, tflops=flop / s / 1e12, max_diff_vs_first_tile=float((out - base).abs().max()))
            except Exception as e:  # a tile the kernel cannot build is a result, not a failure of the bench
                row["error"] = "%s: %s" % (type(e).__name__, str(e)[:300])
            rows.append(row)
            print(json.dumps(row), flush=True)


def fa4_split_rows(tokens: int, splits: List[str], rows: List[Dict[str, object]]) -> None:
    from flash_attn.cute import flash_attn_func
    import fa4_softmax_variants as variants

    heads, hd = 48, 64
    g = torch.Generator("cuda").manual_seed(0)
    inputs = {batch: [torch.randn(batch, tokens, heads, hd, device="cuda", generator=g, dtype=torch.bfloat16)
                      for _ in range(3)] for batch in (1, 2)}
    sharp = [inputs[1][0] * 4, inputs[1][1], inputs[1][2]]
    # float32 attention on the same bf16 values (SDPA's memory-efficient kernel takes float32), batch 1 only
    want = {name: F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in qkv)).transpose(1, 2)
            for name, qkv in (("randn", inputs[1]), ("q x 4", sharp))}
    plain: Dict[str, torch.Tensor] = {}
    for text in splits:
        split = variants.install(variants.parse_variant(text))
        for batch in (1, 2):
            q, k, v = inputs[batch]
            row: Dict[str, object] = {"what": "fa4 softmax variant", "variant": text, "fields": split, "batch": batch}
            try:
                def fn() -> torch.Tensor:
                    return flash_attn_func(q, k, v, causal=False)[0]

                s = timed(fn, reps=20)
                row.update(ms=s * 1e3, tflops=4 * batch * heads * tokens * tokens * hd / s / 1e12)
                if batch == 1:
                    for name, qkv in (("randn", inputs[1]), ("q x 4", sharp)):
                        out = flash_attn_func(*qkv, causal=False)[0]
                        plain.setdefault(name, out)
                        row["rel_l2_vs_fp32" if name == "randn" else "rel_l2_vs_fp32_sharp"] = rel(out, want[name])
                        row["rel_l2_vs_plain" if name == "randn" else "rel_l2_vs_plain_sharp"] = rel(
                            out, plain[name].float())
            except Exception as e:  # a variant that fails to build is a result, not a failure of the bench
                row["error"] = "%s: %s" % (type(e).__name__, str(e)[:300])
            rows.append(row)
            print(json.dumps(row), flush=True)
    variants.install(None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=11314)
    ap.add_argument("--tiles", default="192x128,192x192,128x128,192x160,128x192")
    ap.add_argument("--skip-fa4", action="store_true")
    ap.add_argument("--skip-gelu", action="store_true")
    ap.add_argument("--exp-splits", default="", help="e.g. off,1/8,1/4/4,skip,sum4,skip+sum4 (fa4_softmax_variants.parse_variant; off = flash-attn-4 as it is)")
    args = ap.parse_args()
    rows: List[Dict[str, object]] = []
    if not args.skip_gelu:
        gelu_rows(args.tokens, rows)
    if not args.skip_fa4 and args.tiles:
        fa4_rows(args.tokens, [t for t in args.tiles.split(",") if t], rows)
    if args.exp_splits:
        fa4_split_rows(args.tokens, [t for t in args.exp_splits.split(",") if t], rows)
    Path(os.environ.get("OUT", "."), "bench_fusions.json").write_text(json.dumps(rows, indent=1))
    print_markdown_table(("what", "variant", "batch", "ms", "TFLOP/s", "rel. L2 vs float32"), [
        (r["what"], "max abs vs tanh %.2e, vs erf %.2e" % (r["max_abs_vs_tanh"], r["max_abs_vs_erf"]), "", "", "", "")
        if "max_abs_vs_tanh" in r else
        (r["what"], r.get("variant", r.get("tile")), r["batch"], "%.3f" % r["ms"] if "ms" in r else r.get("error"),
         "%.0f" % r["tflops"] if "tflops" in r else "", "%.2e" % r["rel_l2_vs_fp32"] if "rel_l2_vs_fp32" in r else "")
        for r in rows if r["what"] != "fa4 softmax variant"])
    splits = [r for r in rows if r["what"] == "fa4 softmax variant"]
    if splits:
        fmt = lambda r, key: "%.2e" % r[key] if key in r else ""  # noqa: E731
        print_markdown_table(("softmax variant", "batch", "ms", "TFLOP/s", "vs float32", "q x 4: vs float32",
                              "vs plain FA4", "q x 4: vs plain"), [
            (r["variant"], r["batch"], "%.3f" % r["ms"] if "ms" in r else r.get("error"),
             "%.0f" % r["tflops"] if "tflops" in r else "", fmt(r, "rel_l2_vs_fp32"), fmt(r, "rel_l2_vs_fp32_sharp"),
             fmt(r, "rel_l2_vs_plain"), fmt(r, "rel_l2_vs_plain_sharp")) for r in splits])

if __name__ == "__main__":
    main()
