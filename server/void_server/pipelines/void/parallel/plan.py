"""Process groups for one job split over ranks, and the collectives the denoise loop needs."""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class Axis:
    """One way of splitting the work: this process's rank along it, how many ranks share it, and their group."""

    rank: int = 0
    size: int = 1
    group: Optional[object] = None  # a torch.distributed ProcessGroup when size > 1

    def all_gather(self, t: torch.Tensor) -> List[torch.Tensor]:
        """Every rank's tensor (all the same shape), in rank order."""
        if self.size == 1:
            return [t]
        t = t.contiguous()
        out = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(out, t, group=self.group)
        return out

    def all_to_all(self, send: Sequence[torch.Tensor], recv_shapes: Sequence[Tuple[int, ...]]) -> List[torch.Tensor]:
        """send[j] goes to rank j; returns what rank j sent here, shaped recv_shapes[j]. Shapes may differ per rank
        (uneven token shards), so this goes through one flat all_to_all_single (gloo's list form needs equal sizes)."""
        if self.size == 1:
            return [send[0]]
        flat = torch.cat([t.reshape(-1) for t in send])
        recv_sizes = [math.prod(s) for s in recv_shapes]
        out = flat.new_empty(sum(recv_sizes))
        dist.all_to_all_single(out, flat, recv_sizes, [t.numel() for t in send], group=self.group)
        return [c.view(s) for c, s in zip(out.split(recv_sizes), recv_shapes)]


class StopVote:
    """"Does any rank want to stop?", agreed by every rank without holding the GPU up. Each call sends this rank's
    answer and returns the agreement of the call before: a vote is acted on one step late, by every rank at the
    same step. A blocking vote (a tensor made from a host value, then `.item()`) drained the GPU's queue every step,
    so the next step's kernels started late; this one is reduced in stream order and copied to the host on a stream
    of its own, and by the next call it has long arrived."""

    def __init__(self, axis: Axis, device: torch.device) -> None:
        self.axis, self.device = axis, device
        self._pending: Optional[Tuple[torch.Tensor, Optional[object]]] = None  # (host copy, its copy's event)
        self._stream = None

    def __call__(self, stop: bool) -> bool:
        if self.axis.size == 1:
            return stop
        agreed = False
        if self._pending is not None:
            value, copied = self._pending
            if copied is not None:
                copied.synchronize()
            agreed = bool(value.item() > 0)  # a host tensor by now
        vote = torch.full((1,), 1.0 if stop else 0.0, device=self.device)  # a fill kernel: no host copy
        dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self.axis.group)
        self._pending = (vote, None) if self.device.type != "cuda" else self._to_host(vote)
        return agreed

    def _to_host(self, vote: torch.Tensor) -> Tuple[torch.Tensor, object]:
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        host = torch.empty((1,), dtype=vote.dtype, pin_memory=True)
        self._stream.wait_stream(torch.cuda.current_stream(self.device))  # the reduce, queued on the current stream
        with torch.cuda.stream(self._stream):
            host.copy_(vote, non_blocking=True)
            vote.record_stream(self._stream)
            copied = torch.cuda.Event()
            copied.record(self._stream)
        return host, copied


@dataclasses.dataclass(frozen=True)
class ParallelPlan:
    cfg: Axis = Axis()
    windows: Axis = Axis()
    sequence: Axis = Axis()
    world: Axis = Axis()  # every rank of the job, for decisions all must share (cancel)
    sequence_chunks: int = 1  # head groups of each sequence-parallel exchange (ulysses.UlyssesAttnProcessor)

    def my_windows(self, count: int) -> List[int]:
        return [k for k in range(count) if k % self.windows.size == self.windows.rank]

    def gather_windows(self, mine: Dict[int, torch.Tensor], lengths: Sequence[int], like: torch.Tensor) -> List[torch.Tensor]:
        """Every window's stepped latents (float32) on every rank. Round r gathers window r*size + j from rank j,
        zero-padded to the longest window (all_gather needs equal shapes); a rank with no window that round sends
        zeros. `like` (1, T, C, h, w) gives the other dimensions and the device."""
        if self.windows.size == 1:
            return [mine[k].float() for k in range(len(lengths))]
        size, longest = self.windows.size, max(lengths)
        out: List[torch.Tensor] = []
        for first in range(0, len(lengths), size):
            t = torch.zeros((like.shape[0], longest) + tuple(like.shape[2:]), dtype=torch.float32, device=like.device)
            k = first + self.windows.rank
            if k in mine:
                t[:, : lengths[k]] = mine[k].float()
            for j, g in enumerate(self.windows.all_gather(t)):
                if first + j < len(lengths):
                    out.append(g[:, : lengths[first + j]])
        return out


def _axis_groups(shape: Tuple[int, ...], dim: int) -> List[List[int]]:
    """Rank lists that differ only along `dim` of the row-major rank grid `shape`."""
    groups = []
    others = [range(n) for i, n in enumerate(shape) if i != dim]
    for fixed in itertools.product(*others):
        ranks = []
        for i in range(shape[dim]):
            coord = list(fixed)
            coord.insert(dim, i)
            ranks.append(int(sum(c * math.prod(shape[d + 1:]) for d, c in enumerate(coord))))
        groups.append(ranks)
    return groups


def make_plan(cfg: int = 1, windows: int = 1, sequence: int = 1, sequence_chunks: int = 1) -> ParallelPlan:
    """Split the initialised default process group (torchrun, or init_process_group) into the three axes.
    Rank = (cfg_index * windows + window_index) * sequence + sequence_index, so the ranks of one sequence group
    are neighbours (the same NVLink island on most machines). Every rank must call this with the same degrees."""
    if sequence_chunks < 1:
        raise ValueError("sequence_chunks must be at least 1, not %d" % sequence_chunks)
    if cfg not in (1, 2):
        raise ValueError("the guidance split has exactly two halves: cfg must be 1 or 2, not %d" % cfg)
    if min(windows, sequence) < 1:
        raise ValueError("windows and sequence degrees must be at least 1")
    need = cfg * windows * sequence
    if need == 1:
        return ParallelPlan()
    if not dist.is_initialized():
        raise RuntimeError("a parallel plan of %d ranks needs torch.distributed initialised (torchrun)" % need)
    world, rank = dist.get_world_size(), dist.get_rank()
    if world != need:
        raise ValueError("cfg %d x windows %d x sequence %d = %d ranks, but the world has %d" % (cfg, windows, sequence, need, world))
    shape = (cfg, windows, sequence)
    axes = []
    for dim, n in enumerate(shape):
        mine = Axis()
        for ranks in _axis_groups(shape, dim):  # every rank creates every group, in the same order
            group = dist.new_group(ranks) if n > 1 else None
            if rank in ranks and n > 1:
                mine = Axis(ranks.index(rank), n, group)
        axes.append(mine)
    return ParallelPlan(cfg=axes[0], windows=axes[1], sequence=axes[2], world=Axis(rank, world, None),
                        sequence_chunks=int(sequence_chunks))
