"""How much of a job's wall time the GPU spends working, per pipeline stage: where a job still waits on its host.

`bench_pipeline.py --runs ...,busy` runs one warm job under torch's profiler with only CUDA activity recorded (the
kernels, copies and memsets CUPTI reports, on every stream), merges their intervals into the GPU's busy time and
sets it against each stage's span (`StageClock` entries, recorded by `stage_spans`). A stage whose busy time falls
short of its wall time waited on host work there (or launched too little at once); that gap, summed, is what any
overlap of host work could still win, and the busy time what only faster kernels can.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator, List, Sequence, Tuple

Interval = Tuple[int, int]  # (start, end) in ns


def merge(intervals: Sequence[Interval]) -> List[Interval]:
    """The union of `intervals` as sorted, disjoint intervals."""
    out: List[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def busy_within(merged: Sequence[Interval], start: int, end: int) -> int:
    """ns of `merged` (disjoint, sorted) that fall inside [start, end)."""
    return sum(max(0, min(e, end) - max(s, start)) for s, e in merged if s < end and e > start)


def gaps(merged: Sequence[Interval], start: int, end: int, at_least_ns: int) -> List[Interval]:
    """The idle stretches of [start, end) between `merged`'s intervals that last `at_least_ns` or more."""
    out, cursor = [], start
    for s, e in merged:
        if e <= start:
            continue
        if s >= end:
            break
        if s - cursor >= at_least_ns:
            out.append((cursor, s))
        cursor = max(cursor, e)
    if end - cursor >= at_least_ns:
        out.append((cursor, end))
    return out


def busy_table(merged: Sequence[Interval], spans: Sequence[Tuple[str, int, int]], job: Interval,
               gap_ns: int = 2_000_000) -> Dict[str, object]:
    """Per stage span: wall, GPU busy and idle seconds; for the whole job the same, and its longest idle gaps
    (seconds after the job's start, and how long) with the stage each began in."""
    def stage_at(t: int) -> str:
        inner = [(name, s, e) for name, s, e in spans if s <= t < e]
        return min(inner, key=lambda x: x[2] - x[1])[0] if inner else "-"

    stages = {}
    for name, s, e in spans:
        busy = busy_within(merged, s, e)
        row = stages.setdefault(name, {"wall_s": 0.0, "gpu_busy_s": 0.0})
        row["wall_s"] += (e - s) / 1e9
        row["gpu_busy_s"] += busy / 1e9
    for row in stages.values():
        row["gpu_idle_s"] = row["wall_s"] - row["gpu_busy_s"]
    wall = job[1] - job[0]
    busy = busy_within(merged, *job)
    idle = sorted(gaps(merged, job[0], job[1], gap_ns), key=lambda g: g[0] - g[1])
    return {"job": {"wall_s": wall / 1e9, "gpu_busy_s": busy / 1e9, "gpu_idle_s": (wall - busy) / 1e9},
            "stages": stages,
            "longest_gaps": [{"at_s": (s - job[0]) / 1e9, "idle_s": (e - s) / 1e9, "stage": stage_at(s)}
                             for s, e in idle[:20]]}


def clock_shift(trace_start_ns: int) -> int:
    """What to add to a time.time_ns() reading to put it on the profiler's clock: 0 where the profiler's timestamps
    are wall-clock (epoch) ns, as in the torch builds seen so far; the monotonic clock's offset should a build use
    that instead."""
    wall, mono = time.time_ns(), time.monotonic_ns()
    return 0 if abs(wall - trace_start_ns) <= abs(mono - trace_start_ns) else mono - wall


@contextlib.contextmanager
def stage_spans() -> Iterator[List[Tuple[str, int, int]]]:
    """Every StageClock stage entered meanwhile, as (key, start, end) in time.time_ns(): the table StageClock
    writes holds only durations."""
    from void_server.pipelines.stage_clock import StageClock

    spans: List[Tuple[str, int, int]] = []
    original = StageClock.__call__

    @contextlib.contextmanager
    def timed(self, stage):
        start = time.time_ns()
        with original(self, stage):
            yield
        spans.append((self.prefix + stage, start, time.time_ns()))  # after the stage's closing synchronise

    StageClock.__call__ = timed
    try:
        yield spans
    finally:
        StageClock.__call__ = original


def gpu_intervals(prof) -> List[Interval]:
    """(start, end) ns of every GPU activity (kernels, copies, memsets) a finished torch.profiler run recorded."""
    from torch.autograd import DeviceType

    return [(e.start_ns(), e.end_ns()) for e in prof.profiler.kineto_results.events()
            if e.device_type() == DeviceType.CUDA and e.end_ns() > e.start_ns()]
