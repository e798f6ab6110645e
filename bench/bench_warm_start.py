"""A server start, cold and with a warm compile cache: how long from process start to full speed (issue #6's
"full speed within 10 s of loading the weights", now with the VAE compiled too).

    python3 bench/bench_warm_start.py [--model-dir /tmp/void-full] [--gpus 1]

Each start is a fresh process sharing one inductor cache folder (what `DATA_DIR/compile-cache` is to a server): the
first start finds it empty, the second finds what the first compiled. Each process runs `VoidPipeline.warm_up()` as
a server does: it loads every model (the weights' time, its `load` stage) and compiles every graph a one-window job
runs (a short clip's VAE encode and decode, one step of each pass); then, with `--first-jobs N`, N full jobs (does
the first run at full speed?); then the same warm-up again.
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


def first_jobs(pipe, n: int) -> List[Dict[str, object]]:
    """`n` of bench_pipeline's jobs (85 frames of a 1080p plate, both passes) right after the warm-up: whether the
    first runs as fast as the next is whether the server was at full speed when it said ready."""
    sys.path.insert(0, str(HERE))
    from bench_pipeline import cuda_stubs_for_cpu, run_job, synthetic_clip

    smoke = pipe.models.device.type == "cpu"  # --smoke: a small clip, pass 1 only (RAFT needs larger frames)
    if smoke:
        cuda_stubs_for_cpu()
    plate, quad = synthetic_clip(9, 90, 160) if smoke else synthetic_clip(85, 1080, 1920)
    out = []
    for i in range(n):
        res = run_job(pipe, plate, quad, Path(tempfile.mkdtemp(prefix="void-first-job-")), frames=False,
                      noise_mode="reference", roi=True, passes=1 if smoke else 2)
        out.append({"total_s": res["total_s"], "stages_s": res["stages_s"]})
        print("job %d after the warm-up: %.2f s" % (i + 1, res["total_s"]), file=sys.stderr, flush=True)
    return out


def one_start(args: argparse.Namespace) -> Dict[str, object]:
    """In the child: load, warm up twice, report."""
    sys.path.insert(0, str(HERE.parents[0] / "server"))

    from void_server.pipelines.void.accel import compile_cache_dir
    from void_server.pipelines.void.pipeline import VoidPipeline
    from void_server.pipelines.void import precompiled

    compile_cache_dir(Path(args.cache))
    t0 = time.perf_counter()
    small = dict(model_size=(64, 112), window_frames=21, device="cpu") if args.smoke else {}
    pipe = VoidPipeline(Path(args.model_dir), memory_mode="gpu", gpus=args.gpus, vae_unit=args.vae_unit,
                        transformer_unit=args.transformer_unit, **small)
    m = pipe.models
    built = time.perf_counter() - t0
    first = pipe.warm_up(pin_text_ahead=not args.pin_after_vae, import_compiler_ahead=args.import_ahead,
                         defer_decoder=args.defer_decoder, encode_beside_loading=args.encode_beside_loading)
    deferred = m.decoder_warming is not None  # the decoder still warming up behind ready
    decoder_done: List[float] = []  # when that thread ended (a callback: waiting here would change the first job)
    if deferred:
        m.decoder_warming.add_done_callback(lambda _: decoder_done.append(time.perf_counter() - t0))
    loaded = built + first["load"]  # the weights are in at the end of the warm-up's `load` stage
    ready = built + _total(first)
    jobs = first_jobs(pipe, args.first_jobs) if args.first_jobs else None
    again = pipe.warm_up()
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
            "vae_unit": m.vae_unit, "pin_after_vae": args.pin_after_vae, "import_ahead": args.import_ahead,
            "first_jobs": jobs, "defer_decoder": args.defer_decoder,
            "encode_beside_loading": args.encode_beside_loading,
            "decoder_deferred": deferred, "decoder_warm_s": decoder_done[0] if decoder_done else None,
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
    ap.add_argument("--no-import-ahead", dest="import_ahead", action="store_false",
                    help="the warm-up imports torch's compiler stack at its first compiled call, not on a thread "
                    "beside the transformers' reading (the default before the fourteenth session)")
    ap.add_argument("--no-defer-decoder", dest="defer_decoder", action="store_false",
                    help="the warm-up decodes before it returns, not on a thread behind ready (the default before "
                    "the fifteenth session)")
    ap.add_argument("--encode-beside-loading", action="store_true",
                    help="the encoder's warm-up on the compiler's thread beside the transformers' reading (opt-in)")
    ap.add_argument("--first-jobs", type=int, default=0, metavar="N",
                    help="run N full jobs right after the warm-up (in each process): is the first at full speed?")
    ap.add_argument("--transformer-unit", default=None, choices=("compiled", "precompiled"),
                    help="how the transformers' blocks are compiled (pipeline option transformer_unit)")
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
                       ["--pin-after-vae"] if args.pin_after_vae else []) + (
                       [] if args.import_ahead else ["--no-import-ahead"]) + (
                       [] if args.defer_decoder else ["--no-defer-decoder"]) + (
                       ["--encode-beside-loading"] if args.encode_beside_loading else []) + (
                       ["--first-jobs", str(args.first_jobs)]) + (
                       ["--transformer-unit", args.transformer_unit] if args.transformer_unit else [])
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
        if r.get("decoder_warm_s"):
            print("%12s the decoder's warm-up behind ready ended at %.1f s" % ("", r["decoder_warm_s"]))
        if r.get("first_jobs"):
            totals = " / ".join("%.2f" % j["total_s"] for j in r["first_jobs"])
            print("%12s jobs after the warm-up: %s s" % ("", totals))


if __name__ == "__main__":
    main()
