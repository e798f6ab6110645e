"""The model directory: where each file lives, how big it should be, and what to do when it is not there.

    MODEL_DIR/
      CogVideoX-Fun-V1.5-5b-InP/          base model, diffusers layout (transformer/config.json, vae/, text_encoder/,
                                           tokenizer/, scheduler/); its 11 GB transformer weights are never read
      void_pass1.safetensors               48-channel transformer state dicts (netflix/void-model)
      void_pass2.safetensors
      raft_large_C_T_SKHT_V2-ff5fadd5.pth  torchvision RAFT-large, for pass 2's warped noise

A folder that itself holds transformer/config.json next to the two .safetensors files (the parity fixtures'
`model/`) is accepted too.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

BASE_DIRNAME = "CogVideoX-Fun-V1.5-5b-InP"
PASS_FILES = {1: "void_pass1.safetensors", 2: "void_pass2.safetensors"}
RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
# tiny.build_random_model_dir writes this into random-weight model dirs: their sizes are not the real ones.
RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS.txt"

# Base-model files we read (relative to the base folder); the transformer's weights are not among them.
BASE_FILES = (
    "transformer/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "tokenizer/spiece.model",
    "scheduler/scheduler_config.json",
)
# Smallest plausible size in bytes of each real download (a smaller file is a truncated download). Lower bounds,
# not exact sizes, so a re-packed but complete upload still passes.
MIN_SIZES: Dict[str, int] = {
    "void_pass1.safetensors": 11_000_000_000,  # 5.55 B bf16 parameters: 11.1 GB
    "void_pass2.safetensors": 11_000_000_000,
    RAFT_FILE: 20_000_000,  # torchvision raft_large: 5.26 M float32 parameters, 21 MB
    "vae/diffusion_pytorch_model.safetensors": 400_000_000,  # 215 M parameters: 431 MB bf16, 862 MB fp32
    "text_encoder": 9_000_000_000,  # T5 v1.1 XXL encoder, 4.76 B parameters in bf16, all shards together
}


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    root: Path  # the --model-dir
    base: Path  # the diffusers-layout base folder
    pass_files: Dict[int, Path]
    raft: Optional[Path]  # None in a fixture folder without RAFT weights

    @property
    def is_full_layout(self) -> bool:
        return self.base != self.root


def resolve_layout(model_dir: Path) -> ModelLayout:
    """The files of a model dir in either accepted layout (nothing is checked here; see check_model_dir)."""
    root = Path(model_dir).expanduser()
    base = root if (root / "transformer" / "config.json").is_file() else root / BASE_DIRNAME
    raft = root / RAFT_FILE
    return ModelLayout(
        root=root,
        base=base,
        pass_files={p: root / name for p, name in PASS_FILES.items()},
        raft=raft if raft.exists() or base != root else None,
    )


def _fix(model_dir: Path) -> str:
    return "run `void-server download --model-dir %s`" % model_dir


def _text_encoder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) + sum(f.stat().st_size for f in folder.glob("*.bin"))


def check_model_dir(model_dir: Path, passes: int = 2, strict_sizes: bool = True) -> List[str]:
    """Problems with a model dir, each naming the file and the fix; [] when VOID can run.

    `strict_sizes` checks the real models' sizes (a small file is a truncated download); it is skipped for a
    folder that is not in the full layout (test models, the parity fixtures)."""
    layout = resolve_layout(model_dir)
    fix = _fix(layout.root)
    problems: List[str] = []
    if not layout.root.is_dir():
        return ["model dir %s does not exist: %s" % (layout.root, fix)]
    sizes = strict_sizes and layout.is_full_layout and not (layout.root / RANDOM_WEIGHTS_MARKER).exists()
    for rel in BASE_FILES:
        f = layout.base / rel
        if not f.is_file():
            problems.append("missing %s: %s" % (f, fix))
        elif sizes and rel in MIN_SIZES and f.stat().st_size < MIN_SIZES[rel]:
            problems.append("%s is truncated (%d bytes, expected at least %d): %s" % (f, f.stat().st_size, MIN_SIZES[rel], fix))
    te = layout.base / "text_encoder"
    if te.is_dir():
        n = _text_encoder_bytes(te)
        if n == 0:
            problems.append("missing text encoder weights in %s: %s" % (te, fix))
        elif sizes and n < MIN_SIZES["text_encoder"]:
            problems.append("text encoder weights in %s are truncated (%d bytes, expected at least %d): %s"
                            % (te, n, MIN_SIZES["text_encoder"], fix))
    needed = [layout.pass_files[p] for p in range(1, passes + 1)]
    if passes >= 2 and layout.is_full_layout:
        needed.append(layout.root / RAFT_FILE)
    for f in needed:
        if not f.is_file():
            problems.append("missing %s: %s" % (f, fix))
        elif sizes and f.stat().st_size < MIN_SIZES[f.name]:
            problems.append("%s is truncated (%d bytes, expected at least %d): %s" % (f, f.stat().st_size, MIN_SIZES[f.name], fix))
    return problems
