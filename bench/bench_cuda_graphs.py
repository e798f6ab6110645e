"""The same job with the transformer blocks replayed as CUDA graphs and without (the `cuda_graphs` pipeline option),
on 1 and on N GPUs: are the frames the same, and what do the graphs save?

    python3 bench/bench_cuda_graphs.py [--size tiny|full] [--gpus 1,2] [--jobs 3]

`--size tiny` (the default) is a check, not a measurement: tiny random models (written to --model-dir if missing)
at a small model size, so a fresh machine answers in a minute or two whether the graphs replay at all, also with
the sequence-parallel all-to-alls inside them (2 GPUs: pass 1), and give the frames the plain compiled blocks give.
Each pipeline runs --jobs jobs: the first compiles, the second records the graphs, the rest replay them.
Prints a table and writes JSON under $OUT.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import cuda_stubs_for_cpu, run_job, synthetic_clip  # noqa: E402  (also puts server/ on the path)
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402
from void_server.pipelines.void.tiny import build_random_model_dir  # noqa: E402

SIZES = {  # model size, window frames, plate (h, w), frames
    "tiny": ((128, 224), 21, (270, 480), 21),
    "full": ((384, 672), 85, (1080, 1920), 85),
}


def jobs(gpus: int, graphs: bool, args, plate, quad) -> List[Dict[str, object]]:
    model_size, window, _, _ = SIZES[args.size]
    gc.collect()
    torch.cuda.empty_cache()
    pipe = VoidPipeline(Path(args.model_dir), device=args.device, memory_mode="gpu", gpus=gpus, cuda_graphs=graphs,
                        model_size=model_size, window_frames=window)
    out = []
    try:
        for k in range(args.jobs):
            # --smoke: pass 1 only (pass 2's reference noise warps at 1920x2880, minutes a job on a CPU)
            res = run_job(pipe, plate, quad, Path("/tmp/void-graph-jobs") / ("%d-%d-%d-%s" % (gpus, graphs, k, time.time())),
                          passes=1 if args.smoke else 2)
            res["describe"] = {"cuda_graphs": pipe.models.cuda_graphs}
            out.append(res)
            print(json.dumps({"gpus": gpus, "graphs": graphs, "job": k, "total_s": res["total_s"],
                              "stages_s": res["stages_s"], "peak_gib": res["peak_gib"]}, default=str), flush=True)
    finally:
        pipe.close()
    return out


def difference(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[Dict[str, float]]:
    if a is None or b is None:  # a one-pass job has no pass-1 layer apart from its clean frames
        return None
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return {"equal": bool(np.array_equal(a, b)), "max_abs": float(np.abs(a64 - b64).max()),
            "rel_l2": float(np.linalg.norm(a64 - b64) / max(np.linalg.norm(b64), 1e-30))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=tuple(SIZES))
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--model-dir", default=None, help="default /tmp/void-<size>")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="CPU (no graphs there): checks this script, measures nothing")
    args = ap.parse_args()
    args.device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        cuda_stubs_for_cpu()
    args.model_dir = args.model_dir or "/tmp/void-%s" % args.size
    if not (Path(args.model_dir) / "void_pass2.safetensors").is_file():
        build_random_model_dir(Path(args.model_dir), size=args.size, device=args.device, raft=True)
    _, _, (h, w), frames = SIZES[args.size]
    plate, quad = synthetic_clip(frames, h, w)
    rows = []
    for gpus in (int(g) for g in args.gpus.split(",")):
        plain, graphs = jobs(gpus, False, args, plate, quad), jobs(gpus, True, args, plate, quad)
        row = {"gpus": gpus, "plain_s": [r["total_s"] for r in plain], "graphs_s": [r["total_s"] for r in graphs],
               "plain_peak_gib": max(r["peak_gib"] for r in plain), "graphs_peak_gib": max(r["peak_gib"] for r in graphs),
               "graphs_on": graphs[0]["describe"]["cuda_graphs"],
               "denoise_s": {name: [[r["stages_s"].get("pass%d.denoise" % p) for p in (1, 2)] for r in runs]
                             for name, runs in (("plain", plain), ("graphs", graphs))},
               # every graphs job (compiling, recording, replaying) against the last plain one. The clean frames of
               # two plain jobs already differ (the pass-2 noise warp's float atomics, amplified by random weights),
               # so the pass-1 layer, which nothing random reaches, is where equality can show.
               "pass1_vs_plain": [difference(r["pass1"], plain[-1]["pass1"]) for r in graphs],
               "clean_vs_plain": [difference(r["clean"], plain[-1]["clean"]) for r in graphs],
               "plain_repeat": {k: difference(plain[0][k], plain[-1][k]) for k in ("pass1", "clean")}}
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("cuda_graphs_%s.json" % args.size)).write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1, default=str))
    print("\n%-5s %-24s %-24s %-10s %-22s %s" % ("gpus", "plain jobs s", "graphs jobs s", "peak GiB",
                                                 "pass-1 layer vs plain", "clean vs plain (plain vs plain)"))
    for r in rows:
        diffs = lambda ds: " ".join("-" if d is None else "=" if d["equal"] else "%.1e" % d["max_abs"] for d in ds)  # noqa: E731
        print("%-5d %-24s %-24s %-10s %-22s %s (%s)" % (
            r["gpus"], " ".join("%.2f" % s for s in r["plain_s"]), " ".join("%.2f" % s for s in r["graphs_s"]),
            "%.1f/%.1f" % (r["plain_peak_gib"], r["graphs_peak_gib"]), diffs(r["pass1_vs_plain"]),
            diffs(r["clean_vs_plain"]), diffs([r["plain_repeat"]["clean"]])))


if __name__ == "__main__":
    main()
