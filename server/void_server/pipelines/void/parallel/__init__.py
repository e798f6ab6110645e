"""One job's transformer work over several GPUs of one machine (docs/cluster.md, "One job on several GPUs").

Three exact splits, combinable (world size = cfg x windows x sequence):
- `cfg`: pass 2's guidance pair, rank 0 of the axis computes the unconditional half, rank 1 the conditional one;
- `windows`: the temporal windows of one step, spread round-robin, blended on every rank in the single-GPU order;
- `sequence`: Ulysses sequence parallelism, the video tokens split over ranks inside every attention layer.
`denoise(..., parallel=plan)` uses a plan; without one the single-GPU code path runs unchanged.
`group.RankGroup` is how the server runs one job this way (`--gpus-per-worker N`): rank 0 in the server process,
ranks 1..N-1 in long-lived worker processes (docs/pipeline.md, "One job on several GPUs").
"""
from .plan import Axis, ParallelPlan, StopVote, make_plan
from .ulysses import UlyssesAttnProcessor, sequence_parallel

__all__ = ["Axis", "ParallelPlan", "StopVote", "make_plan", "UlyssesAttnProcessor", "sequence_parallel"]
