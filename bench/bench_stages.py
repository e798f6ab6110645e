"""The non-transformer stages at VOID's full size on the GPU: VAE encode, our reference-chunked decode, and pass 2's
warped noise (reference noise maker and the aligned variant), random weights. Prints a table, writes JSON."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_size import random_init_  # noqa: E402
from void_server.pipelines.void.conditioning import vae_encode  # noqa: E402
from void_server.pipelines.void.decode import decode_latents  # noqa: E402
from void_server.pipelines.void.flow import load_raft  # noqa: E402
from void_server.pipelines.void.warped_noise import aligned_warped_noise, reference_warped_noise  # noqa: E402


def timed(fn: Callable[[], object], reps: int = 2) -> Dict[str, float]:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    runs = [first] if reps == 0 else []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        runs.append(time.perf_counter() - t0)
    return {"first_s": first, "s": min(runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=85)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    device = torch.device("cuda")
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX

    with init_empty_weights():
        vae = AutoencoderKLCogVideoX(scaling_factor=0.7)
    vae = random_init_(vae, device, torch.bfloat16, seed=0)
    video = torch.rand(1, 3, args.frames, 384, 672, device=device)
    rows: List[Dict[str, object]] = []

    def row(name: str, res: Dict[str, float]) -> None:
        res = {"stage": name, **res, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        rows.append(res)
        print(json.dumps(res), flush=True)

    torch.cuda.reset_peak_memory_stats()
    lat = {}
    row("vae_encode (1 clip)", timed(lambda: lat.__setitem__("z", vae_encode(vae, video * 2 - 1))))
    torch.cuda.reset_peak_memory_stats()
    row("vae_decode (reference chunking)", timed(lambda: decode_latents(vae, lat["z"])))
    # The same convolutions with cuDNN's autotuner choosing algorithms (lossless up to bf16 rounding: compared).
    ref_z, ref_v = lat["z"].float(), decode_latents(vae, lat["z"]).float()
    torch.backends.cudnn.benchmark = True
    torch.cuda.reset_peak_memory_stats()
    row("vae_encode, cudnn.benchmark", timed(lambda: lat.__setitem__("zb", vae_encode(vae, video * 2 - 1))))
    torch.cuda.reset_peak_memory_stats()
    out = {}
    row("vae_decode, cudnn.benchmark", timed(lambda: out.__setitem__("v", decode_latents(vae, lat["z"]))))
    rows[-2]["rel_l2_vs_default"] = float((lat["zb"].float() - ref_z).norm() / ref_z.norm())
    rows[-1]["rel_l2_vs_default"] = float((out["v"].float() - ref_v).norm() / ref_v.norm())
    torch.backends.cudnn.benchmark = False
    del vae
    torch.cuda.empty_cache()

    raft = load_raft(None, device)
    clip = torch.rand(args.frames, 3, 384, 672, device=device)
    torch.cuda.reset_peak_memory_stats()
    row("warped noise, reference", timed(lambda: reference_warped_noise(clip, raft, torch.Generator(device).manual_seed(0)), reps=0))
    torch.cuda.reset_peak_memory_stats()
    t_lat = (args.frames - 1) // 4 + 1
    row("warped noise, aligned", timed(lambda: aligned_warped_noise(clip, raft, t_lat + t_lat % 2, (48, 84), torch.Generator(device).manual_seed(0)), reps=0))

    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("stages_%df.json" % args.frames)).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print("\n%-34s %9s %9s %8s" % ("stage", "s", "first s", "peakGiB"))
    for r in rows:
        print("%-34s %9.3f %9.3f %8.1f" % (r["stage"], r["s"], r["first_s"], r["peak_gib"]))


if __name__ == "__main__":
    main()
