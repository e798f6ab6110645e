"""The VAE's 3-D convolutions alone, in the layouts cuDNN could run them in (device, one GPU):

    python3 bench/bench_conv.py [--shapes all] [--reps 10] [--blocks]

The CogVideoX VAE's decode is 421 TFLOP and its encode 192 TFLOP at 85 frames of 384x672, nearly all of it
3x3x3 convolutions (`torch.utils.flop_counter` on the real config); a job runs two decodes and three encodes in
~4.6 s, i.e. ~300 TFLOP/s, under 40% of the H100's bf16 peak. This bench asks whether the kernels are the loss,
on the shapes that carry most of those FLOP (each a decode chunk's: 8 frames out, 2 of causal padding in):

- `conv3d`: `F.conv3d`, NCDHW (what diffusers runs);
- `conv3d_cl`: the same in channels-last-3d;
- `conv2d_taps`: the 3 temporal taps as 3 conv2d over a (T, C, H, W) channels-last view, summed;
- `conv2d_stack`: the 3 taps' frames stacked on the channel axis, one conv2d (K = 27 C, as conv3d's);
- `..._kernel` rows time the kernels on an input already in that layout; the others include the layout change
  from and back to NCDHW, which a drop-in replacement of one conv would pay.

Each against float32 conv3d on the same inputs (TF32 off), next to plain conv3d's own distance: the yardstick.

`--blocks` (needs diffusers) times the VAE's own resnet blocks at a decode chunk's shapes, each compiled whole as
the pipeline compiles them, in these variants:
- `compiled`: as the pipeline runs them;
- `cl_weights`: the 5-D conv weights in channels-last-3d (cuDNN then runs channels-last kernels; inductor lays out
  each conv's input so, inside the graph);
- `cl_all`: the block's input in channels-last-3d too (what a VAE compiled whole in that layout would feed it);
- `zq_low`: the decoder's spatial norms run their two 1x1x1 convs on the latent before its nearest upsampling
  rather than after (the two commute; the full-resolution 16 -> C conv outputs are never written);
- `cl_weights+zq_low`.
Each against the same block in float32, eager.
Prints a table and writes JSON under $OUT.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from bench_fusions import timed  # CUDA events around `reps` calls after warm-up ones (this session's runs: 2 of them)
from report import print_markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

# (C_in, C_out, frames in, H, W): the decode's and the encode's largest conv3d shapes (bench docstring).
SHAPES: Dict[str, Tuple[int, int, int, int, int]] = {
    "dec-256@192x336": (256, 256, 10, 192, 336),
    "dec-128@384x672": (128, 128, 10, 384, 672),
    "dec-256to128@384x672": (256, 128, 10, 384, 672),
    "dec-512@48x84": (512, 512, 4, 48, 84),
}


def variants(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> Dict[str, Callable[[], torch.Tensor]]:
    """name -> a function giving the conv's output as (1, C_out, T, H, W) (NCDHW values, any strides)."""
    frames = x.shape[2] - 2
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    w_cl = w.contiguous(memory_format=torch.channels_last_3d)
    # (T + 2, C, H, W) stored as (T + 2, H, W, C): a frame range along the batch axis is a view, no copy
    x_frames = x[0].transpose(0, 1).contiguous(memory_format=torch.channels_last)
    taps = [w[:, :, dt].contiguous(memory_format=torch.channels_last) for dt in range(3)]
    w_stack = w.transpose(1, 2).reshape(w.shape[0], 3 * w.shape[1], 3, 3).contiguous(
        memory_format=torch.channels_last)

    def as_ncdhw(out: torch.Tensor) -> torch.Tensor:  # (T, C, H, W) -> (1, C, T, H, W)
        return out.transpose(0, 1).unsqueeze(0)

    def taps_on(frames_cl: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(frames_cl[0:frames], taps[0], b, padding=1)
        out += F.conv2d(frames_cl[1:frames + 1], taps[1], None, padding=1)
        out += F.conv2d(frames_cl[2:frames + 2], taps[2], None, padding=1)
        return out

    def stack_on(frames_cl: torch.Tensor) -> torch.Tensor:
        stacked = torch.cat([frames_cl[dt:dt + frames] for dt in range(3)], dim=1)
        return F.conv2d(stacked, w_stack, b, padding=1)

    def to_frames() -> torch.Tensor:
        return x[0].transpose(0, 1).contiguous(memory_format=torch.channels_last)

    return {
        "conv3d": lambda: F.conv3d(x, w, b, padding=(0, 1, 1)),
        "conv3d_cl_kernel": lambda: F.conv3d(x_cl, w_cl, b, padding=(0, 1, 1)),
        "conv3d_cl": lambda: F.conv3d(x.contiguous(memory_format=torch.channels_last_3d), w_cl, b,
                                      padding=(0, 1, 1)).contiguous(),
        "conv2d_taps_kernel": lambda: as_ncdhw(taps_on(x_frames)),
        "conv2d_taps": lambda: as_ncdhw(taps_on(to_frames())).contiguous(),
        "conv2d_stack_kernel": lambda: as_ncdhw(stack_on(x_frames)),
        "conv2d_stack": lambda: as_ncdhw(stack_on(to_frames())).contiguous(),
    }


def shape_rows(name: str, shape: Tuple[int, int, int, int, int], reps: int, benchmark: bool,
               rows: List[Dict[str, object]]) -> None:
    cin, cout, frames_in, h, w_ = shape
    g = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, cin, frames_in, h, w_, device="cuda", generator=g, dtype=torch.bfloat16)
    w = (torch.randn(cout, cin, 3, 3, 3, device="cuda", generator=g) * (27 * cin) ** -0.5).to(torch.bfloat16)
    b = (torch.randn(cout, device="cuda", generator=g) * 0.1).to(torch.bfloat16)
    torch.backends.cudnn.allow_tf32 = False
    ref = F.conv3d(x.float(), w.float(), b.float(), padding=(0, 1, 1))
    flop = 2 * ref.numel() * cin * 27
    torch.backends.cudnn.benchmark = benchmark
    for variant, fn in variants(x, w, b).items():
        out = fn()
        seconds = timed(fn, reps)
        row = {"shape": name, "variant": variant, "cudnn_benchmark": benchmark, "ms": round(seconds * 1e3, 3),
               "tflops": round(flop / seconds / 1e12, 1), "rel_l2_vs_fp32": float((out.float() - ref).norm() / ref.norm())}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del out
    torch.backends.cudnn.benchmark = False
    del ref
    torch.cuda.empty_cache()


