"""One job's denoising split over 2 (and 4) CPU processes with gloo equals the single-process result.

All cases of one world size run in one spawn (importing diffusers per process is the slow part)."""
from __future__ import annotations

import math
from typing import Dict

import pytest
import torch
import torch.multiprocessing as mp

from parallel_ranks import Case, run_case, rank_main

RTOL = 1e-5

CASES = {
    # pass 2's guidance pair: rank 0 unconditional, rank 1 conditional
    "cfg": Case(guidance=6.0, scheduler="cogvideox_ddim", degrees=(2, 1, 1)),
    # 3 windows over 2 ranks (one rank holds two), blended identically
    "windows": Case(t_lat=14, window=6, overlap=2, degrees=(1, 2, 1)),
    # Ulysses: 3 x 3 x 5 = 45 video tokens, an uneven split over 2 ranks; pass-1 and pass-2 settings
    "sequence_pass1": Case(h=6, w=10, degrees=(1, 1, 2)),
    "sequence_pass2": Case(h=6, w=10, guidance=6.0, scheduler="cogvideox_ddim", degrees=(1, 1, 2)),
    # the same with compiled blocks that already ran the plain loop in this process (as a server's rank 0 has)
    "sequence_compiled": Case(h=6, w=10, degrees=(1, 1, 2), compiled=True),
    # each rank's heads exchanged in two groups (4 heads: two per rank, one per group), eager and compiled
    "sequence_chunked": Case(h=6, w=10, degrees=(1, 1, 2), heads=4, chunks=2),
    "sequence_chunked_compiled": Case(h=6, w=10, degrees=(1, 1, 2), heads=4, chunks=2, compiled=True),
    # a combination over 4 ranks: guidance pair x sequence, two windows
    "cfg_x_sequence": Case(t_lat=10, window=6, overlap=2, guidance=6.0, scheduler="cogvideox_ddim", degrees=(2, 1, 2)),
}


@pytest.fixture(scope="module")
def parallel_results(tmp_path_factory) -> Dict[str, list]:
    """case name -> [(latents, seen) per rank]."""
    by_world: Dict[int, Dict[str, Case]] = {}
    for name, case in CASES.items():
        by_world.setdefault(math.prod(case.degrees), {})[name] = case
    out: Dict[str, list] = {}
    for world, cases in sorted(by_world.items()):
        folder = tmp_path_factory.mktemp("world%d" % world)
        mp.spawn(rank_main, args=(world, str(folder / "store"), cases, str(folder)), nprocs=world, join=True)
        ranks = [torch.load(str(folder / ("rank%d.pt" % r))) for r in range(world)]
        out.update({name: [r[name] for r in ranks] for name in cases})
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_parallel_equals_single_process(name, parallel_results):
    case = CASES[name]
    single, single_seen = run_case(case)
    assert torch.isfinite(single).all()
    scale = single.abs().max().item()
    for rank, (out, seen) in enumerate(parallel_results[name]):
        err = (out - single).abs().max().item()
        assert out.shape == single.shape
        assert err <= RTOL * scale, "rank %d differs by %.3g (scale %.3g)" % (rank, err, scale)
        # ... and the work really was split
        cfg, windows, sequence = case.degrees
        if cfg == 2:
            assert set(seen["batches"]) == {1} and set(single_seen["batches"]) == {2}
        if windows > 1:
            assert len(seen["batches"]) < len(single_seen["batches"])
        if sequence > 1:
            assert max(seen["block_tokens"]) < min(single_seen["block_tokens"])
        if sequence > 1 and not case.compiled:  # two exchanges per block per head group, every transformer call
            layers = 2  # the tiny transformer's
            assert seen["exchanges"] == len(seen["batches"]) * layers * 2 * case.chunks
        if case.degrees == (1, 1, 2):
            # every rank holds the whole text stream (the text tokens' attention comes back with the exchange),
            # equal to the single process's call by call; it reaches the latents only faintly, so checked here
            assert len(seen["text_out"]) == len(single_seen["text_out"])
            for mine, ref in zip(seen["text_out"], single_seen["text_out"]):
                assert (mine - ref).abs().max().item() <= RTOL * ref.abs().max().item()


def test_single_process_plan_is_the_plain_loop():
    from void_server.pipelines.void.parallel import make_plan

    case = Case(t_lat=10, window=6, overlap=2)
    assert torch.equal(run_case(case)[0], run_case(case, make_plan())[0])


def test_degrees_must_match_the_world():
    from void_server.pipelines.void.parallel import make_plan

    with pytest.raises(ValueError, match="cfg must be 1 or 2"):
        make_plan(cfg=3)
    with pytest.raises(RuntimeError, match="torch.distributed"):
        make_plan(sequence=2)
