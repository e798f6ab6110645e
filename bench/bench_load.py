"""Loading a pass transformer, alone and beside a thread that holds the GIL (as dynamo's tracing does): safetensors'
tensor-by-tensor reading against packed_state.py's one copy.

    python3 bench/bench_load.py [--model-dir /tmp/void-full] [--reps 2]

Each row is one `loading.load_transformer` into an empty model built beforehand (as the eighth session's figures
were measured). "Python thread's share" is how much of its solo rate the GIL-bound thread kept meanwhile. Prints a table and writes load.json under $OUT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[0] / "server"))


def _spin(stop: threading.Event, count: List[int]) -> None:
    while not stop.is_set():
        x = 0
        for i in range(1000):  # pure Python: holds the GIL but for the interpreter's switches
            x += i
        count[0] += 1


def _solo_rate(seconds: float = 1.0) -> float:
    stop, count = threading.Event(), [0]
    t = threading.Thread(target=_spin, args=(stop, count))
    t.start()
    time.sleep(seconds)
    stop.set()
    t.join()
    return count[0] / seconds


def one_load(layout, device, dtype, packed: bool, beside: bool) -> Dict[str, float]:
    import torch

    from void_server.pipelines.void import loading

    real, build = loading.load_packed, loading.transformer_skeleton
    skeleton = build(layout)  # built before the other thread starts: the rows time the reading only
    loading.transformer_skeleton = lambda layout: skeleton
    if not packed:
        loading.load_packed = lambda *a: False
    stop, count = threading.Event(), [0]
    spinner = threading.Thread(target=_spin, args=(stop, count)) if beside else None
    try:
        if spinner:
            spinner.start()
        t0 = time.perf_counter()
        model = loading.load_transformer(layout, 1, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
    finally:
        stop.set()
        if spinner:
            spinner.join()
        loading.load_packed, loading.transformer_skeleton = real, build
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"s": took, "spins": count[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", default="/tmp/void-full")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny random models: checks this script, measures nothing")
    args = ap.parse_args()
    import torch

    from void_server.pipelines.void.loading import default_dtype
    from void_server.pipelines.void.weights import resolve_layout

    if args.smoke and not (Path(args.model_dir) / "void_pass2.safetensors").is_file():
        from void_server.pipelines.void.tiny import build_random_model_dir

        build_random_model_dir(args.model_dir, size="tiny")
    device = torch.device("cpu" if args.smoke else "cuda")
    layout = resolve_layout(Path(args.model_dir))
    dtype = default_dtype(device)
    if device.type == "cuda":
        torch.zeros(1, device=device)
    rate = _solo_rate()
    rows = []
    for rep in range(args.reps):
        for packed in (False, True):
            for beside in (False, True):
                r = one_load(layout, device, dtype, packed, beside)
                r.update(path="packed (one copy)" if packed else "safetensors load_file", beside=beside, rep=rep,
                         share=(r["spins"] / r["s"] / rate) if beside else None)
                rows.append(r)
                print(json.dumps(r), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "load.json").write_text(json.dumps(rows, indent=1))
    print("\n%-24s %-22s %8s %22s" % ("path", "", "s", "Python thread's share"))
    for r in rows:
        print("%-24s %-22s %8.2f %22s" % (r["path"], "beside a Python thread" if r["beside"] else "alone", r["s"],
                                          "%.0f%%" % (100 * r["share"]) if r["share"] is not None else ""))


if __name__ == "__main__":
    main()
