"""The non-transformer stages at VOID's full size on the GPU: VAE encode, our reference-chunked decode, and pass 2's
warped noise (reference noise maker and the aligned variant), random weights. Prints a table, writes JSON.

    python3 bench/bench_stages.py [--frames 85] [--vae-variants channels_last,compile,compile_plain] [--skip-vae | --only-vae]
                                  [--eager-warp] [--profile-warp]

--vae-variants times the VAE again with its weights and activations in channels-last-3d layout, and/or with the
encoder and decoder compiled as the pipeline compiles them (`compile`) or without vae_rewrites' layout
(`compile_plain`), each compared with the default (relative L2). The warped-noise rows also time RAFT's
flows alone (the reference's 72 frames at 240x360) and, on a machine with 2 GPUs, the reference noise with RAFT on
the second GPU (as a rank group's pipeline runs it)."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from full_size import random_vae, rel_l2  # noqa: E402
from void_server.pipelines.void.accel import compile_vae  # noqa: E402
from void_server.pipelines.void.conditioning import vae_encode  # noqa: E402
from void_server.pipelines.void.decode import decode_latents  # noqa: E402
from void_server.pipelines.void import flow as flow_module  # noqa: E402
from void_server.pipelines.void.flow import iter_flow, load_raft  # noqa: E402
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


def vae_variant_rows(vae, variant: str, video: torch.Tensor, z: torch.Tensor, ref_z: torch.Tensor, ref_v: torch.Tensor,
                     row, rows: List[Dict[str, object]], fp32=None) -> None:
    """The VAE's encode and decode in another execution variant, timed and compared with the default's output."""
    import copy

    v = copy.deepcopy(vae)
    if variant == "channels_last":
        for prm in v.parameters():  # Module.to(memory_format=) refuses the 4-D weights beside the 3-D convs'
            if prm.dim() == 5:
                prm.data = prm.data.contiguous(memory_format=torch.channels_last_3d)
        video = video.contiguous(memory_format=torch.channels_last_3d)
    elif variant == "compile":
        compile_vae(v, "both")  # what the pipeline runs
    elif variant == "compile_plain":
        compile_vae(v, "both", rewrites=False)  # the same without vae_rewrites (before the sixteenth session)
    elif variant == "compile_whole":  # the decoder precompiled as one graph per chunk shape, not block by block
        from void_server.pipelines.void import accel

        cut = accel.VAE_COMPILE_UNIT["decoder"]
        accel.VAE_COMPILE_UNIT["decoder"] = "whole"
        try:
            compile_vae(v, "both")
        finally:
            accel.VAE_COMPILE_UNIT["decoder"] = cut
    else:
        raise SystemExit("unknown VAE variant %r (channels_last, compile, compile_plain, compile_whole)" % variant)
    got = {}
    torch.cuda.reset_peak_memory_stats()
    row("vae_encode, %s" % variant, timed(lambda: got.__setitem__("z", vae_encode(v, video * 2 - 1))))
    rows[-1]["rel_l2_vs_default"] = rel_l2(got["z"], ref_z)
    if fp32 is not None:
        rows[-1]["rel_l2_vs_fp32"] = rel_l2(got["z"], fp32[0])
    torch.cuda.reset_peak_memory_stats()
    row("vae_decode, %s" % variant, timed(lambda: got.__setitem__("v", decode_latents(v, z))))
    rows[-1]["rel_l2_vs_default"] = rel_l2(got["v"], ref_v)
    if fp32 is not None:
        rows[-1]["rel_l2_vs_fp32"] = rel_l2(got["v"], fp32[1])
    v = None  # the copy freed before the next variant (a lambda above reads the name, so not `del`)
    torch.cuda.empty_cache()


def profile_warp(device: torch.device, rows: List[Dict[str, object]], steps: int = 5, size=(1920, 2880),
                 label: str = "noise warp, one step (profiled)") -> None:
    """One warp step of the reference's noise (16 noise + 3 state channels at 1920x2880, a smooth flow of a few
    pixels): wall time per step, and the operators that take the GPU's and the host's time (a host sync shows as
    CPU time with no GPU time behind it)."""
    from torch.profiler import ProfilerActivity, profile

    from void_server.pipelines.void.noise_warp import NoiseWarper

    gen = torch.Generator(device).manual_seed(0)
    warper = NoiseWarper(16, size[0], size[1], gen, device=device)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0] // 8, device=device),
                            torch.linspace(-1, 1, size[1] // 8, device=device), indexing="ij")
    flow = torch.stack([3.0 * torch.sin(3 * yy), 2.0 * torch.cos(2 * xx)])  # at the flow's grid (1/8 of the state)
    warper.step(flow)
    torch.cuda.synchronize()
    # Timed without the profiler: timing around its `with` counted its own stop and event collection (the fifth to
    # thirteenth sessions' 13.4-13.8 ms a step, against 7.8 ms of kernels).
    t0 = time.perf_counter()
    for _ in range(steps):
        warper.step(flow)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / steps
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            warper.step(flow)
        torch.cuda.synchronize()
    ops = prof.key_averages()
    # the kernels themselves (an operator's device time is its kernels' again)
    device_ms = {e.key: (getattr(e, "self_device_time_total", 0) or 0) / 1e3 / steps for e in ops
                 if e.device_type == torch.autograd.DeviceType.CUDA}
    gpu = sorted(device_ms.items(), key=lambda kv: -kv[1])[:16]
    host = sorted(ops, key=lambda e: -e.self_cpu_time_total)[:8]
    # Whole kernel names: inductor's fused kernels share long prefixes, and names cut short overwrote each other
    # (the thirteenth session's profile lost half its kernels that way).
    res = {"stage": label, "s": wall, "first_s": wall,
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
           "gpu_ms_per_step_all": round(sum(device_ms.values()), 3),
           "gpu_ms_per_step": {k: round(v, 3) for k, v in gpu if v > 0},
           "host_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / steps, 3) for e in host}}
    rows.append(res)
    print(json.dumps(res), flush=True)


def vae_rows(vae, video: torch.Tensor, args: argparse.Namespace, row: Callable[[str, Dict[str, float]], None],
             rows: List[Dict[str, object]]) -> None:
    """The VAE's encode and decode: default, cuDNN's autotuner, the --vae-variants, optionally against float32."""
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
    rows[-2]["rel_l2_vs_default"] = rel_l2(lat["zb"], ref_z)
    rows[-1]["rel_l2_vs_default"] = rel_l2(out["v"], ref_v)
    torch.backends.cudnn.benchmark = False
    fp32 = None
    if args.fp32_reference:
        # The yardstick for "lossless": how far plain bf16 already is from float32 (same weights, same input).
        import copy

        vae32 = copy.deepcopy(vae).float()
        fp32 = (vae_encode(vae32, video * 2 - 1).float(), decode_latents(vae32, lat["z"]).float())
        del vae32
        torch.cuda.empty_cache()
        rows[0]["rel_l2_vs_fp32"] = rel_l2(ref_z, fp32[0])
        rows[1]["rel_l2_vs_fp32"] = rel_l2(ref_v, fp32[1])
    for variant in [v for v in args.vae_variants.split(",") if v]:
        vae_variant_rows(vae, variant, video, lat["z"], ref_z, ref_v, row, rows, fp32)


def input_rows(args: argparse.Namespace, device: torch.device, row: Callable[[str, Dict[str, float]], None],
               rows: List[Dict[str, object]]) -> None:
    """The model's inputs from a 1080p float plate and its quadmask (colour, area resize, quantise, pad: what the
    pipeline's model-inputs stage runs after reading the plate), on the host and on the GPU, compared."""
    from void_server.pipelines.void.conditioning import padded_length, prepare_mask, prepare_video

    rng = np.random.default_rng(0)
    plate = rng.random((args.frames, 1080, 1920, 3), dtype=np.float32) * 1.2 - 0.1
    quad = rng.choice(np.uint8([0, 63, 127, 255]), size=(args.frames, 1080, 1920))
    size, length = (384, 672), padded_length(args.frames)
    got = {}
    for dev in (torch.device("cpu"), device):
        def run(dev=dev):
            got[dev.type] = (prepare_video(plate, size, length, "linear", dev), prepare_mask(quad, size, length, dev))
        row("model inputs (1080p plate) on %s" % dev.type, timed(run, reps=1))
    rows[-1]["rel_l2_vs_default"] = rel_l2(got["cuda"][0].cpu(), got["cpu"][0])
    # the mask's four levels come out of `/ 255` (a reciprocal multiply on the GPU): equal to ~1 ulp, never a level
    rows[-1]["mask_max_abs_diff"] = float((got["cuda"][1].cpu() - got["cpu"][1]).abs().max())
    # the uploads as before the seventeenth session (from pageable memory), on the same inputs
    from void_server.pipelines.void import conditioning

    pinned = conditioning._tensor
    conditioning._tensor = lambda f, dev: torch.from_numpy(np.require(f, requirements=("C", "W"))).to(dev or "cpu")
    try:
        def pageable() -> None:
            got["pageable"] = (prepare_video(plate, size, length, "linear", device),
                               prepare_mask(quad, size, length, device))
        row("model inputs (1080p plate) on %s, pageable uploads" % device.type, timed(pageable, reps=1))
    finally:
        conditioning._tensor = pinned
    rows[-1]["equal_to_pinned"] = all(torch.equal(a, b) for a, b in zip(got["pageable"], got["cuda"]))
    quadmask_rows(args.frames, row)


