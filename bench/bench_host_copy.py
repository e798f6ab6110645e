"""Pinning T5's weights in host memory (where they wait between prompts): torch's per-tensor `pin_memory()` against
host_copy.py's one page-locked buffer.

    python3 bench/bench_host_copy.py [--model-dir /tmp/void-full] [--reps 3]

Each row: seconds to make the host copy, how much memory the process page-locked for it (VmLck + the CUDA host
allocator's reserve), and the median time to lend the whole encoder to the GPU (its weights' copy over PCIe).
Prints a table and writes host_copy.json under $OUT.
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

from report import print_markdown_table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "server"))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def one(model_dir: str, way: str, reps: int) -> Dict[str, object]:
    import torch

    from void_server.pipelines.void.host_copy import HostCopy
    from void_server.pipelines.void.loading import load_text
    from void_server.pipelines.void.weights import resolve_layout

    _, encoder = load_text(resolve_layout(Path(model_dir)), torch.bfloat16)
    torch.cuda.init()
    locked0 = _status_kib("VmLck") + _status_kib("VmPin")
    t0 = time.perf_counter()
    if way == "per-tensor":  # what HostCopy did through the eighth session
        homes = [p.data.pin_memory() for p in encoder.parameters()]
        for p, h in zip(encoder.parameters(), homes):
            p.data = h
        pinned = all(h.is_pinned() for h in homes)
        lend = lambda: [h.to("cuda", non_blocking=True) for h in homes]  # noqa: E731
    else:
        copy = HostCopy(encoder)
        pinned = copy.pinned and all(p.data.is_pinned() for p in encoder.parameters())
        lend = lambda: copy.lend(torch.device("cuda"))  # noqa: E731
    made_s = time.perf_counter() - t0
    locked = (_status_kib("VmLck") + _status_kib("VmPin") - locked0) * 1024
    stats = torch.cuda.host_memory_stats() if hasattr(torch.cuda, "host_memory_stats") else {}
    times: List[float] = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        lent = lend()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        del lent
        if way != "per-tensor":
            copy.restore()
        torch.cuda.empty_cache()
    weights = sum(p.numel() * p.element_size() for p in encoder.parameters())
    return {"way": way, "weights_gb": weights / 1e9, "made_s": made_s, "pinned": pinned,
            "page_locked_gb": locked / 1e9, "host_allocator_reserved_gb":
                stats.get("reserved_bytes.current", stats.get("allocated_bytes.current", 0)) / 1e9,
            "lend_s": statistics.median(times), "lend_gb_per_s": weights / 1e9 / statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", default="/tmp/void-full")
    ap.add_argument("--ways", default="per-tensor,packed")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one way per process: page-locked memory and the host allocator's cache start empty
        print("RESULT " + json.dumps(one(args.model_dir, args.child, args.reps)), flush=True)
        return
    import subprocess

    rows = []
    for way in args.ways.split(","):
        done = subprocess.run([sys.executable, __file__, "--child", way, "--model-dir", args.model_dir, "--reps",
                               str(args.reps)], capture_output=True, text=True, cwd=str(HERE))
        if done.returncode != 0:
            print(done.stderr[-3000:], flush=True)
            continue
        rows.append(json.loads(next(l[7:] for l in done.stdout.splitlines() if l.startswith("RESULT "))))
        print(json.dumps(rows[-1]), flush=True)
    Path(os.environ.get("OUT", ".")).joinpath("host_copy.json").write_text(json.dumps(rows, indent=1))
    print_markdown_table(("way", "weights GB", "made s", "pinned", "page-locked GB", "host allocator GB", "lend s",
                          "lend GB/s"),
                         [(r["way"], "%.2f" % r["weights_gb"], "%.2f" % r["made_s"], r["pinned"],
                           "%.2f" % r["page_locked_gb"], "%.2f" % r["host_allocator_reserved_gb"],
                           "%.3f" % r["lend_s"], "%.1f" % r["lend_gb_per_s"]) for r in rows])


if __name__ == "__main__":
    main()
