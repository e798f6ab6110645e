"""One job's denoising on 1 GPU vs 2 GPUs (issue #9): guidance split, window split, sequence parallel, combined.

    torchrun --nproc_per_node 2 bench/bench_multigpu.py [--frames 85] [--height 384 --width 672] [--steps 10]

Random full-size weights (the real 42-layer CogVideoX-Fun-V1.5-5b transformer config, in_channels 48, bf16), the
same on every rank (same seed, same device type). Rank 0 first runs the 1-GPU baseline of each pass, then every
plan runs on both ranks; each result is compared with the baseline (max |a-b|, relative to max |baseline|).
Pass 1: no guidance; pass 2: guidance 6. At 85 frames there is one window, so the window split only pays from
169 frames (--frames 169 or more). Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

PLANS = {  # name -> (cfg, windows, sequence) degrees over 2 GPUs
    "guidance_split": (2, 1, 1),
    "window_split": (1, 2, 1),
    "sequence_parallel": (1, 1, 2),
}


def build_transformer(device: torch.device):
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**dict(TRANSFORMER_CONFIGS["full"], in_channels=48))
    return model.to(torch.bfloat16).eval()


def problem(frames: int, height: int, width: int, device: torch.device):
    from void_server.pipelines.void.conditioning import latent_frames

    gen = torch.Generator("cpu").manual_seed(1)
    t, h, w = latent_frames(frames), height // 8, width // 8
    x = torch.randn((1, t, 16, h, w), generator=gen)
    cond = torch.randn((1, t, 32, h, w), generator=gen)
    text = torch.randn((2, 226, 4096), generator=gen)
    return [a.to(device, torch.bfloat16) for a in (x, cond, text[:1], text[1:])]


def run(transformer, inputs, guidance: float, steps: int, plan=None) -> tuple:
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    from void_server.pipelines.void.denoise import denoise

    x, cond, prompt, negative = inputs
    scheduler = CogVideoXDDIMScheduler() if guidance > 1 else DDIMScheduler()
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = denoise(transformer, scheduler, x, cond, prompt, negative if guidance > 1 else None, guidance, steps,
                  parallel=plan)
    torch.cuda.synchronize()
    return out.float(), time.perf_counter() - start


def main() -> None:
    from void_server.pipelines.void.parallel import make_plan

    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=85)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=672)
    p.add_argument("--steps", type=int, default=10, help="denoising steps per pass (time scales linearly)")
    p.add_argument("--compile", action="store_true",
                   help="compile the blocks as the server does (the 1-GPU loop runs first, as on a server's rank 0)")
    args = p.parse_args()
    dist.init_process_group("nccl")
    rank = dist.get_rank()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    torch.cuda.set_device(device)
    transformer = build_transformer(device)
    if args.compile:
        from void_server.pipelines.void.accel import accelerate_transformer

        accelerate_transformer(transformer, attention=None, compile_blocks=True)
    inputs = problem(args.frames, args.height, args.width, device)
    plans = dict(PLANS, best_combination=None)
    for pass_name, guidance in (("pass1", 1.0), ("pass2", 6.0)):
        baseline = None
        if rank == 0:
            run(transformer, inputs, guidance, 1)  # warm-up
            baseline, seconds = run(transformer, inputs, guidance, args.steps)
            print(json.dumps({"pass": pass_name, "plan": "1 GPU", "seconds": round(seconds, 3)}), flush=True)
        dist.barrier()
        for name, degrees in plans.items():
            if degrees is None:  # guidance pair where there is one, else the sequence split
                degrees = PLANS["guidance_split"] if guidance > 1 else PLANS["sequence_parallel"]
            plan = make_plan(*degrees)
            run(transformer, inputs, guidance, 1, plan)
            out, seconds = run(transformer, inputs, guidance, args.steps, plan)
            if rank == 0:
                err = (out - baseline).abs().max().item() / max(baseline.abs().max().item(), 1e-12)
                rel_l2 = ((out - baseline).norm() / baseline.norm()).item()
                print(json.dumps({"pass": pass_name, "plan": name, "degrees": degrees, "seconds": round(seconds, 3),
                                  "compiled": args.compile, "max_rel_diff_vs_1gpu": err, "rel_l2_vs_1gpu": rel_l2}),
                      flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
