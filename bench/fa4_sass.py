"""FlashAttention-4's Hopper forward at VOID's shape, compiled on a machine without a GPU, and its SASS read:

    python3 bench/fa4_sass.py [--variant off|skip|1/8|...] [--batch 1] [--out DIR]

The instruction mix of the kernel's steady key-block loop (per warp and key block), its spills and totals, for
`fa4_softmax_variants.py`'s variants: what the seventeenth session used to see why none is faster before spending
device time (docs/performance.md). Needs flash-attn-4 and the CuTe DSL for this Python (`bench/fa4_wheels.sh`'s
packages, for the local Python version) and PyPI's `nvidia-cuda-cuobjdump` and `nvidia-cuda-nvdisasm` (cuobjdump
calls nvdisasm: both on PATH, or `--cuda-bin`). No GPU and no driver are used: flash-attn-4 compiles for a
named target (FLASH_ATTENTION_ARCH, CUTE_DSL_ARCH) on torch's fake tensors.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Counter, Dict, List, Optional, Tuple

Instruction = Tuple[int, str]  # address, text (with its predicate, if any)

_LINE = re.compile(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_PREDICATE = re.compile(r"^@!?U?P[0-9T]\s+")
_BRANCH = re.compile(r"\bBRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)")


def instructions(sass: str) -> List[Instruction]:
    """cuobjdump -sass text -> (address, instruction) in order."""
    return [(int(m.group(1), 16), m.group(2)) for m in map(_LINE.match, sass.splitlines()) if m]


def loops(code: List[Instruction]) -> List[Tuple[int, int]]:
    """Every conditional backward branch's (target, branch address): the loops, innermost or not. (An unconditional
    one is out-of-line code, a barrier's wait, jumping back to where it was called from.)"""
    found = []
    for addr, text in code:
        m = _BRANCH.search(text)
        if m and text.startswith("@") and int(m.group(1), 16) < addr:
            found.append((int(m.group(1), 16), addr))
    return found


def opcode_mix(code: List[Instruction], span: Optional[Tuple[int, int]] = None) -> Counter:
    """Opcodes (without modifiers) counted over `span` (inclusive addresses), or over all of `code`."""
    lo, hi = span if span is not None else (code[0][0], code[-1][0])
    return collections.Counter(_PREDICATE.sub("", text).split()[0].split(".")[0] for addr, text in code
                               if lo <= addr <= hi)


def key_block_loop(code: List[Instruction]) -> Optional[Tuple[int, int]]:
    """The smallest loop with both matrix products (HGMMA) and exponentials (MUFU): the steady loop over key
    blocks. The tile loop around it has both too but is larger; the barriers' polling loops have neither."""
    spans = [s for s in loops(code) if all(opcode_mix(code, s)[op] for op in ("HGMMA", "MUFU"))]
    return min(spans, key=lambda s: s[1] - s[0]) if spans else None


def compile_cubin(variant: str, batch: int, dump: Path) -> Path:
    """The forward at 11,314 tokens, 48 heads, head dim 64, compiled for sm_90a into `dump`; its cubin's path."""
    os.environ.setdefault("FLASH_ATTENTION_ARCH", "sm_90")
    os.environ.setdefault("CUTE_DSL_ARCH", "sm_90a")
    os.environ.setdefault("FLASH_ATTENTION_NUM_SMS", "132")
    os.environ["CUTE_DSL_KEEP"] = "ptx,cubin"
    os.environ["CUTE_DSL_DUMP_DIR"] = str(dump)
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fa4_softmax_variants
    from flash_attn.cute import flash_attn_func

    fa4_softmax_variants.install(fa4_softmax_variants.parse_variant(variant))
    with FakeTensorMode(allow_non_fake_inputs=True):
        q = torch.empty(batch, 11314, 48, 64, dtype=torch.bfloat16, device="cuda")
        flash_attn_func(q, q, q, causal=False)
    cubins = sorted(dump.glob("*FlashAttentionForwardSm90*.cubin"))
    if not cubins:
        raise SystemExit("no Hopper forward cubin was written to %s" % dump)
    return cubins[-1]


def report(sass: str) -> Dict[str, object]:
    code = instructions(sass)
    loop = key_block_loop(code)
    spills = sum(1 for _, t in code if _PREDICATE.sub("", t).startswith(("LDL", "STL")))
    return {"instructions": len(code), "spills": spills,
            "key_block_loop": None if loop is None else {
                "span": "%x-%x" % loop, "instructions": sum(1 for a, _ in code if loop[0] <= a <= loop[1]),
                "mix": dict(opcode_mix(code, loop).most_common())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="off", help="fa4_softmax_variants.parse_variant's syntax")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--cuda-bin", default=None, help="folder with cuobjdump and nvdisasm, if not on PATH")
    ap.add_argument("--out", default=None, help="keep the cubin and SASS here (default: a temporary folder)")
    args = ap.parse_args()
    dump = Path(args.out or tempfile.mkdtemp(prefix="fa4-sass-"))
    dump.mkdir(parents=True, exist_ok=True)
    cubin = compile_cubin(args.variant, args.batch, dump)
    env = dict(os.environ)
    if args.cuda_bin:
        env["PATH"] = args.cuda_bin + os.pathsep + env.get("PATH", "")
    sass = subprocess.run(["cuobjdump", "-sass", str(cubin)], check=True, capture_output=True, text=True,
                          env=env).stdout
    (dump / "forward.sass").write_text(sass)
    result = report(sass)
    loop = result["key_block_loop"]
    print("variant %s, batch %d: %d instructions, %d spill instructions" % (
        args.variant, args.batch, result["instructions"], result["spills"]))
    if loop:
        print("key-block loop %s: %d instructions a warp per key block" % (loop["span"], loop["instructions"]))
        print("  " + " ".join("%s %d" % kv for kv in loop["mix"].items()))
    print("SASS: %s" % (dump / "forward.sass"))


if __name__ == "__main__":
    main()
