"""Transformer forward at VOID's full size, random bf16 weights: plain diffusers against our accelerated variants.

Run on the device (see docs/performance.md for the exact command). Prints a table and writes JSON:
seconds per forward (median of timed calls, CUDA events), achieved TFLOP/s against the FLOP count of
docs/performance.md, the fraction of the measured bf16 matmul peak, peak memory, and each variant's output
against the plain eager output (relative L2 error: lossless variants must stay at bf16 rounding level).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_size import FULL_TRANSFORMER, add_clip_args, forward_flops, latent_grid, random_transformer, rotary  # noqa: E402
from void_server.pipelines.void.accel import accelerate_transformer, fuse_feed_forward_gelu, compile_cache_dir  # noqa: E402


def matmul_peak(device: torch.device, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def time_calls(fn: Callable[[], torch.Tensor], warmup: int, reps: int) -> List[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e) / 1e3)
    return out


# Kernel names -> where a forward's GPU time goes. Order matters: cuDNN/flash attention kernels also carry "sm90",
# and Triton templates of max-autotune GEMMs carry "triton".
KERNEL_CLASSES = (
    ("collectives", ("nccl", "c10d", "all_to_all", "alltoall", "allgather", "all_gather")),
    ("attention", ("flash", "fmha", "sdpa", "attention", "attn")),
    ("matmul", ("gemm", "nvjet", "xmma", "cutlass", "wgmma", "triton_tem", "_mm_", "matmul")),
    ("fused norm/modulation/rope/gelu (triton)", ("triton",)),
    ("copies", ("memcpy", "memset", "copy", "cat")),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "other elementwise"


def profile_split(fwd: Callable[[], torch.Tensor], seconds_per_forward: float, reps: int = 3,
                  top_n: int = 8) -> Dict[str, object]:
    """GPU time per kernel class for one forward, the launch gaps (wall time with no kernel running), and the
    `top_n` longest kernels: ms per forward and calls per forward."""
    from torch.profiler import ProfilerActivity, profile

    gpu = torch.cuda.is_available()  # else (a --smoke run) CPU ops stand in for kernels
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    fwd()
    sync()
    with profile(activities=[ProfilerActivity.CUDA if gpu else ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fwd()
        sync()
    split: Dict[str, float] = {}
    top: Dict[str, float] = {}
    calls: Dict[str, float] = {}
    for evt in prof.key_averages():
        t = (getattr(evt, "self_device_time_total", 0) if gpu else evt.self_cpu_time_total) or 0  # us, all reps
        if t <= 0:
            continue
        cls = kernel_class(evt.key)
        split[cls] = split.get(cls, 0.0) + t / 1e6 / reps
        top[evt.key[:90]] = t / 1e6 / reps
        calls[evt.key[:90]] = evt.count / reps
    busy = sum(split.values())
    split["gaps (no kernel running)"] = max(seconds_per_forward - busy, 0.0)
    ranked = sorted(top.items(), key=lambda kv: -kv[1])[:top_n]
    return {"seconds": split, "top_kernels": dict(ranked), "calls_per_forward": {k: calls[k] for k, _ in ranked}}


def main() -> None:
    ap = argparse.ArgumentParser()
    add_clip_args(ap)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--variants", default="eager,eager_lean,compiled,compiled_lean")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--compile-cache", default=None, help="inductor cache dir (warm-start measurement)")
    ap.add_argument("--profile", action="store_true", help="split each variant's batch-1 forward by kernel class")
    ap.add_argument("--profile-batches", default="1", help="batches --profile splits (comma-separated)")
    ap.add_argument("--top", type=int, default=8, help="kernels --profile lists, longest first")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    if args.compile_cache:
        compile_cache_dir(Path(args.compile_cache))

    device = torch.device("cuda")
    peak = matmul_peak(device)
    t_lat, h, w = latent_grid(args.frames, args.height, args.width)
    flops = forward_flops(t_lat, h, w)
    rot = rotary(t_lat, h, w, device)
    batches = [int(b) for b in args.batches.split(",")]
    # The same inputs for every variant, so outputs compare.
    inputs = {}
    for batch in batches:
        gen = torch.Generator(device).manual_seed(batch)
        inputs[batch] = (torch.randn(batch, t_lat, 48, h, w, device=device, dtype=torch.bfloat16, generator=gen),
                         torch.randn(batch, 226, 4096, device=device, dtype=torch.bfloat16, generator=gen) * 0.1)
    results: List[Dict[str, object]] = []
    baseline: Dict[int, torch.Tensor] = {}
    for variant in args.variants.split(","):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = random_transformer(FULL_TRANSFORMER, device, torch.bfloat16, seed=0)
        if variant == "fp32":
            # The same (bf16-representable) weights in float32: the reference every bf16 variant is measured
            # against, so "lossless" means "as close to exact as plain bf16 is".
            model = model.float()
        t0 = time.perf_counter()
        # "..._lean" = our processor with the auto backend order; "..._cudnn" / "..._flash" pin one SDPA backend;
        # "..._fa4" runs FlashAttention-4 (the flash-attn-4 package, if installed).
        # "..._gelu" also fuses the feed-forward's GELU into its GEMM (accel.FusedGELUProjection); "..._cg" compiles
        # the blocks with mode="reduce-overhead" (CUDA graphs, one per block and shape).
        flags = variant.split("_")
        fuse, graphs = "gelu" in flags, "cg" in flags
        base = "_".join(f for f in flags if f not in ("gelu", "cg"))
        mode = "max-autotune-no-cudagraphs" if "autotune" in flags else ("reduce-overhead" if graphs else None)
        backend = next((b for b in ("cudnn", "flash", "efficient", "fa4") if base.endswith("_" + b)), "auto" if "lean" in base else None)
        if fuse:
            fuse_feed_forward_gelu(model)
        if backend is not None:
            accelerate_transformer(model, attention=backend, compile_blocks=variant.startswith("compiled"), compile_mode=mode)
        elif variant.startswith("compiled"):
            for block in model.transformer_blocks:
                block.compile(fullgraph=True, dynamic=False, mode=mode)
        for batch in batches:
            x, text = inputs[batch]
            if variant == "fp32":
                x, text = x.float(), text.float()
            ts = torch.full((batch,), 500, device=device)

            def fwd() -> torch.Tensor:
                if graphs:  # a new forward: the blocks' graph outputs of the last one may be overwritten
                    torch.compiler.cudagraph_mark_step_begin()
                with torch.no_grad():
                    return model(hidden_states=x, encoder_hidden_states=text, timestep=ts,
                                 image_rotary_emb=rot, return_dict=False)[0]

            first_start = time.perf_counter()
            out = fwd()
            torch.cuda.synchronize()
            first = time.perf_counter() - first_start + (first_start - t0 if batch == 1 else 0.0)
            times = time_calls(fwd, warmup=1, reps=args.reps)
            med = statistics.median(times)
            key = batch
            if variant in ("eager", "fp32"):
                baseline[(variant, key)] = out.float()

            def rel_to(name: str):
                ref = baseline.get((name, key))
                return None if ref is None else float((out.float() - ref).norm() / ref.norm())

            rel = rel_to("eager")
            row = {
                "variant": variant, "batch": batch, "frames": args.frames, "tokens": (t_lat // 2) * (h // 2) * (w // 2) + 226,
                "s_per_forward": med, "first_call_s": first, "tflops": flops * batch / med / 1e12,
                "mfu_of_measured_peak": flops * batch / med / 1e12 / peak, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                "rel_l2_vs_eager": rel, "rel_l2_vs_fp32": rel_to("fp32"), "finite": bool(torch.isfinite(out).all()),
                "cudagraph_skips": int(torch._dynamo.utils.counters["inductor"].get("cudagraph_skips", 0)),
            }
            if args.profile and str(batch) in args.profile_batches.split(","):
                row["profile"] = profile_split(fwd, med, top_n=args.top)
            results.append(row)
            print(json.dumps(row), flush=True)
        # dynamo's caches keep the compiled blocks (and so the weights) alive: without this a later variant's peak
        # memory counted the previous variant's 10 GB model too
        del model
        torch._dynamo.reset()
        gc.collect()
    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "matmul_peak_tflops": peak,
               "flops_per_forward": flops, "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "transformer_%df%s.json" % (args.frames, "_warm" if args.compile_cache and os.environ.get("VOID_BENCH_WARM") else "")
    (Path(args.out) / name).write_text(json.dumps(summary, indent=1))
    print("\nmeasured bf16 matmul peak: %.0f TFLOP/s; %.3g FLOP per forward" % (peak, flops))
    print("%-14s %5s %10s %10s %8s %6s %8s %10s %10s" % ("variant", "batch", "s/fwd", "first s", "TFLOP/s", "MFU", "peakGiB",
                                                      "vs eager", "vs fp32"))
    fmt = lambda v: "-" if v is None else "%.2e" % v  # noqa: E731
    for r in results:
        print("%-14s %5d %10.4f %10.2f %8.0f %5.0f%% %8.1f %10s %10s" % (
            r["variant"], r["batch"], r["s_per_forward"], r["first_call_s"], r["tflops"], 100 * r["mfu_of_measured_peak"],
            r["peak_gib"], fmt(r["rel_l2_vs_eager"]), fmt(r["rel_l2_vs_fp32"])))
    for r in results:
        if "profile" in r:
            print("\n%s, batch %d: where %.3f s per forward goes" % (r["variant"], r["batch"], r["s_per_forward"]))
            for cls, sec in sorted(r["profile"]["seconds"].items(), key=lambda kv: -kv[1]):
                print("  %-44s %7.1f ms  %5.1f%%" % (cls, sec * 1e3, 100 * sec / r["s_per_forward"]))
            calls = r["profile"].get("calls_per_forward", {})
            for name, sec in r["profile"]["top_kernels"].items():
                n = calls.get(name, 0)
                print("    %7.2f ms  %5g calls  %8.1f us/call  %s" % (sec * 1e3, n, sec * 1e6 / n if n else 0.0, name))


if __name__ == "__main__":
    main()
