"""One job's denoising on 1 GPU vs 2 GPUs (issue #9): guidance split, window split, sequence parallel, combined.

    torchrun --nproc_per_node 2 bench/bench_multigpu.py [--frames 85] [--height 384 --width 672] [--steps 10]

Random full-size weights (the real 42-layer CogVideoX-Fun-V1.5-5b transformer config, in_channels 48, bf16), the
same on every rank (same seed, same device type). Rank 0 first runs the 1-GPU baseline of each pass, then every
plan runs on both ranks; each result is compared with the baseline (max |a-b|, relative to max |baseline|).
Pass 1: no guidance; pass 2: guidance 6. At 85 frames there is one window, so the window split only pays from
169 frames (--frames 169 or more). Prints one JSON line per run.

Every comparison is made twice: after one step (one forward: the per-call rounding) and after --steps steps (what
the loop makes of it). Two yardsticks say what "within rounding" means on these random weights:
  - "1 GPU eager" (with --compile): the same loop with compilation off, i.e. two lossless implementations of the
    same math on the same GPU;
  - "1 GPU, pair unbatched" (pass 2): the guidance pair as two batch-1 calls on one GPU, which is what the guidance
    split computes per rank; the split equals it exactly when the split itself adds nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from full_size import rel_l2  # noqa: E402

PLANS = {  # name -> (cfg, windows, sequence) degrees over 2 GPUs
    "guidance_split": (2, 1, 1),
    "window_split": (1, 2, 1),
    "sequence_parallel": (1, 1, 2),
}


def build_transformer(device: torch.device, size: str = "full"):
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**dict(TRANSFORMER_CONFIGS[size], in_channels=48))
    return model.to(torch.bfloat16).eval()


def problem(frames: int, height: int, width: int, device: torch.device, text_dim: int = 4096):
    from void_server.pipelines.void.conditioning import latent_frames

    gen = torch.Generator("cpu").manual_seed(1)
    t, h, w = latent_frames(frames), height // 8, width // 8
    x = torch.randn((1, t, 16, h, w), generator=gen)
    cond = torch.randn((1, t, 32, h, w), generator=gen)
    text = torch.randn((2, 226, text_dim), generator=gen)
    return [a.to(device, torch.bfloat16) for a in (x, cond, text[:1], text[1:])]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(transformer, inputs, guidance: float, steps: int, plan=None) -> tuple:
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    from void_server.pipelines.void.denoise import denoise

    x, cond, prompt, negative = inputs
    scheduler = CogVideoXDDIMScheduler() if guidance > 1 else DDIMScheduler()
    synchronize(x.device)
    start = time.perf_counter()
    out = denoise(transformer, scheduler, x, cond, prompt, negative if guidance > 1 else None, guidance, steps,
                  parallel=plan)
    synchronize(x.device)
    return out.float(), time.perf_counter() - start


class PairUnbatched:
    """The transformer with a batched guidance pair computed as one call per batch row (the guidance split's
    shapes on a single GPU)."""

    def __init__(self, transformer) -> None:
        self.transformer, self.config = transformer, transformer.config

    def __call__(self, hidden_states, encoder_hidden_states, timestep, **kwargs):
        rows = [self.transformer(hidden_states=hidden_states[i:i + 1], encoder_hidden_states=encoder_hidden_states[i:i + 1],
                                 timestep=timestep[i:i + 1], **kwargs)[0] for i in range(hidden_states.shape[0])]
        return (torch.cat(rows),)




def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


def main() -> None:
    from void_server.pipelines.void.parallel import make_plan

    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=85)
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=672)
    p.add_argument("--steps", type=int, default=10, help="denoising steps per pass (time scales linearly)")
    p.add_argument("--compile", action="store_true",
                   help="compile the blocks as the server does (the 1-GPU loop runs first, as on a server's rank 0)")
    p.add_argument("--server-kernels", action="store_true",
                   help="with --compile: the attention (FlashAttention-4 where usable) and fused GELU the server runs")
    p.add_argument("--profile", action="store_true",
                   help="also split one pass-1 step by kernel class, 1 GPU (rank 0) against sequence parallel (each "
                        "rank): where sequence parallelism's extra time goes (collectives, copies, gaps)")
    p.add_argument("--sp-chunks", type=int, default=1,
                   help="sequence parallel: each rank's heads exchanged in this many groups (ulysses.py)")
    p.add_argument("--comm-overlap", action="store_true",
                   help="inductor reorders collectives to overlap computation (reorder_for_compute_comm_overlap); "
                        "with --sp-chunks > 1 one head group's exchange can run beside another's attention")
    p.add_argument("--smoke", action="store_true",
                   help="CPU (gloo), tiny random transformer, 13 frames at 64x112: checks this script, measures nothing")
    args = p.parse_args()
    if args.smoke:
        args.frames, args.height, args.width, args.steps = 13, 64, 112, 2
    dist.init_process_group("gloo" if args.smoke else "nccl")
    rank = dist.get_rank()
    if args.smoke:
        device = torch.device("cpu")
    else:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    transformer = build_transformer(device, "tiny" if args.smoke else "full")
    if args.comm_overlap:
        import torch._inductor.config as inductor_config

        inductor_config.reorder_for_compute_comm_overlap = True
    if args.compile:
        from void_server.pipelines.void.accel import accelerate_transformer, resolve_attention

        accelerate_transformer(transformer, compile_blocks=True, fuse_gelu=args.server_kernels,
                               attention=resolve_attention("auto", device) if args.server_kernels else None)
    inputs = problem(args.frames, args.height, args.width, device, transformer.config.text_embed_dim)
    plans = dict(PLANS, best_combination=None)
    for pass_name, guidance in (("pass1", 1.0), ("pass2", 6.0)):
        one_step = baseline = unbatched = None
        if rank == 0:
            one_step, _ = run(transformer, inputs, guidance, 1)  # also the warm-up
            baseline, seconds = run(transformer, inputs, guidance, args.steps)
            print(json.dumps({"pass": pass_name, "plan": "1 GPU", "seconds": round(seconds, 3)}), flush=True)
            yardsticks = {}
            if args.compile:
                with torch.compiler.set_stance("force_eager"):
                    yardsticks["1 GPU eager"] = (run(transformer, inputs, guidance, 1)[0],) + run(transformer, inputs, guidance, args.steps)
            if guidance > 1:
                pair = PairUnbatched(transformer)
                run(pair, inputs, guidance, 1)
                yardsticks["1 GPU, pair unbatched"] = (run(pair, inputs, guidance, 1)[0],) + run(pair, inputs, guidance, args.steps)
            for name, (one, out, seconds) in yardsticks.items():
                print(json.dumps({"pass": pass_name, "plan": name, "seconds": round(seconds, 3), "compiled": args.compile,
                                  "rel_l2_1step_vs_1gpu": rel_l2(one, one_step), "rel_l2_vs_1gpu": rel_l2(out, baseline),
                                  "max_rel_diff_vs_1gpu": max_rel(out, baseline)}), flush=True)
            unbatched = yardsticks.get("1 GPU, pair unbatched")
        dist.barrier()
        for name, degrees in plans.items():
            if degrees is None:  # guidance pair where there is one, else the sequence split
                degrees = PLANS["guidance_split"] if guidance > 1 else PLANS["sequence_parallel"]
            plan = make_plan(*degrees, sequence_chunks=args.sp_chunks)
            one, _ = run(transformer, inputs, guidance, 1, plan)  # also the warm-up
            out, seconds = run(transformer, inputs, guidance, args.steps, plan)
            if rank == 0:
                row = {"pass": pass_name, "plan": name, "degrees": degrees, "seconds": round(seconds, 3),
                       "compiled": args.compile, "rel_l2_1step_vs_1gpu": rel_l2(one, one_step),
                       "max_rel_diff_vs_1gpu": max_rel(out, baseline), "rel_l2_vs_1gpu": rel_l2(out, baseline)}
                if unbatched is not None and degrees[0] == 2:  # the split against the same shapes on one GPU
                    row["rel_l2_1step_vs_unbatched"] = rel_l2(one, unbatched[0])
                    row["rel_l2_vs_unbatched"] = rel_l2(out, unbatched[1])
                print(json.dumps(row), flush=True)
    if args.profile:
        profile_pass1(transformer, inputs, rank, make_plan(*PLANS["sequence_parallel"], sequence_chunks=args.sp_chunks))
    dist.destroy_process_group()


def profile_pass1(transformer, inputs, rank: int, plan) -> None:
    """One pass-1 step (one forward and the scheduler's step) by kernel class: on rank 0 alone, then sequence
    parallel on every rank (bench_transformer.profile_split; "gaps" is the step's wall time with no kernel running),
    to show where sequence parallelism's time beyond half of one GPU's goes: collectives, copies, gaps."""
    from bench_transformer import profile_split

    for name, p in ([("1 GPU", None)] if rank == 0 else []) + [("sequence parallel", plan)]:
        if p is not None:
            dist.barrier()  # both ranks enter the split loop together
        seconds = min(run(transformer, inputs, 1.0, 1, p)[1] for _ in range(3))
        split = profile_split(lambda: run(transformer, inputs, 1.0, 1, p)[0], seconds)
        print(json.dumps({"profile": name, "rank": rank, "step_s": round(seconds, 4), **split}), flush=True)

if __name__ == "__main__":
    main()
