"""One full-size CogVideoX block (random bf16 weights), compiled as the server compiles it, under variants of its
elementwise work: where the ~26 ms of norms, modulation and RoPE a forward go, kernel by kernel, and what a change
buys. Run on the device (docs/performance.md gives the command). Prints a table and writes JSON.

Variants are `+`-joined flags on the server's block (FlashAttention-4 where installed, else cuDNN; the fused GELU):
- `base`: the query/key norms and RoPE unfused (`fuse_qk_rope=False`);
- `qk`: fused into one Triton kernel (`qk_norm_rope`, the server's default);
- `mk`: inductor's `triton.multi_kernel=1` (persistent and looped reductions both built, the faster one kept);
- `persist`: inductor told to make reductions up to 4096 wide persistent (a row in registers) instead of looped;
- `norm1`: the block's first norm by `modulated_norm` (an experiment, off in the server) into the joint input;
- `fp8`: the block's linears in float8 (`fp8_linear`, the lossy `fp8_matmul` option), as a float8 job runs them.
Every variant compiles cold (the FX graph cache off: `persist` is not part of its key).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transformer import profile_split, time_calls  # noqa: E402
from full_size import FULL_TRANSFORMER, add_clip_args, latent_grid, random_transformer, rel_l2, rotary  # noqa: E402
from void_server.pipelines.void.accel import FastCogVideoXAttnProcessor, fa4_usable, fuse_feed_forward_gelu  # noqa: E402
from void_server.pipelines.void.fp8_linear import fp8_matmul  # noqa: E402
from void_server.pipelines.void.modulated_norm import fuse_norm1  # noqa: E402

FLAGS = ("base", "qk", "mk", "persist", "norm1", "fp8")


def parse_variant(name: str) -> List[str]:
    flags = name.split("+")
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise ValueError("unknown flag(s) %s in variant %r (flags: %s)" % (unknown, name, ", ".join(FLAGS)))
    return flags


def _persistent_up_to(width: int):
    """Patch inductor's choice so inner reductions up to `width` are persistent; returns the undo."""
    from torch._inductor.choices import InductorChoices

    original = InductorChoices.should_use_persistent_reduction

    def wider(features, cooperative_reduction):
        if original(features, cooperative_reduction):
            return True
        from torch._inductor.virtualized import V

        return (not cooperative_reduction and features.get_reduction_hint().name == "INNER"
                and V.graph.sizevars.statically_known_leq(features.reduction_numel, width))

    InductorChoices.should_use_persistent_reduction = staticmethod(wider)
    return lambda: setattr(InductorChoices, "should_use_persistent_reduction", staticmethod(original))


def _run_variant(name: str, flags: List[str], b: torch.nn.Module, inputs: Dict[int, Tuple[torch.Tensor, ...]],
                 rotary_emb: Tuple[torch.Tensor, torch.Tensor], backend: str, first: Dict[int, torch.Tensor],
                 args: argparse.Namespace) -> List[Dict[str, object]]:
    """Compile block `b` under `flags` and time it at each batch; a row per batch (`first` holds the outputs the
    first variant gave, which every later one is compared with)."""
    b.attn1.set_processor(FastCogVideoXAttnProcessor(backend, fuse_qk_rope="qk" in flags))
    if "norm1" in flags and not fuse_norm1(b):
        raise RuntimeError("variant %r: the block's first norm cannot be fused" % name)
    b.compile(fullgraph=True, dynamic=False)
    rows = []
    for batch, (x, text, temb) in inputs.items():
        def fwd() -> torch.Tensor:
            with torch.no_grad():
                return b(x, text, temb, image_rotary_emb=rotary_emb)[0]

        out = fwd()
        med = statistics.median(time_calls(fwd, warmup=2, reps=args.reps))
        first.setdefault(batch, out.float())
        row = {"variant": name, "batch": batch, "backend": backend, "ms_per_block": med * 1e3,
               "ms_per_forward_42": med * 42e3, "rel_l2_vs_first": rel_l2(out, first[batch]),
               "profile": profile_split(fwd, med, reps=5, top_n=args.top)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    add_clip_args(ap)
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--variants", default="base,qk,qk+mk,qk+persist", help="comma-separated, each run in order "
                    "(a name may repeat)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    # a list, not a dict: a variant may come back later in the run (interleaved, against the card's clock drift)
    variants = [(v, parse_variant(v)) for v in args.variants.split(",")]

    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = False
    torch._functorch.config.enable_autograd_cache = False
    device = torch.device("cuda")
    t_lat, h, w = latent_grid(args.frames, args.height, args.width)
    video = (t_lat // 2) * (h // 2) * (w // 2)
    model = random_transformer(dict(FULL_TRANSFORMER, num_layers=1), device, torch.bfloat16, seed=0)
    fuse_feed_forward_gelu(model)
    backend = "fa4" if fa4_usable(device) else "cudnn"
    cos, sin = rotary(t_lat, h, w, device)
    inputs = {}
    for batch in (int(b) for b in args.batches.split(",")):
        g = torch.Generator(device).manual_seed(batch)
        inputs[batch] = (torch.randn(batch, video, 3072, device=device, dtype=torch.bfloat16, generator=g),
                         torch.randn(batch, 226, 3072, device=device, dtype=torch.bfloat16, generator=g),
                         torch.randn(batch, 512, device=device, dtype=torch.bfloat16, generator=g))
    rows: List[Dict[str, object]] = []
    first: Dict[int, torch.Tensor] = {}
    for name, flags in variants:
        inductor_config.triton.multi_kernel = 1 if "mk" in flags else 0
        one = copy.deepcopy(model)  # a whole (one-block) transformer: what fp8_matmul swaps the linears of
        with contextlib.ExitStack() as variant:
            if "fp8" in flags:
                variant.enter_context(fp8_matmul(one, device))
            if "persist" in flags:
                variant.callback(_persistent_up_to(4096))
            rows += _run_variant(name, flags, one.transformer_blocks[0], inputs, (cos, sin), backend, first, args)
        one = None  # the compiled copy and its graphs go before the next variant's
        torch._dynamo.reset()
    inductor_config.triton.multi_kernel = 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "block.json").write_text(json.dumps(
        {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1))
    print("\n%-18s %5s %10s %14s %12s" % ("variant", "batch", "ms/block", "ms/forward(42)", "rel L2"))
    for r in rows:
        print("%-18s %5d %10.3f %14.2f %12.2e" % (r["variant"], r["batch"], r["ms_per_block"], r["ms_per_forward_42"],
                                                 r["rel_l2_vs_first"]))
    for r in rows:
        print("\n%s, batch %d (%.3f ms a block):" % (r["variant"], r["batch"], r["ms_per_block"]))
        calls = r["profile"]["calls_per_forward"]
        for k, sec in r["profile"]["top_kernels"].items():
            print("  %8.1f us  x%-3g %s" % (sec * 1e6, calls.get(k, 0), k))


if __name__ == "__main__":
    main()
