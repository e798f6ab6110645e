"""How VOID's cost grows (frames, ROI/plate size) and what each memory mode costs, at full size on the GPU.

Each job runs a few denoising steps only; the per-step time is measured from the second step on (the first
includes any compilation for a new window length) and the full 30 + 50-step figure is extrapolated:

    full = total - pass1.denoise - pass2.denoise + 30 x s/step(pass 1) + 50 x s/step(pass 2)

Everything outside the denoising loops (VAE, warped noise, model inputs, merge) is measured as it is.

  growth   85, 197 and 400 frames of a 1080p plate, ROI on          (--frames-list)
  roi      85 frames: ROI on, ROI off (whole 1080p frame), a 4K plate with ROI off
  memory   85 frames in each memory mode (--modes): peak GPU memory and speed; --repeat 2 records each mode's
           second job (its first pays for loading and compiling), and its estimate keeps the time the denoise
           stages spend outside their steps (an offloaded transformer's move onto the GPU)

Prints a table and writes JSON under $OUT. Random weights: speed and memory are real, images are not.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import run_job, synthetic_clip  # noqa: E402
from void_server.pipelines.void.accel import VAE_COMPILE_PARTS  # noqa: E402
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402
from void_server.pipelines.void.tiny import build_random_model_dir  # noqa: E402

FULL_STEPS = {"pass1": 30, "pass2": 50}


def measured_job(pipe: VoidPipeline, frames: int, plate_hw, steps: int, roi: bool, passes: int = 2) -> Dict[str, object]:
    """One job of `steps` + `steps` denoising steps; per-step times from progress events (synchronised), so the
    first step's compilation for a new window length is left out of the 30 + 50-step estimate."""
    plate, quad = synthetic_clip(frames, *plate_hw)
    marks: Dict[str, List[float]] = {"pass1": [], "pass2": []}

    def progress(p) -> None:
        if p.stage in marks and p.step >= 1:
            torch.cuda.synchronize()
            marks[p.stage].append(time.perf_counter())

    res = run_job(pipe, plate, quad, Path("/tmp/void-bench-jobs/%f" % time.time()), progress=progress, frames=False,
                  roi=roi, steps_pass1=steps, steps_pass2=steps, noise_mode="reference", passes=passes)
    t = res["stages_s"]
    per_step = {k: (v[-1] - v[0]) / (len(v) - 1) for k, v in marks.items() if len(v) > 1}
    full = res["total_s"] - sum(t.get(k + ".denoise", 0.0) for k in FULL_STEPS) + sum(FULL_STEPS[k] * per_step[k] for k in per_step)
    # Denoise-stage time that is not steps: moving an offloaded transformer onto the GPU, or compiling for a new
    # window length. A warm job (--repeat 2) compiles nothing, so there it is the move, which a full job pays too.
    outside = {k: t.get(k + ".denoise", 0.0) - steps * per_step[k] for k in per_step}
    return {"frames": frames, "plate": list(plate_hw), "roi": roi, "steps": steps, "total_s": res["total_s"],
            "s_per_step": per_step, "full_steps_est_s": full, "denoise_outside_steps_s": outside, "stages_s": t,
            "peak_gib": res["peak_gib"], "notes": res["notes"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="growth,roi,memory")
    ap.add_argument("--frames-list", default="85,197,400")
    ap.add_argument("--modes", default="model_offload,sequential_offload,fp8")
    ap.add_argument("--steps", type=int, default=3, help="denoising steps per pass (at least 2)")
    ap.add_argument("--model-dir", default="/tmp/void-full")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--compile-vae", default=None, choices=tuple(VAE_COMPILE_PARTS),
                    help="memory runs: the VAE parts to compile (default: the pipeline's for each mode)")
    ap.add_argument("--repeat", type=int, default=1, help="memory runs: jobs per mode, the last one recorded")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny random models: checks this script, measures nothing")
    args = ap.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps must be 2 or more (per-step time is measured between steps)")
    device = "cpu" if args.smoke else "cuda"
    if args.smoke:
        for name in ("synchronize", "reset_peak_memory_stats"):
            setattr(torch.cuda, name, lambda *a, **k: None)
        torch.cuda.max_memory_allocated = lambda *a, **k: 0
    passes = 1 if args.smoke else 2  # RAFT cannot run at the smoke test's tiny model size
    model_dir = Path(args.model_dir)
    if not (model_dir / "void_pass2.safetensors").is_file():
        build_random_model_dir(model_dir, size="tiny" if args.smoke else "full", device=device, raft=True)
    small = dict(model_size=(64, 112), window_frames=21) if args.smoke else {}
    hd, uhd = ((128, 224), (256, 448)) if args.smoke else ((1080, 1920), (2160, 3840))
    rows: List[Dict[str, object]] = []

    def record(run: str, row: Dict[str, object]) -> None:
        row["run"] = run
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)

    runs = args.runs.split(",")
    if "growth" in runs or "roi" in runs:
        pipe = VoidPipeline(model_dir, device=device, memory_mode="gpu", **small)
        if "growth" in runs:
            for n in (int(v) for v in args.frames_list.split(",")):
                record("growth", measured_job(pipe, n, hd, args.steps, True, passes))
        if "roi" in runs:
            for plate_hw, roi in ((hd, True), (hd, False), (uhd, False)):
                record("roi", measured_job(pipe, 85 if not args.smoke else 21, plate_hw, args.steps, roi, passes))
        del pipe
    if "memory" in runs:
        for mode in args.modes.split(","):
            gc.collect()
            torch.cuda.empty_cache()
            pipe = VoidPipeline(model_dir, device=device, memory_mode=mode, compile_vae=args.compile_vae, **small)
            for _ in range(max(1, args.repeat)):
                job = measured_job(pipe, 85 if not args.smoke else 21, hd, args.steps, True, passes)
            if args.repeat > 1:  # warm: what the denoise stages spend outside their steps is the model moves
                job["full_steps_est_s"] += sum(job["denoise_outside_steps_s"].values())
            record("memory:" + mode, dict(job, jobs=max(1, args.repeat)))
            del pipe

    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "scaling.json").write_text(json.dumps(
        {"device": "cpu (smoke)" if args.smoke else torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
        indent=1, default=str))
    print("\n%-26s %6s %10s %4s %9s %9s %9s %11s %8s" % ("run", "frames", "plate", "roi", "total s", "p1 s/st",
                                                         "p2 s/st", "30+50 est s", "peakGiB"))
    for r in rows:
        ps = r["s_per_step"]
        print("%-26s %6d %10s %4s %9.1f %9s %9s %11.1f %8.1f" % (
            r["run"], r["frames"], "x".join(map(str, r["plate"])), "on" if r["roi"] else "off", r["total_s"],
            "%.3f" % ps["pass1"] if "pass1" in ps else "-", "%.3f" % ps["pass2"] if "pass2" in ps else "-",
            r["full_steps_est_s"], r["peak_gib"]))


if __name__ == "__main__":
    main()
