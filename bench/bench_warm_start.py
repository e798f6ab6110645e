"""A server start, cold and with a warm compile cache: how long from process start to full speed (issue #6's
"full speed within 10 s of loading the weights", now with the VAE compiled too).

    python3 bench/bench_warm_start.py [--model-dir /tmp/void-full] [--gpus 1]

Each start is a fresh process sharing one inductor cache folder (what `DATA_DIR/compile-cache` is to a server): the
first start finds it empty, the second finds what the first compiled. Each process runs `VoidPipeline.warm_up()` as
a server does: it loads every model (the weights' time, its `load` stage) and compiles every graph a one-window job
runs (one window's VAE encode and decode, one step of each pass); then the same warm-up again, which is the speed
the first job would then get.
Prints a table and writes JSON under $OUT.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent


def one_start(args: argparse.Namespace) -> Dict[str, object]:
    """In the child: load, warm up twice, report."""
    sys.path.insert(0, str(HERE.parents[0] / "server"))

    from void_server.pipelines.void.accel import compile_cache_dir
    from void_server.pipelines.void.pipeline import VoidPipeline
    from void_server.pipelines.void import precompiled

    compile_cache_dir(Path(args.cache))
    t0 = time.perf_counter()
    small = dict(model_size=(64, 112), window_frames=21, device="cpu") if args.smoke else {}
    pipe = VoidPipeline(Path(args.model_dir), memory_mode="gpu", gpus=args.gpus, vae_unit=args.vae_unit, **small)
    m = pipe.models
    built = time.perf_counter() - t0
    first = pipe.warm_up(pin_text_ahead=not args.pin_after_vae)
    again = pipe.warm_up()
    loaded = built + first["load"]  # the weights are in at the end of the warm-up's `load` stage
    ready = built + _total(first)
    parallel = pipe.describe().get("parallel")  # a rank group's: what each rank loaded ahead, and how long it took
    pipe.close()
    from torch._dynamo.utils import compile_times, counters

    # where a start's compile time goes: dynamo's per-phase totals and the inductor caches' hits and misses
    print(compile_times(repr="str", aggregate=True), file=sys.stderr, flush=True)
    return {"inductor_counters": {k: v for k, v in counters["inductor"].items() if "cache" in k},
            "attention": m.attention or "sdpa",
            "load_s": loaded, "ready_s": ready, "after_load_s": ready - loaded,
            "warm_up_s": first, "warm_up_total_s": _total(first), "second_warm_up_s": again,
            "second_warm_up_total_s": _total(again), "compiled_vae": m.compile_vae,
            "vae_unit": m.vae_unit, "pin_after_vae": args.pin_after_vae,
            "vae_precompiled_events": [event for _, event in precompiled.events(m.vae)],
            "compiled_blocks": m.compile_blocks, "parallel": parallel}



def _total(timings: Dict[str, float]) -> float:
    from void_server.pipelines.stage_clock import top_level

    return sum(top_level(timings).values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="/tmp/void-full")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny random models: checks this script, measures nothing")
    ap.add_argument("--keep-cache", default=None, metavar="DIR",
                    help="compile into DIR (new or empty) and keep it, e.g. for bench_pipeline.py to start warm from "
                         "(TORCHINDUCTOR_CACHE_DIR=DIR TRITON_CACHE_DIR=DIR/triton)")
    ap.add_argument("--vae-unit", default=None, choices=("precompiled", "whole", "blocks"),
                    help="how the VAE is compiled (default: accel.VAE_COMPILE_UNIT's choice per part)")
    ap.add_argument("--pin-after-vae", action="store_true",
                    help="pin T5's host copy after the VAE's warm-up instead of beside it (does the pinning slow it?)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(one_start(args)), flush=True)
        return
    if args.smoke and not (Path(args.model_dir) / "void_pass2.safetensors").is_file():
        sys.path.insert(0, str(HERE.parents[0] / "server"))
        from void_server.pipelines.void.tiny import build_random_model_dir

        build_random_model_dir(args.model_dir, size="tiny", raft=True)
    rows: List[Dict[str, object]] = []
    keep = contextlib.nullcontext(args.keep_cache) if args.keep_cache else None
    with keep or tempfile.TemporaryDirectory(prefix="void-compile-cache-") as cache:
        for name in ("cold cache", "warm cache"):
            cmd = [sys.executable, __file__, "--child", "--cache", cache, "--model-dir", args.model_dir,
                   "--gpus", str(args.gpus)] + (["--smoke"] if args.smoke else []) + (
                       ["--vae-unit", args.vae_unit] if args.vae_unit else []) + (
                       ["--pin-after-vae"] if args.pin_after_vae else [])
            t0 = time.perf_counter()
            # Triton's kernel cache too (default ~/.triton/cache): a machine that compiled these graphs before
            # would otherwise hand the first process its kernels
            env = dict(os.environ, TRITON_CACHE_DIR=os.path.join(cache, "triton"))
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
            out = done.stdout
            print("\n".join(line for line in done.stderr.splitlines() if "warn" not in line.lower())[-3000:], flush=True)
            row = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
            row.update(start=name, process_s=time.perf_counter() - t0)
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "warm_start.json").write_text(json.dumps(rows, indent=1))
    print("\n%-12s %8s %15s %13s %16s %11s" % ("start", "loaded at", "full speed at", "after load", "2nd warm-up s",
                                               "process s"))
    for r in rows:
        print("%-12s %8.1f %15.1f %13.1f %16.1f %11.1f" % (r["start"], r["load_s"], r["ready_s"], r["after_load_s"],
                                                        r["second_warm_up_total_s"], r["process_s"]))


if __name__ == "__main__":
    main()
