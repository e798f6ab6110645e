"""The result writer on the host's cores: 85 frames of a 1080p job (clean plate, pass-1 layer, quadmask channels)
written as the server writes them, one frame at a time on one core (the old `ExrResultSink`) against the writer
threads with OpenEXR compressing on every core. CPU only; prints a table, writes JSON under $OUT.

    python3 bench/bench_sink.py [--frames 85] [--plate 1080x1920]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import OpenEXR  # noqa: E402
from bench_pipeline import synthetic_clip  # noqa: E402

from void_server.media.sink import ExrResultSink  # noqa: E402


def graded_clip(n: int, h: int, w: int) -> list:
    """bench_pipeline's synthetic plate (a moving object and its shadow in the quadmask) with grain added, so it
    compresses like footage rather than like flat colour."""
    plate, quad = synthetic_clip(n, h, w)
    rng = np.random.default_rng(0)
    for frame in plate:
        frame += rng.normal(0, 0.01, frame.shape).astype(np.float32)
    return list(zip(plate, quad))


def run(label: str, clip: list, writers: int, exr_threads: int, serial: bool) -> dict:
    """`serial`: wait for each frame before handing the next, as the sink did before it had writer threads."""
    OpenEXR.set_global_thread_count(exr_threads)
    out = Path(tempfile.mkdtemp(prefix="void-sink-"))
    n = len(clip)
    sink = ExrResultSink(out, list(range(1001, 1001 + n)), half_float=True, manifest={"job": "bench"}, writers=writers)
    t0 = time.perf_counter()
    handed = 0.0
    for i, (clean, q) in enumerate(clip):
        t1 = time.perf_counter()
        sink.write_frame(i, clean, q, {"pass1": clean})
        if serial:
            sink.wait()
        handed += time.perf_counter() - t1
    sink.finish()
    total = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in out.glob("*.exr"))
    shutil.rmtree(out)
    return {"run": label, "writers": writers, "exr_threads": exr_threads, "total_s": total,
            "waited_in_write_frame_s": handed, "mb_written": size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=85)
    ap.add_argument("--plate", default="1080x1920")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    h, w = (int(v) for v in args.plate.split("x"))
    cores = os.cpu_count() or 1
    clip = graded_clip(args.frames, h, w)  # made first: only the writing is timed
    rows = [run("one frame at a time, one core (before)", clip, 1, 0, serial=True),
            run("writer threads, OpenEXR on every core (now)", clip, max(1, min(8, cores)), max(1, min(16, cores)),
                serial=False)]
    for r in rows:
        print(json.dumps(r), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / ("sink_%df.json" % args.frames)).write_text(json.dumps({"cores": cores, "rows": rows}, indent=1))
    print("\n%-46s %8s %16s %8s" % ("run (%d cores)" % cores, "total s", "write_frame s", "MB"))
    for r in rows:
        print("%-46s %8.2f %16.2f %8.0f" % (r["run"], r["total_s"], r["waited_in_write_frame_s"], r["mb_written"]))


if __name__ == "__main__":
    main()