def quadmask_rows(n: int, row: Callable[[str, Dict[str, float]], None]) -> None:
    """The quadmask stage on a ready quadmask (bench_pipeline's synthetic clip: mostly keep, as a real one is; a
    noisy one quantises ~20x slower a frame), into a fresh workdir each time: as the pipeline runs it (its
    checkpoint written later, on the job's writer thread), and with that write inline."""
    import tempfile

    from bench_pipeline import synthetic_clip

    from void_server.media.frames import ArrayFrames
    from void_server.pipelines.base import PipelineInputs, PipelineSettings
    from void_server.pipelines.frame_pool import on_thread
    from void_server.pipelines.void.conditioning import MODEL_SIZE, augmentation_noise, padded_length
    from void_server.reasoning.quadmask import build_quadmask

    quad = synthetic_clip(n, 1080, 1920)[1]
    frames = ArrayFrames(quad.astype(np.float32))
    plate = ArrayFrames(np.zeros((len(quad), 1, 1, 3), np.float32))
    plate.height, plate.width = quad.shape[1:]  # only its size and length are read
    settings = PipelineSettings(prompt="x", mask_mode="quadmask")
    noise_shape = (1, 3, padded_length(n)) + MODEL_SIZE
    for label, later, beside in (("checkpoint written later", True, False), ("checkpoint written inline", False, False),
                                 ("checkpoint later, the augmentation noise drawn beside it", True, True)):
        seals = []
        if beside:  # as a job starts: the stage's own end, and the draw's end apart
            def stage_only() -> Dict[str, float]:
                t0 = time.perf_counter()
                drawing = on_thread("noise", augmentation_noise, noise_shape, 0)
                with tempfile.TemporaryDirectory() as tmp:
                    build_quadmask(PipelineInputs(plate=plate, settings=settings, workdir=Path(tmp), quadmask=frames),
                                   seal_later=seals.append)
                    t1 = time.perf_counter()
                drawing.result()
                return {"s": t1 - t0, "first_s": time.perf_counter() - t0}
            runs = [stage_only() for _ in range(3)]
            row("quadmask stage (%d 1080p frames), %s (first_s: the draw's end)" % (len(quad), label),
                min(runs, key=lambda r: r["s"]))
        else:
            def stage() -> None:
                with tempfile.TemporaryDirectory() as tmp:
                    inputs = PipelineInputs(plate=plate, settings=settings, workdir=Path(tmp), quadmask=frames)
                    build_quadmask(inputs, seal_later=seals.append if later else None)
            row("quadmask stage (%d 1080p frames), %s" % (len(quad), label), timed(stage, reps=3))
    row("augmentation noise alone (%s)" % (noise_shape,), timed(lambda: augmentation_noise(noise_shape, 0), reps=2))


