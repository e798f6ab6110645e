"""What each spawned rank runs (a module of its own so torch.multiprocessing's spawn can import it)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Tuple

import torch

TEXT_LEN = 7


@dataclasses.dataclass(frozen=True)
class Case:
    """A tiny denoising problem: shapes chosen to exercise several windows and uneven token shards."""

    t_lat: int = 6
    h: int = 8
    w: int = 12
    window: int = 22
    overlap: int = 4
    guidance: float = 1.0
    scheduler: str = "ddim"
    steps: int = 3
    degrees: Tuple[int, int, int] = (1, 1, 1)  # cfg, windows, sequence
    # Blocks compiled as the server compiles them, and run once without the plan first: the split must not reuse
    # a graph compiled for the plain loop (dynamo does not guard on module hooks).
    compiled: bool = False
    heads: int = 2  # the tiny transformer's; 4 lets two ranks split their heads into two chunks
    chunks: int = 1  # head groups per sequence-parallel exchange


def tiny_transformer(heads: int = 2) -> torch.nn.Module:
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    cfg = dict(TRANSFORMER_CONFIGS["tiny"], in_channels=48, num_attention_heads=heads)
    return CogVideoXTransformer3DModel(**cfg).eval()


def inputs(case: Case):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn((1, case.t_lat, 16, case.h, case.w), generator=gen)
    inpaint = torch.randn((1, case.t_lat, 32, case.h, case.w), generator=gen)
    prompt = torch.randn((1, TEXT_LEN, 32), generator=gen)
    negative = torch.randn((1, TEXT_LEN, 32), generator=gen)
    return latents, inpaint, prompt, negative


def scheduler(kind: str):
    from diffusers import CogVideoXDDIMScheduler, DDIMScheduler

    return {"ddim": DDIMScheduler, "cogvideox_ddim": CogVideoXDDIMScheduler}[kind]()


def run_case(case: Case, plan=None) -> Tuple[torch.Tensor, dict]:
    """-> (latents, what the transformer saw: its calls' batch sizes, the video tokens a block got, and the text
    stream its last block gave back)."""
    from void_server.pipelines.void.denoise import denoise

    latents, inpaint, prompt, negative = inputs(case)
    transformer = tiny_transformer(case.heads)
    seen = {"batches": [], "block_tokens": [], "text_out": []}
    transformer.register_forward_pre_hook(
        lambda m, a, kw: seen["batches"].append(kw["hidden_states"].shape[0]), with_kwargs=True)
    transformer.transformer_blocks[1].register_forward_pre_hook(
        lambda m, a, kw: seen["block_tokens"].append(kw["hidden_states"].shape[1]), with_kwargs=True)
    transformer.transformer_blocks[-1].register_forward_hook(lambda m, a, out: seen["text_out"].append(out[1].clone()))
    if not case.compiled:  # the all-to-alls the loop makes (counted eagerly: compiled code would not call this)
        from void_server.pipelines.void.parallel.plan import Axis

        exchange = Axis.all_to_all
        seen["exchanges"] = 0

        def counted(axis, send, shapes):
            seen["exchanges"] += 1
            return exchange(axis, send, shapes)

        Axis.all_to_all = counted

    def run(plan):
        return denoise(transformer, scheduler(case.scheduler), latents, inpaint, prompt,
                       negative if case.guidance > 1 else None, case.guidance, case.steps, case.window, case.overlap,
                       parallel=plan)

    if case.compiled:
        from void_server.pipelines.void.accel import accelerate_transformer

        accelerate_transformer(transformer, attention=None, compile_blocks=True)
        run(None)
        for calls in seen.values():
            calls.clear()
    try:
        return run(plan), seen
    finally:
        if not case.compiled:
            Axis.all_to_all = exchange  # the next case counts its own


def rank_main(rank: int, world: int, store: str, cases: Dict[str, Case], out_dir: str) -> None:
    """One rank: join the gloo group, run every case under its plan, save this rank's results."""
    import torch.distributed as dist

    from void_server.pipelines.void.parallel import make_plan

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
    try:
        results = {name: run_case(case, make_plan(*case.degrees, sequence_chunks=case.chunks))
                   for name, case in cases.items()}
        torch.save(results, str(Path(out_dir) / ("rank%d.pt" % rank)))
    finally:
        dist.destroy_process_group()
