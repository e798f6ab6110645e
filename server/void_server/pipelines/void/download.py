"""`void-server download`: fetch VOID's weights into a model dir (resumable; re-running skips finished files).

- base model: alibaba-pai/CogVideoX-Fun-V1.5-5b-InP, only the parts we read (its 11 GB transformer weights are
  never used: VOID's checkpoints replace them; only transformer/config.json is needed)
- netflix/void-model: void_pass1.safetensors, void_pass2.safetensors
- RAFT-large (torchvision C_T_SKHT_V2) from download.pytorch.org
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Optional

from .weights import BASE_DIRNAME, PASS_FILES, RAFT_FILE, check_model_dir

BASE_REPO = "alibaba-pai/CogVideoX-Fun-V1.5-5b-InP"
VOID_REPO = "netflix/void-model"
RAFT_URL = "https://download.pytorch.org/models/" + RAFT_FILE
BASE_PATTERNS = ["model_index.json", "transformer/config.json", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]
PARTS = ("base", "void", "raft")


def run_download(model_dir: Path, parts: Iterable[str] = PARTS, log: Callable[[str], None] = print,
                 token: Optional[str] = None) -> List[str]:
    """Download the named parts into `model_dir`; returns check_model_dir's problems afterwards ([] = ready)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    model_dir = Path(model_dir).expanduser()
    model_dir.mkdir(parents=True, exist_ok=True)
    parts = list(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError("unknown part(s) %s: choose from %s" % (", ".join(unknown), ", ".join(PARTS)))
    if "base" in parts:
        log("%s -> %s" % (BASE_REPO, model_dir / BASE_DIRNAME))
        snapshot_download(repo_id=BASE_REPO, local_dir=str(model_dir / BASE_DIRNAME), allow_patterns=BASE_PATTERNS,
                          token=token)
    if "void" in parts:
        for name in PASS_FILES.values():
            log("%s/%s -> %s" % (VOID_REPO, name, model_dir))
            hf_hub_download(repo_id=VOID_REPO, filename=name, local_dir=str(model_dir), token=token)
    if "raft" in parts and not (model_dir / RAFT_FILE).is_file():
        import torch.hub

        log("%s -> %s" % (RAFT_URL, model_dir))
        tmp = model_dir / (RAFT_FILE + ".part")
        torch.hub.download_url_to_file(RAFT_URL, str(tmp), hash_prefix="ff5fadd5", progress=True)
        tmp.replace(model_dir / RAFT_FILE)
    problems = check_model_dir(model_dir, passes=2 if "raft" in parts else 1)
    for p in problems:
        log("problem: " + p)
    return problems