def noise_rows(args: argparse.Namespace, device: torch.device, row: Callable[[str, Dict[str, float]], None],
               rows: List[Dict[str, object]]) -> None:
    """RAFT alone, the reference and aligned warped noise (the warp compiled, as the pipeline runs it; with
    --eager-warp also not compiled, and the two compared), and --profile-warp's profiled step."""
    raft = load_raft(None, device)
    clip = torch.rand(args.frames, 3, 384, 672)  # on the host, as the pipeline hands pass 1's frames over
    small = torch.rand(72, 3, 240, 360, device=device)
    eager_flows = {}
    row("RAFT flows alone (72 frames, 240x360), eager", timed(
        lambda: eager_flows.__setitem__("f", torch.stack(list(iter_flow(raft, small, graphs=False)))), reps=1))
    graphed = {}
    row("RAFT flows alone, CUDA graphs (first call captures)", timed(
        lambda: graphed.__setitem__("f", torch.stack(list(iter_flow(raft, small, graphs=True)))), reps=1))
    rows[-1]["max_abs_diff_vs_eager"] = float((graphed["f"] - eager_flows["f"]).abs().max())
    torch.cuda.reset_peak_memory_stats()
    ref_noise = {}
    # reps=1: the first run compiles the warp step (first_s), the second is the job's time
    row("warped noise, reference", timed(lambda: ref_noise.__setitem__("n", reference_warped_noise(
        clip, raft, torch.Generator(device).manual_seed(0))), reps=1))
    flow_module.CUDA_GRAPHS = False
    out = {}
    row("warped noise, reference, RAFT eager", timed(lambda: out.__setitem__("n", reference_warped_noise(
        clip, raft, torch.Generator(device).manual_seed(0))), reps=1))
    flow_module.CUDA_GRAPHS = True
    # the same draws: a difference is the warp's scatter-add order (two runs differ by ~4e-6), or the flows
    rows[-1]["max_abs_diff_vs_default"] = float(abs(out["n"] - ref_noise["n"]).max())
    if args.eager_warp:
        with eager_warp():
            out = {}
            row("warped noise, reference, eager warp", timed(lambda: out.__setitem__("n", reference_warped_noise(
                clip, raft, torch.Generator(device).manual_seed(0))), reps=1))
        # the same draws: compiled and eager differ by rounding and the scatter-adds' order only
        rows[-1]["max_abs_diff_vs_compiled"] = float(abs(out["n"] - ref_noise["n"]).max())
        rows[-1]["rel_l2_vs_default"] = rel_l2(torch.from_numpy(out["n"]), torch.from_numpy(ref_noise["n"]))
    if torch.cuda.device_count() > 1:
        raft1 = load_raft(None, "cuda:1")
        raft1.load_state_dict(raft.state_dict())
        out = {}
        row("warped noise, reference, RAFT on cuda:1", timed(lambda: out.__setitem__("n", reference_warped_noise(
            clip, raft1, torch.Generator(device).manual_seed(0), device=device)), reps=1))
        rows[-1]["max_abs_diff_vs_one_gpu"] = float(abs(out["n"] - ref_noise["n"]).max())
        del raft1
    torch.cuda.reset_peak_memory_stats()
    t_lat = (args.frames - 1) // 4 + 1
    row("warped noise, aligned", timed(lambda: aligned_warped_noise(clip, raft, t_lat + t_lat % 2, (48, 84), torch.Generator(device).manual_seed(0)), reps=1))

    if args.profile_warp:
        profile_warp(device, rows)
        if args.eager_warp:
            with eager_warp():
                profile_warp(device, rows, label="noise warp, one step (profiled), eager")



