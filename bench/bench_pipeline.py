"""VOID end to end on the GPU at full size, random weights, through the server's own code path.

A random-weight model dir is written in the real on-disk layout (`tiny.build_random_model_dir(size="full")`), loaded
by `VoidPipeline` exactly as real weights are, and a synthetic plate (default 85 frames at 1920x1080, a moving
object) goes through quadmask -> pass 1 -> warped noise -> pass 2 -> plate-resolution merge. Runs:

  cold      first job: loads every model, compiles the transformer blocks
  warm      the same job again with the models resident: the headline figure
  busy      a warm job under torch's profiler (CUDA activity only): the GPU's busy and idle time per stage and the
            longest idle gaps (gpu_busy.py), i.e. what overlapping host work could still win
  sdpa      the same job with diffusers' own attention processor instead of `--attention`'s choice (with auto on a
            Hopper GPU that has flash-attn-4: FlashAttention-4 against SDPA, same weights); run it twice, as its first
            job recompiles the blocks
  eager     the same job with compilation off (torch.compiler.set_stance("force_eager")): plain bf16 diffusers math,
            to show the compiled output equals it (relative L2 of the clean frames) and what compilation buys
  steps     lossy option: fewer denoising steps (20 + 25 instead of 30 + 50)
  stepcache lossy option: the first-block step cache (--step-cache threshold, default 0.1); reports its hit rate
  fp8       lossy option: the transformer blocks' linears in float8 (GPU of compute capability 8.9+; skipped elsewhere)
  fastest   step cache + fp8 + fewer steps together
Every run after `warm` reports its speed-up against it and PSNR and SSIM (luminance) of its clean frames against the
warm run's, over the edit region (quadmask != 255) and the whole frame.

Prints a table and writes JSON under $OUT. Random weights: speed and memory are real, images are not, so PSNR
figures here only show the procedure, not quality.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from void_server.media.frames import ArrayFrames, MemorySink  # noqa: E402
from void_server.pipelines.base import PipelineInputs, PipelineSettings  # noqa: E402
from void_server.pipelines.void.accel import VAE_COMPILE_PARTS  # noqa: E402
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402
from void_server.pipelines.void.step_cache import hit_rate_from_notes  # noqa: E402
from void_server.pipelines.void.tiny import build_random_model_dir  # noqa: E402
from void_server.quality.metrics import compare_clips  # noqa: E402


# The 1-GPU jobs --runs may name (main's dispatch): plain, attention, lossy.
# "newprompt": a warm job with a prompt no job has used, so T5 runs in it (the other runs repeat one prompt, cached)
RUNS = ("cold", "warm", "busy", "newprompt", "sdpa", "eager", "steps", "stepcache", "fp8", "fastest")


def cuda_stubs_for_cpu() -> None:
    """--smoke: the timing and memory calls of a GPU run made harmless, so the script runs on the CPU as written."""
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        setattr(torch.cuda, name, lambda *a, **k: None)
    torch.cuda.max_memory_allocated = lambda *a, **k: 0
    torch.cuda.get_device_name = lambda *a, **k: "cpu (smoke)"


def synthetic_clip(frames: int, h: int, w: int):
    """A textured plate with a disc moving across it; the disc is the target, its 'shadow' the affected region."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.2 + 0.1 * np.sin(xx / 37.0), 0.3 + 0.1 * np.cos(yy / 23.0), 0.25 + 0.05 * np.sin((xx + yy) / 51.0)], -1)
    plate = np.empty((frames, h, w, 3), np.float32)
    quad = np.full((frames, h, w), 255, np.uint8)
    r = h // 10
    for i in range(frames):
        cx, cy = int(w * (0.3 + 0.4 * i / max(frames - 1, 1))), h // 2
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        shadow = (xx - cx - r // 2) ** 2 / 4 + (yy - cy - r) ** 2 < r * r / 2
        plate[i] = base
        plate[i][shadow] *= 0.5
        plate[i][disc] = (0.8, 0.2, 0.1)
        quad[i][shadow] = 127
        quad[i][disc] = 0
        quad[i][disc & shadow] = 63
    return plate, quad


def run_job(pipe: VoidPipeline, plate, quad, workdir: Path, progress: Optional[Callable[[object], None]] = None,
            frames: bool = True, **settings) -> Dict[str, object]:
    """One timed job. `progress` sees the pipeline's progress events; `frames` False leaves the clean frames and
    the pass-1 layer out of the result (a long clip's frames need not be stacked twice)."""
    s = PipelineSettings(**dict(dict(prompt="an empty textured wall", mask_mode="quadmask", input_encoding="linear"),
                                **settings))
    inputs = PipelineInputs(plate=ArrayFrames(plate), settings=s, workdir=workdir, quadmask=ArrayFrames(quad.astype(np.float32)))
    sink = MemorySink()
    gpus = range(torch.cuda.device_count())  # this process's GPUs: a rank group's second one holds the VAE copy
    torch.cuda.synchronize()
    for i in gpus:
        torch.cuda.reset_peak_memory_stats(i)
    t0 = time.perf_counter()
    summary = pipe.run(inputs, sink, progress or (lambda p: None), lambda: False)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    t = summary.timings
    # The denoising loops scale linearly in steps (warm): what the job would take at the reference's 30 + 50.
    scale = {"pass1": 30.0 / s.steps_pass1, "pass2": 50.0 / s.steps_pass2}
    full = total + sum(t[k + ".denoise"] * (scale[k] - 1) for k in scale if k + ".denoise" in t)
    out = {"total_s": total, "full_steps_est_s": full, "stages_s": summary.timings,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "notes": summary.notes,
           # per GPU, this process's allocations only (the other ranks' transformers live in their own processes)
           "peak_gib_by_gpu": [torch.cuda.max_memory_allocated(i) / 2**30 for i in gpus]}
    if frames:
        clean = np.stack([sink.clean[i] for i in range(len(plate))])
        # The pass-1 layer too, so a difference between two runs can be placed in pass 1 or pass 2.
        layers = [(sink.layers.get(i) or {}).get("pass1") for i in range(len(plate))]
        pass1 = np.stack(layers) if all(x is not None for x in layers) else None
        out.update(clean=clean, pass1=pass1, finite=bool(np.isfinite(clean).all()))
    return out


def busy_job(pipe: VoidPipeline, plate, quad, workdir: Path, **settings) -> Dict[str, object]:
    """`run_job` under torch's profiler, CUDA activity only; the result gains `gpu_busy` (gpu_busy.busy_table)."""
    import gpu_busy
    from torch.profiler import ProfilerActivity, profile

    # --smoke (no GPU): CPU activity, so the script runs as written; its table then shows no GPU work
    activities = [ProfilerActivity.CUDA] if torch.cuda.is_available() else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        with gpu_busy.stage_spans() as spans:
            start = time.time_ns()
            res = run_job(pipe, plate, quad, workdir, **settings)
    end = start + int(res["total_s"] * 1e9)  # the job's own end, not run_job's stacking of its frames after it
    shift = gpu_busy.clock_shift(prof.profiler.kineto_results.trace_start_ns())
    spans = [(name, s + shift, e + shift) for name, s, e in spans]
    intervals = gpu_busy.gpu_intervals(prof)
    res["gpu_busy"] = gpu_busy.busy_table(gpu_busy.merge(intervals), spans, (start + shift, end + shift))
    res["gpu_busy"]["gpu_activities"] = len(intervals)
    return res


def versus(res: Dict[str, object], ref: Dict[str, object], quad: np.ndarray) -> Dict[str, float]:
    """A run's clean frames against a reference run's (the warm 1-GPU job): relative L2, PSNR and SSIM over the
    whole frame and the edit region (quality.metrics, as `void-server quality` measures them), the speed-up, and the
    pass-1 layer's relative L2 where both have one (which places a difference in pass 1 or pass 2)."""
    m = compare_clips(res["clean"], ref["clean"], quad)
    out = {"rel_l2_vs_warm": m["rel_l2"], "psnr_vs_warm_db": m["psnr_db"], "psnr_vs_warm_edit_db": m["psnr_edit_db"],
           "ssim_vs_warm": m["ssim"], "ssim_vs_warm_edit": m["ssim_edit"],
           "speedup_vs_warm": ref["total_s"] / res["total_s"]}
    if res.get("pass1") is not None and ref.get("pass1") is not None:
        out["rel_l2_pass1_vs_warm"] = float(np.linalg.norm(res["pass1"] - ref["pass1"]) / np.linalg.norm(ref["pass1"]))
    return out


@contextlib.contextmanager
def diffusers_attention(pipe: VoidPipeline) -> Iterator[None]:
    """The job with diffusers' own attention processor in both transformers (whatever `--attention` chose), the
    processors given back after: the same loaded weights, so outputs and times compare."""
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    blocks = [b.attn1 for p in (1, 2) for b in pipe.models.transformer(p).transformer_blocks]
    before = [a.processor for a in blocks]
    plain = CogVideoXAttnProcessor2_0()
    for a in blocks:
        a.set_processor(plain)
    try:
        yield
    finally:
        for a, proc in zip(blocks, before):
            a.set_processor(proc)


def build_pipeline(args, model_dir: Path, device: str, gpus: int, rows: List[Dict[str, object]]) -> VoidPipeline:
    """The pipeline the command line asks for, over `gpus` GPUs; its construction time becomes a row."""
    t0 = time.perf_counter()
    pipe = VoidPipeline(model_dir, device=device, memory_mode=args.memory_mode, gpus=gpus, compile_vae=args.compile_vae,
                        attention=args.attention, vae_unit=args.vae_unit, cuda_graphs=args.cuda_graphs,
                        vae_rewrites=args.vae_rewrites, decode_cut=args.decode_cut if gpus > 1 else None,
                        **(dict(model_size=(64, 112), window_frames=21) if args.smoke else {}))
    rows.append({"run": "construct pipeline" + (", %d GPUs" % gpus if gpus > 1 else ""),
                 "total_s": time.perf_counter() - t0})
    return pipe


def multi_gpu_runs(args, model_dir: Path, device: str, plate, quad, common: dict, results: Dict[str, Dict[str, object]],
                   rows: List[Dict[str, object]], kept: List[tuple]) -> VoidPipeline:
    """--gpus N: the same job with its denoising over N GPUs (pipelines/void/parallel/group.py), once per label of
    --gpu-runs (cold, warm, ...), each compared with the 1-GPU warm run (`versus`; relative L2 0 when the split is
    exact) where that has run; else its (row, result) is kept for `compare_later`. Peak memory is rank 0's GPU
    only. Returns the N-GPU pipeline."""
    gc.collect()  # any 1-GPU pipeline is gone; GPU 0 is rank 0's now
    torch.cuda.empty_cache()
    pipe = build_pipeline(args, model_dir, device, args.gpus, rows)
    ref = results.get("warm") or results.get("cold")
    for run in args.gpu_runs.split(","):
        res = run_job(pipe, plate, quad, Path("/tmp/void-bench-jobs") / ("gpus%d-%s-%s" % (args.gpus, run, time.time())), **common)
        row = {k: v for k, v in res.items() if k not in ("clean", "pass1")}
        row["run"] = "%d GPUs %s" % (args.gpus, run)
        if ref is not None:
            row.update(versus(res, ref, quad))
        else:
            kept.append((row, res))
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    return pipe


def compare_later(kept: List[tuple], results: Dict[str, Dict[str, object]], quad: np.ndarray) -> None:
    """--multi-first: the N-GPU rows get their comparison with the 1-GPU warm run once it exists."""
    ref = results.get("warm") or results.get("cold")
    for row, res in kept if ref is not None else []:
        row.update(versus(res, ref, quad))
        print(json.dumps(row, default=str), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=None, help="default 85 (--smoke: 9)")
    ap.add_argument("--plate", default=None, help="HxW of the synthetic plate, default 1080x1920 (--smoke: 90x160)")
    ap.add_argument("--memory-mode", default="gpu")
    ap.add_argument("--runs", default="cold,warm,eager,steps",
                    help="the 1-GPU jobs, in order, from: %s; \"\" for none" % ", ".join(RUNS))
    ap.add_argument("--noise-mode", default="reference")
    ap.add_argument("--model-dir", default="/tmp/void-full")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny random models: checks this script, measures nothing")
    ap.add_argument("--step-cache", type=float, default=0.1, help="threshold of the stepcache and fastest runs")
    ap.add_argument("--compile-vae", default=None, choices=tuple(VAE_COMPILE_PARTS),
                    help="the VAE parts to compile (default: the pipeline's, both in the gpu memory mode)")
    ap.add_argument("--vae-unit", default=None, choices=("precompiled", "whole", "blocks"),
                    help="how the VAE is compiled (default: accel.VAE_COMPILE_UNIT's choice per part)")
    ap.add_argument("--vae-rewrites", default=None, choices=("on", "off"),
                    help="the compiled VAE's layout rewrites (vae_rewrites.py; default: the pipeline's, on in gpu mode)")
    ap.add_argument("--attention", default="auto",
                    help="the pipeline's attention option (auto: FlashAttention-4 where installed, else SDPA)")
    ap.add_argument("--gpus", type=int, default=1, help="also run the job over this many GPUs (after the 1-GPU runs)")
    ap.add_argument("--gpu-runs", default="cold,warm", help="--gpus > 1: the N-GPU jobs' labels, in order")
    ap.add_argument("--multi-first", action="store_true", help="--gpus > 1: the N-GPU jobs before the 1-GPU ones "
                    "(their VAE graphs on GPU 0 are then compiled once for both: a shorter call)")
    ap.add_argument("--decode-cut", default=None, help="--gpus > 1: the pipeline option decode_cut (default: the "
                    "pipeline's; none: the VAE only on the first GPU)")
    ap.add_argument("--job-steps", default=None, metavar="P1,P2",
                    help="denoising steps of the cold/warm jobs (default the reference's 30,50); each row then also "
                    "gives full_steps_est_s, its total with the denoising scaled to 30 + 50 steps")
    ap.add_argument("--cuda-graphs", default=None, choices=("on", "off"),
                    help="the transformer blocks replayed as CUDA graphs (default: the pipeline's, off)")
    ap.add_argument("--memory-cap-gib", type=float, default=None,
                    help="allow this process at most this much GPU memory (torch's allocator refuses more), to stand "
                    "in for a smaller card: 22 for a 24 GB one, whose CUDA context and driver take the rest")
    args = ap.parse_args()
    args.cuda_graphs = None if args.cuda_graphs is None else args.cuda_graphs == "on"
    args.vae_rewrites = None if args.vae_rewrites is None else args.vae_rewrites == "on"
    # Before any job: a bad name found after the first minutes of GPU work wastes them (the twelfth session's
    # `--runs none` ended that way, and its process then did not exit).
    unknown = [r for r in args.runs.split(",") if r and r not in RUNS]
    if unknown:
        ap.error("unknown --runs %s (known: %s; \"\" runs none)" % (", ".join(unknown), ", ".join(RUNS)))
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        cuda_stubs_for_cpu()
    # --smoke checks the script: a small plate keeps it to minutes on two CPU cores
    args.frames = args.frames or (9 if args.smoke else 85)
    args.plate = args.plate or ("90x160" if args.smoke else "1080x1920")
    h, w = (int(v) for v in args.plate.split("x"))
    if args.memory_cap_gib and not args.smoke:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib * 2**30 / total))
    model_dir = Path(args.model_dir)
    rows: List[Dict[str, object]] = []
    if not (model_dir / "void_pass2.safetensors").is_file():
        t0 = time.perf_counter()
        build_random_model_dir(model_dir, size="tiny" if args.smoke else "full", device=device, raft=True)
        rows.append({"run": "write random full-size model dir", "total_s": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)

    plate, quad = synthetic_clip(args.frames, h, w)
    results: Dict[str, Dict[str, object]] = {}
    # RAFT cannot run at the smoke test's tiny model size, so the smoke test stops after pass 1.
    common = dict(noise_mode=args.noise_mode, roi=True, passes=1 if args.smoke else 2)
    if args.job_steps:
        if set(args.runs.split(",")) & {"steps", "fastest"}:
            raise SystemExit("--job-steps changes the step counts the steps/fastest runs compare against; run them apart")
        common["steps_pass1"], common["steps_pass2"] = (int(v) for v in args.job_steps.split(","))
    kept: List[tuple] = []
    multi_describe = None
    if args.gpus > 1 and args.multi_first:
        multi = multi_gpu_runs(args, model_dir, device, plate, quad, common, results, rows, kept)
        multi_describe = multi.describe()
        multi.close()
        del multi
        gc.collect()
        torch.cuda.empty_cache()
    pipe = build_pipeline(args, model_dir, device, 1, rows)
    for run in [r for r in args.runs.split(",") if r]:  # --runs "": the N-GPU jobs only
        workdir = Path("/tmp/void-bench-jobs") / ("%s-%s" % (run, time.time()))
        if run in ("cold", "warm"):
            res = run_job(pipe, plate, quad, workdir, **common)
        elif run == "busy":
            res = busy_job(pipe, plate, quad, workdir, **common)
        elif run == "newprompt":
            res = run_job(pipe, plate, quad, workdir, prompt="an empty textured wall, take %f" % time.time(), **common)
        elif run == "sdpa":
            with diffusers_attention(pipe):
                res = run_job(pipe, plate, quad, workdir, **common)
        elif run == "eager":
            with torch.compiler.set_stance("force_eager"):
                res = run_job(pipe, plate, quad, workdir, **common)
        elif run == "steps":
            res = run_job(pipe, plate, quad, workdir, steps_pass1=20, steps_pass2=25, **common)
        elif run == "stepcache":
            res = run_job(pipe, plate, quad, workdir, step_cache=args.step_cache, **common)
        elif run in ("fp8", "fastest"):
            from void_server.pipelines.void.fp8_linear import support_problem

            problem = support_problem(torch.device(device))
            if problem is not None:
                print("skipping the %s run: %s" % (run, problem), flush=True)
                continue
            lossy = dict(step_cache=args.step_cache, steps_pass1=20, steps_pass2=25) if run == "fastest" else {}
            res = run_job(pipe, plate, quad, workdir, fp8_matmul=True, **lossy, **common)
        else:  # main checked the names against RUNS
            raise AssertionError("run %r is in RUNS but has no job here" % run)
        results[run] = res
        row = {k: v for k, v in res.items() if k not in ("clean", "pass1")}
        row["run"] = run
        ref = results.get("warm")
        if ref is not None and run not in ("warm", "newprompt"):  # another prompt: another picture, not a variant
            row.update(versus(res, ref, quad))
        hit = hit_rate_from_notes(res["notes"])
        if hit is not None:
            row["step_cache_hit_rate"] = hit
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    if args.gpus > 1 and not args.multi_first:
        del pipe
        pipe = multi_gpu_runs(args, model_dir, device, plate, quad, common, results, rows, kept)
    compare_later(kept, results, quad)

    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "frames": args.frames,
               "plate": [h, w], "memory_mode": args.memory_mode, "memory_cap_gib": args.memory_cap_gib,
               "describe": pipe.describe(), "rows": rows}
    if multi_describe is not None:
        summary["describe_multi_gpu"] = multi_describe
    pipe.close()  # a multi-GPU pipeline's ranks and process group go down before the interpreter does
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("pipeline_%df_%s.json" % (args.frames, args.memory_mode))).write_text(json.dumps(summary, indent=1, default=str))
    print("\n%-34s %8s %8s %8s %8s %8s %9s %9s" % ("run", "total s", "pass1", "pass2", "merge", "peakGiB", "relL2", "PSNR dB"))
    for r in rows:
        st = r.get("stages_s", {}) or {}
        print("%-34s %8.2f %8s %8s %8s %8s %9s %9s" % (
            r["run"], r["total_s"], "%.2f" % st["pass1"] if "pass1" in st else "-", "%.2f" % st["pass2"] if "pass2" in st else "-",
            "%.2f" % st["merge"] if "merge" in st else "-", "%.1f" % r["peak_gib"] if "peak_gib" in r else "-",
            "%.2e" % r["rel_l2_vs_warm"] if "rel_l2_vs_warm" in r else "-",
            "%.1f" % r["psnr_vs_warm_db"] if "psnr_vs_warm_db" in r else "-"))
    print("\n%-20s %8s %10s %10s %10s %10s %10s" % ("against warm", "speed-up", "PSNR edit", "PSNR frame", "SSIM edit",
                                                   "SSIM frame", "cache hit"))
    for r in rows:
        if "speedup_vs_warm" in r:
            print("%-20s %7.2fx %10.2f %10.2f %10.4f %10.4f %10s" % (
                r["run"], r["speedup_vs_warm"], r["psnr_vs_warm_edit_db"], r["psnr_vs_warm_db"], r["ssim_vs_warm_edit"],
                r["ssim_vs_warm"], "%.0f%%" % (100 * r["step_cache_hit_rate"]) if "step_cache_hit_rate" in r else "-"))

    for r in rows:
        if "gpu_busy" in r:
            print_busy(r["run"], r["gpu_busy"])


def print_busy(run: str, table: Dict[str, object]) -> None:
    job = table["job"]
    print("\n%s: GPU busy %.2f of %.2f s, idle %.2f s" % (run, job["gpu_busy_s"], job["wall_s"], job["gpu_idle_s"]))
    print("%-28s %8s %8s %8s" % ("stage", "wall s", "busy s", "idle s"))
    for name, st in table["stages"].items():
        print("%-28s %8.3f %8.3f %8.3f" % (name, st["wall_s"], st["gpu_busy_s"], st["gpu_idle_s"]))
    print("longest idle gaps: " + ", ".join("%.1f ms at %.2f s (%s)" % (1e3 * g["idle_s"], g["at_s"], g["stage"])
                                             for g in table["longest_gaps"][:10]))


if __name__ == "__main__":
    main()
