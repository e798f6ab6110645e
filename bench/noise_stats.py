"""Reference vs aligned pass-2 noise, measured on a sample clip (CPU, reduced warp resolution).

    .venv/bin/python bench/noise_stats.py [--sample DIR] [--raft FILE] [--warp-factor 2] [--seed 0]

The clip stands in for a pass-1 result: its frames are squashed to 384x672 as the model sees them. Both noises
go to the (22, 16, 48, 84) latent grid: the reference's through its own latent step (frames linspace(0, 71, 22),
bilinear 60x90 -> 48x84); ours directly. Without --raft a stand-in flow (OpenCV DIS) replaces RAFT: no RAFT
weights are needed, and the statistics below depend on the resampling, not on the flow model's fine detail.
`--warp-factor 2` keeps CPU time short: the reference's noise still comes out at 60x90 (state 480x720 instead of
1920x2880). Results go to docs/noise.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from void_server.pipelines.void.flow import load_raft  # noqa: E402
from void_server.pipelines.void.latent_noise import reference_noise_to_latents  # noqa: E402
from void_server.pipelines.void.warped_noise import aligned_warped_noise, reference_warped_noise  # noqa: E402

MODEL_HW, LATENT_T, LATENT_HW = (384, 672), 22, (48, 84)


class DisFlow(torch.nn.Module):
    """RAFT's calling convention over OpenCV DIS, for measuring without RAFT weights."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # gives the module a device
        self.dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def forward(self, a: torch.Tensor, b: torch.Tensor, num_flow_updates: int = 12):
        def grey(x):
            rgb = ((x.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

        flows = [torch.from_numpy(self.dis.calc(grey(x), grey(y), None)).permute(2, 0, 1) for x, y in zip(a, b)]
        return [torch.stack(flows)]


def read_clip(path: Path) -> torch.Tensor:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(cv2.resize(bgr, MODEL_HW[::-1], interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    if not frames:
        raise SystemExit("no frames in %s" % path)
    return torch.stack(frames)


def lag_corr(x: np.ndarray, axis: int) -> float:
    a = np.moveaxis(x, axis, 0)
    return float(np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1])


def stats(latents: np.ndarray) -> dict:
    return {
        "shape": list(latents.shape),
        "mean": float(latents.mean()),
        "std": float(latents.std()),
        "corr_x_lag1": lag_corr(latents, 3),
        "corr_y_lag1": lag_corr(latents, 2),
        "corr_t_lag1": lag_corr(latents, 0),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "void-samples" / "BigBen")
    p.add_argument("--raft", type=Path, default=None, help="RAFT weights file; default: OpenCV DIS stand-in")
    p.add_argument("--warp-factor", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    video = read_clip(args.sample / "input_video.mp4")
    flow = load_raft(args.raft, "cpu") if args.raft else DisFlow()
    g = torch.Generator().manual_seed(args.seed)
    raw = reference_warped_noise(video, flow, g, warp_factor=args.warp_factor)  # 60x90 at any warp factor
    ref = reference_noise_to_latents(raw, LATENT_T, *LATENT_HW)[0].numpy()
    ali = aligned_warped_noise(video, flow, LATENT_T, LATENT_HW, torch.Generator().manual_seed(args.seed),
                               pool=4 * args.warp_factor, warp_factor=args.warp_factor).numpy()  # flow at 192x336
    out = {
        "sample": args.sample.name,
        "frames": len(video),
        "flow": "RAFT" if args.raft else "OpenCV DIS stand-in",
        "warp_factor": args.warp_factor,
        "reference_raw_60x90": {"shape": list(raw.shape), "std": float(raw.std())},
        "reference_latents": stats(ref),
        "aligned_latents": stats(ali),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