@contextlib.contextmanager
def eager_warp() -> Iterator[None]:
    """The noise warp as written, not compiled (what every GPU ran before the fourth session's end)."""
    from void_server.pipelines.void import noise_warp

    saved = noise_warp._warp_fn
    noise_warp._warp_fn = lambda device: noise_warp._warp
    try:
        yield
    finally:
        noise_warp._warp_fn = saved


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=85)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--vae-variants", default="", help="comma list of: channels_last, compile, compile_plain, compile_whole")
    ap.add_argument("--profile-warp", action="store_true",
                    help="also profile the Go-with-the-Flow warp at the reference's state size (the noise stage's cost)")
    ap.add_argument("--skip-vae", action="store_true", help="only the warped-noise rows")
    ap.add_argument("--only-vae", action="store_true", help="only the VAE rows")
    ap.add_argument("--only-inputs", action="store_true", help="only the model-inputs rows (pinned and pageable)")
    ap.add_argument("--eager-warp", action="store_true",
                    help="also run the warped noise (and --profile-warp) with the warp step not compiled, and compare")
    ap.add_argument("--fp32-reference", action="store_true",
                    help="also run the VAE in float32 and report every bf16 variant's distance from it")
    args = ap.parse_args()
    device = torch.device("cuda")
    rows: List[Dict[str, object]] = []

    def row(name: str, res: Dict[str, float]) -> None:
        res = {"stage": name, **res, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        rows.append(res)
        print(json.dumps(res), flush=True)

    if not args.skip_vae and not args.only_inputs:
        vae = random_vae(device, torch.bfloat16)
        vae_rows(vae, torch.rand(1, 3, args.frames, 384, 672, device=device), args, row, rows)
        del vae
        torch.cuda.empty_cache()
    if not args.only_vae:
        input_rows(args, device, row, rows)
        if not args.only_inputs:
            noise_rows(args, device, row, rows)

    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("stages_%df.json" % args.frames)).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))
    print("\n%-40s %9s %9s %8s %11s %11s" % ("stage", "s", "first s", "peakGiB", "rel vs def", "rel vs fp32"))
    for r in rows:
        print("%-40s %9.3f %9.3f %8.1f %11s %11s" % (r["stage"], r["s"], r["first_s"], r["peak_gib"],
                                                   "%.2e" % r["rel_l2_vs_default"] if "rel_l2_vs_default" in r else "",
                                                   "%.2e" % r["rel_l2_vs_fp32"] if "rel_l2_vs_fp32" in r else ""))


if __name__ == "__main__":
    main()
