"""`void-server parity CASE_DIR --out RESULT.safetensors`: run a parity case through our code path.

A case folder (see the shared fixtures' parity/README.md) holds a tiny random-weight model in the real layout,
the decoded inputs, the reference's pass-2 raw noise and meta.json; we write the same tensor keys the reference's
expected.safetensors holds, computed by our pipeline code (float32, CPU unless told otherwise).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .conditioning import latent_frames, padded_length, prepare_mask, prepare_video
from .latent_noise import reference_noise_to_latents
from .loading import VoidModels
from .passes import PASS1, PASS2, PassConfig, embed_prompts, run_pass
from .weights import resolve_layout


def _pass_config(base: PassConfig, meta: Dict[str, object]) -> PassConfig:
    rules = {"tri-level": "tri", "binary": "binary", "quad": "quad"}
    return PassConfig(
        index=base.index,
        steps=int(meta["steps"]),
        guidance=float(meta["guidance"]),
        scheduler="cogvideox_ddim" if str(meta["scheduler"]).startswith("CogVideoX") else "ddim",
        mask_rule=rules[str(meta["mask_mode"])],
        negative_prompt=str(meta["negative_prompt"]),
    )


def run_parity(case_dir: Path, out: Optional[Path] = None, device: str = "cpu") -> Dict[str, torch.Tensor]:
    """Run both passes of a case exactly as its meta.json says; write the tensors to `out` (safetensors) if given."""
    from safetensors.torch import save_file

    case_dir = Path(case_dir)
    meta = json.loads((case_dir / "meta.json").read_text())
    inputs = np.load(case_dir / "inputs.npz")
    plate, quadmask = inputs["plate"], inputs["quadmask"]
    size = tuple(int(v) for v in meta["sample_size"])
    window_frames = int(meta["temporal_window_size"])
    window = latent_frames(window_frames)
    seed = int(meta["seed"])
    # The plain math on any device: parity compares with the reference's eager modules, not our compiled ones.
    models = VoidModels(resolve_layout(case_dir / "model"), torch.device(device), "gpu", compile_blocks=False,
                        compile_vae="none", attention="sdpa", fuse_gelu=False)
    result: Dict[str, torch.Tensor] = {}
    ids, _, _ = embed_prompts(models, meta["prompt"], None)
    result["prompt_input_ids"] = ids[0]

    for name, base in (("pass1", PASS1), ("pass2", PASS2)):
        pm = meta[name]
        cfg = _pass_config(base, pm)
        n = int(pm["frames"])
        length = padded_length(n, window_frames=window_frames)
        video = prepare_video(plate[:n], size, length)
        mask = prepare_mask(quadmask[:n], size, length)
        noise = None
        if cfg.index == 2:
            raw = np.load(case_dir / "raw_warped_noise_THWC_f16.npy")
            noise = reference_noise_to_latents(raw, latent_frames(length), size[0] // 8, size[1] // 8)
            result["pass2/initial_noise"] = noise
        calls = []
        res = run_pass(models, cfg, video, mask, meta["prompt"], seed, initial_noise=noise, window=window,
                       observer=lambda call: calls.append(call) if not calls else None)
        result[name + "/video"] = video
        result[name + "/mask"] = mask
        result[name + "/noise_augmented_video"] = res.noise_augmented_video
        for k, v in calls[0].items():
            result["%s/first_call.%s" % (name, k)] = v
        result[name + "/output"] = res.video
    result = {k: v.detach().to("cpu").contiguous() for k, v in result.items()}
    result = {k: (v if k == "prompt_input_ids" or k.endswith("timestep") else v.float()) for k, v in result.items()}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_file(result, str(out))
    return result