def block_variant(block: torch.nn.Module, variant: str) -> torch.nn.Module:
    """A copy of `block` with the variant's rewrites (vae_rewrites.py's own functions, as the pipeline applies them)."""
    from void_server.pipelines.void.vae_rewrites import channels_last_convolutions, latent_size_spatial_norms

    block = copy.deepcopy(block)
    if "cl_" in variant:
        channels_last_convolutions(block)
    if "zq_low" in variant:
        latent_size_spatial_norms(block)
    return block


def block_rows(reps: int, rows: List[Dict[str, object]]) -> None:
    from diffusers import AutoencoderKLCogVideoX

    from void_server.pipelines.void.tiny import VAE_CONFIGS

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(**VAE_CONFIGS["full"]).to("cuda", torch.bfloat16).eval()
    cases = [("dec up2.resnet1 256@192x336", vae.decoder.up_blocks[2].resnets[1], (256, 192, 336), True),
             ("dec up3.resnet0 256->128@384x672", vae.decoder.up_blocks[3].resnets[0], (256, 384, 672), True),
             ("dec up3.resnet1 128@384x672", vae.decoder.up_blocks[3].resnets[1], (128, 384, 672), True),
             ("enc down0.resnet0 128@384x672", vae.encoder.down_blocks[0].resnets[0], (128, 384, 672), False)]
    g = torch.Generator("cuda").manual_seed(0)
    for name, block, (c, h, w), spatial in cases:
        x = torch.randn(1, c, 8, h, w, device="cuda", generator=g, dtype=torch.bfloat16)
        zq = torch.randn(1, 16, 2, 48, 84, device="cuda", generator=g, dtype=torch.bfloat16) if spatial else None
        with torch.no_grad():
            _, cache = block(x, None, zq)  # a previous chunk's conv caches, as every chunk after the first gets
            b32 = copy.deepcopy(block).float()
            cache32 = {k: ({kk: vv.float() if vv is not None else None for kk, vv in v.items()} if isinstance(v, dict)
                           else (v.float() if v is not None else None)) for k, v in cache.items()}
            ref = b32(x.float(), None, None if zq is None else zq.float(), cache32)[0]
            del b32
            for variant in ["compiled", "cl_weights", "cl_all"] + (["zq_low", "cl_weights+zq_low"] if spatial else []):
                torch._dynamo.reset()
                v = block_variant(block, variant)
                fn = torch.compile(v, fullgraph=True, dynamic=False)
                xi = x.contiguous(memory_format=torch.channels_last_3d) if variant == "cl_all" else x
                t0 = time.perf_counter()
                out = fn(xi, None, zq, cache)[0]
                torch.cuda.synchronize()
                first = time.perf_counter() - t0
                seconds = timed(lambda: fn(xi, None, zq, cache), reps)
                row = {"shape": name, "variant": variant, "ms": round(seconds * 1e3, 3), "first_s": round(first, 1),
                       "rel_l2_vs_fp32": float((out.float() - ref).norm() / ref.norm())}
                rows.append(row)
                print(json.dumps(row), flush=True)
                del out
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="all", help="comma-separated names from SHAPES, or all")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--blocks", action="store_true", help="also the VAE's resnet blocks, compiled (diffusers)")
    parser.add_argument("--no-convs", action="store_true", help="skip the bare convolutions")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    names = list(SHAPES) if args.shapes == "all" else args.shapes.split(",")
    print("torch %s, cuDNN %s, %s" % (torch.__version__, torch.backends.cudnn.version(),
                                      torch.cuda.get_device_name()), flush=True)
    rows: List[Dict[str, object]] = []
    for name in [] if args.no_convs else names:
        for benchmark in (False, True):
            shape_rows(name, SHAPES[name], args.reps, benchmark, rows)
    if rows:
        print_markdown_table(["shape", "variant", "cudnn.benchmark", "ms", "TFLOP/s", "rel. L2 vs fp32"],
                             [[r["shape"], r["variant"], r["cudnn_benchmark"], r["ms"], r["tflops"],
                               "%.2e" % r["rel_l2_vs_fp32"]] for r in rows])
    if args.blocks:
        blocks: List[Dict[str, object]] = []
        block_rows(args.reps, blocks)
        print_markdown_table(["block, chunk of 8 frames", "variant", "ms", "first call s", "rel. L2 vs fp32"],
                             [[r["shape"], r["variant"], r["ms"], r["first_s"], "%.2e" % r["rel_l2_vs_fp32"]]
                              for r in blocks])
        rows += blocks
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_conv.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
