"""The VAE decode pipelined over two GPUs (issue 9): the decoder's first stages on GPU 0, the rest on GPU 1, chunk k's
first half beside chunk k - 1's second (`decode.decode_latents(pipelined=...)`), against the whole decode on GPU 0.

    python3 bench/bench_decode_split.py [--splits 12,up_block_2.resnet_1] [--latents 22] [--reps 3]
    python3 bench/bench_decode_split.py --smoke       # CPU, tiny VAE: checks this script, measures nothing

Full-size CogVideoX VAE with random weights (the same on both GPUs), compiled as the server's `gpu` mode compiles it
(the decoder's blocks precompiled), one pass's latents (22 at 48x84: 85 frames at 384x672). Each split is timed
after a first call (which builds or loads its compiled blocks on GPU 1), median of `--reps`, and its frames are
compared with the whole decode's (max abs difference: 0 where both GPUs are the same model). On a one-GPU machine
both halves share GPU 0: the same frames, no speed-up. Prints a table and writes JSON under $OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "server"))

import torch  # noqa: E402

from report import print_markdown_table  # noqa: E402


def make_vae(device: torch.device, smoke: bool):
    from diffusers import AutoencoderKLCogVideoX

    from void_server.pipelines.void.accel import compile_vae

    if smoke:
        from void_server.pipelines.void.tiny import VAE_CONFIGS

        torch.manual_seed(0)
        return AutoencoderKLCogVideoX(**VAE_CONFIGS["tiny"]).eval().requires_grad_(False)
    from full_size import random_vae

    return compile_vae(random_vae(device, torch.bfloat16), "decoder")


def timed(fn, device: torch.device, reps: int):
    def sync():  # every GPU: a pipelined decode ends on the second
        for i in range(torch.cuda.device_count() if device.type == "cuda" else 0):
            torch.cuda.synchronize(i)

    out, times = None, []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="", help="cuts: stage counts or names of the first GPU's last stage "
                    "(decode.split_after; default: every one)")
    ap.add_argument("--latents", type=int, default=22)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()

    from void_server.pipelines.void.decode import decode_latents, decoder_stages, split_after

    cuda = torch.cuda.is_available() and not args.smoke
    first_dev = torch.device("cuda:0" if cuda else "cpu")
    second_dev = torch.device("cuda:1" if cuda and torch.cuda.device_count() > 1 else first_dev)
    vae, second = make_vae(first_dev, args.smoke), make_vae(second_dev, args.smoke)
    if args.smoke:
        second.load_state_dict(vae.state_dict())
    h, w = (2, 3) if args.smoke else (48, 84)
    z = torch.randn(1, args.latents, 16, h, w, generator=torch.Generator().manual_seed(1)).to(first_dev, vae.dtype)

    rows: List[Dict[str, object]] = []
    decode_latents(vae, z)  # builds or loads GPU 0's compiled blocks
    whole, s = timed(lambda: decode_latents(vae, z), first_dev, args.reps)
    rows.append({"decode": "whole, %s" % first_dev, "split": "", "s": s, "max_abs_diff": 0.0})
    stages = decoder_stages(vae.decoder)
    names = [st.name for st in stages]
    splits = [split_after(stages, x) for x in args.splits.split(",") if x] or list(range(1, len(names)))
    for split in splits:
        t = time.perf_counter()
        decode_latents(vae, z, pipelined=(second, split))  # GPU 1's blocks for this cut
        first_call = time.perf_counter() - t
        got, s = timed(lambda: decode_latents(vae, z, pipelined=(second, split)), first_dev, args.reps)
        rows.append({"decode": "pipelined, %s + %s" % (first_dev, second_dev), "split": split,
                     "first_gpu_last_stage": names[split - 1], "s": s,
                     "first_call_s": first_call, "speed_up": rows[0]["s"] / s,
                     "max_abs_diff": float((got.to(whole.device) - whole).abs().max())})
        print(json.dumps(rows[-1]), flush=True)
    out = Path(os.environ.get("OUT", "."))
    (out / "bench_decode_split.json").write_text(json.dumps(
        {"devices": [str(first_dev), str(second_dev)], "latents": args.latents, "stages": names, "rows": rows},
        indent=1))
    print_markdown_table(("decode", "first GPU's stages", "s", "speed-up", "max abs diff vs whole"),
                         [(r["decode"], "%s (to %s)" % (r["split"], r["first_gpu_last_stage"]) if r["split"] else "",
                           "%.3f" % r["s"], "%.2fx" % r.get("speed_up", 1.0),
                           "%.3g" % r["max_abs_diff"]) for r in rows])


if __name__ == "__main__":
    main()
