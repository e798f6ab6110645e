"""The reasoning checkpoints: what auto mask mode downloads into MODEL_DIR, and the doctor's check of them.

File lists are patterns, not exact names, so a re-sharded upload still matches; the check reads the folder's
own safetensors index to find missing shards. Sizes are approximate (bf16 / fp32 as published).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    hub_id: str
    folder: str  # under MODEL_DIR
    model_types: Tuple[str, ...]  # accepted config.json model_type values
    files: Tuple[str, ...]  # allow patterns for snapshot_download
    approx_gb: float
    licence: str
    required: bool  # auto mode cannot run without it
    gated: bool = False
    purpose: str = ""


_HF_FILES = ("*.json", "*.safetensors", "*.txt", "*.jinja", "*.model")  # configs, weights, tokenizer, template

VLM = Checkpoint("Qwen/Qwen3-VL-8B-Instruct", "Qwen3-VL-8B-Instruct", ("qwen3_vl",), _HF_FILES, 17.5,
                 "Apache-2.0", True, purpose="which regions the target affects (the VLM)")
SAM2 = Checkpoint("facebook/sam2.1-hiera-large", "sam2.1-hiera-large", ("sam2_video", "sam2"), _HF_FILES, 0.9,
                  "Apache-2.0", True, purpose="tracks each affected region through the clip")
SAM3 = Checkpoint("facebook/sam3", "sam3", ("sam3_video", "sam3"), _HF_FILES, 3.5,
                  "SAM License (Meta; gated: accept it on the hub first)", False, gated=True,
                  purpose="segments objects the VLM names but does not locate, by name (optional)")
CHECKPOINTS = (VLM, SAM2, SAM3)


def download_reasoning_models(model_dir: Union[str, Path], include_optional: bool = False,
                              token: Optional[str] = None,
                              snapshot_download: Optional[Callable[..., str]] = None) -> Dict[str, Path]:
    """Fetches the reasoning checkpoints into MODEL_DIR/<folder>; returns {hub id: folder}. Resumes partial
    downloads (huggingface_hub does)."""
    if snapshot_download is None:
        from huggingface_hub import snapshot_download
    root = Path(model_dir)
    done = {}
    for ck in CHECKPOINTS:
        if not (ck.required or include_optional):
            continue
        target = root / ck.folder
        snapshot_download(repo_id=ck.hub_id, local_dir=str(target), allow_patterns=list(ck.files), token=token)
        done[ck.hub_id] = target
    return done


def _check_one(ck: Checkpoint, folder: Path) -> List[str]:
    where = "%s (%s)" % (folder, ck.hub_id)
    if not folder.is_dir():
        return ["%s is missing: run `void-server download --reasoning`" % where]
    cfg = folder / "config.json"
    if not cfg.is_file():
        return ["%s has no config.json" % where]
    problems = []
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        return ["%s: config.json is unreadable (%s)" % (where, e)]
    if model_type not in ck.model_types:
        problems.append("%s: model_type is %r, expected %s" % (where, model_type, " or ".join(ck.model_types)))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            shards = []
            problems.append("%s: model.safetensors.index.json is unreadable (%s)" % (where, e))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            problems.append("%s: %d weight shard(s) missing, e.g. %s" % (where, len(missing), missing[0]))
    elif not any(folder.glob("*.safetensors")):
        problems.append("%s has no .safetensors weights" % where)
    if not any((folder / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        problems.append("%s has no preprocessor_config.json or processor_config.json" % where)
    return problems


def check_reasoning_models(model_dir: Union[str, Path], remote_vlm: bool = False) -> List[str]:
    """Problems with the auto-mode checkpoints under MODEL_DIR, for `void-server doctor` ([] when ready).
    Optional checkpoints are checked only if their folder exists; with a remote VLM (`vlm_url`), so is the VLM's."""
    root = Path(model_dir)
    problems = []
    for ck in CHECKPOINTS:
        folder = root / ck.folder
        needed = ck.required and not (remote_vlm and ck is VLM)
        if needed or folder.exists():
            problems += _check_one(ck, folder)
    return problems
