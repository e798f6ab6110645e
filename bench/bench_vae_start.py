"""How the VAE's compilation is cut up decides what a warm server start costs: the VAE alone, each strategy in fresh
processes sharing that strategy's compile cache (cold, then warm), on the full-size VAE (random weights) and one
85-frame 384x672 clip (every chunk shape a job uses).

    python3 bench/bench_vae_start.py [--strategies precompiled,blocks,whole] [--frames 85] [--cache DIR] [--profile]

Strategies:
- `whole`: `accel.compile_vae(unit="whole")`, the encoder and decoder each one graph per chunk shape (the `gpu`
  mode's default through the fifth session);
- `blocks`: `compile_vae(unit="blocks")`, each resnet block compiled, blocks of one shape sharing a graph;
- `precompiled`: `compile_vae(unit="precompiled")`, the encoder whole and the decoder's blocks traced by dynamo
  once and kept on disk (precompiled.py; the default): the first process builds the functions, the second only
  loads them.

Each process reports: its first encode + decode (the start's cost: compile or cache load), then the median of three
encode and decode calls (the speed a job gets), dynamo's compile-time totals, and its outputs' distance from the
eager VAE with the same weights. Prints a table and writes JSON under $OUT. `--cache DIR` keeps the strategies'
caches in DIR (a later call starts warm); `--profile` writes each process's cProfile of its first encode + decode
(where a warm start goes) under $OUT as `profile-<strategy>-<start>.txt`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from report import print_markdown_table

HERE = Path(__file__).resolve().parent


def child(args: argparse.Namespace) -> Dict[str, object]:
    sys.path.insert(0, str(HERE.parents[0] / "server"))
    import copy

    import torch

    from full_size import random_vae
    from void_server.pipelines.void.accel import compile_vae
    from void_server.pipelines.void.conditioning import vae_encode
    from void_server.pipelines.void.decode import decode_latents
    from void_server.pipelines.void import precompiled

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the CPU only for --smoke
    vae = random_vae(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    eager = copy.deepcopy(vae)
    if args.encoder_cut:  # how `precompiled` cuts the encoder (accel.VAE_COMPILE_UNIT: "whole")
        from void_server.pipelines.void import accel

        accel.VAE_COMPILE_UNIT["encoder"] = args.encoder_cut
    compile_vae(vae, "both", backend=args.backend, unit=args.strategy)  # one unit for both parts
    video = torch.rand(1, 3, args.frames, *args.size, device=dev, generator=torch.Generator(dev).manual_seed(1)) * 2 - 1

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def job() -> Dict[str, float]:
        out = {}
        sync()
        t = time.perf_counter()
        z = vae_encode(vae, video)
        sync()
        out["encode_s"] = time.perf_counter() - t
        t = time.perf_counter()
        v = decode_latents(vae, z)
        sync()
        out["decode_s"] = time.perf_counter() - t
        out["z"], out["v"] = z, v
        return out

    before = torch.cuda.memory_allocated() if dev.type == "cuda" else 0
    if args.profile_file:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        first = prof.runcall(job)
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)
        Path(args.profile_file).write_text(text.getvalue())
    else:
        first = job()
    runs = [job() for _ in range(3)]
    with torch.no_grad():  # both decodes from the eager latents, so the decode's distance is the decoder's own
        ref_z = vae_encode(eager, video)
        ref_v = decode_latents(eager, ref_z).float()
        got = {"z": runs[-1]["z"], "v": decode_latents(vae, ref_z)}
    ref_z = ref_z.float()

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.float() - b).norm() / b.norm())

    from torch._dynamo.utils import compile_times, counters

    print(compile_times(repr="str", aggregate=True), file=sys.stderr, flush=True)
    return {
        "first_encode_s": first["encode_s"], "first_decode_s": first["decode_s"],
        "encode_s": statistics.median(r["encode_s"] for r in runs),
        "decode_s": statistics.median(r["decode_s"] for r in runs),
        "rel_l2_encode_vs_eager": rel(got["z"], ref_z), "rel_l2_decode_vs_eager": rel(got["v"], ref_v),
        "inductor_cache": {k: v for k, v in counters["inductor"].items() if "cache" in k},
        "dynamo_unique_graphs": counters["stats"].get("unique_graphs", 0),
        "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else 0.0,
        # what stays allocated after the jobs beyond the VAE itself (compiled code holding copies of weights would show)
        "resident_gain_gib": (torch.cuda.memory_allocated() - before) / 2 ** 30 if dev.type == "cuda" else 0.0,
        "precompiled_events": [event for _, event in precompiled.events(vae)],
        "precompiled_fell_back": sorted({w.name for w in precompiled.wrappers(vae) if w.fell_back}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="precompiled,blocks,whole")
    ap.add_argument("--frames", type=int, default=85)
    ap.add_argument("--size", type=int, nargs=2, default=(384, 672), metavar=("H", "W"))
    ap.add_argument("--backend", default="inductor", help="torch.compile backend (eager: a quick CPU smoke test)")
    ap.add_argument("--encoder-cut", choices=("whole", "blocks"), default=None,
                    help="cut the encoder so for the precompiled strategy (default: accel.VAE_COMPILE_UNIT's whole)")
    ap.add_argument("--cache", default="", help="keep the compile caches in this folder (default: a new temporary one)")
    ap.add_argument("--profile", action="store_true", help="cProfile each process's first encode + decode")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default="whole", help=argparse.SUPPRESS)
    ap.add_argument("--result", default="", help=argparse.SUPPRESS)
    ap.add_argument("--profile-to", dest="profile_file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        Path(args.result).write_text(json.dumps(child(args)))
        return
    out_dir = Path(os.environ.get("OUT", "."))
    root = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="vae-start-"))
    root.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, object]] = []
    for strategy in [s for s in args.strategies.split(",") if s]:
        folder = root / strategy
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(folder), TRITON_CACHE_DIR=str(folder / "triton"),
                   TORCHINDUCTOR_FX_GRAPH_CACHE="1", TORCHINDUCTOR_AUTOGRAD_CACHE="1")
        for start in ("first", "second"):
            result = root / ("%s-%s.json" % (strategy, start))
            profile = out_dir / ("profile-%s-%s.txt" % (strategy, start))
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", "--strategy", strategy, "--frames",
                                   str(args.frames), "--size", *map(str, args.size), "--backend", args.backend, "--result", str(result)]
                                  + (["--encoder-cut", args.encoder_cut] if args.encoder_cut else [])
                                  + (["--profile-to", str(profile)] if args.profile else []),
                                  env=env, cwd=str(HERE),
                                  stderr=subprocess.PIPE, text=True)
            row: Dict[str, object] = {"strategy": strategy, "start": start, "process_s": time.perf_counter() - t}
            if proc.returncode != 0:
                row["error"] = proc.stderr[-3000:]
            else:
                row.update(json.loads(result.read_text()))
                row["dynamo_times"] = proc.stderr[-4000:]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("dynamo_times", "error")}), flush=True)
            if "error" in row:
                print(row["error"], flush=True)
    (out_dir / "bench_vae_start.json").write_text(json.dumps(rows, indent=1))
    print_markdown_table(
        ("strategy", "start", "first encode + decode s", "encode s", "decode s", "rel. L2 enc / dec vs eager",
         "process s"),
        [(r["strategy"], r["start"], "failed", "", "", "", "%.1f" % r["process_s"]) if "error" in r else
         (r["strategy"], r["start"], "%.1f + %.1f" % (r["first_encode_s"], r["first_decode_s"]), "%.3f" % r["encode_s"],
          "%.3f" % r["decode_s"], "%.2g / %.2g" % (r["rel_l2_encode_vs_eager"], r["rel_l2_decode_vs_eager"]),
          "%.1f" % r["process_s"]) for r in rows])

if __name__ == "__main__":
    main()
