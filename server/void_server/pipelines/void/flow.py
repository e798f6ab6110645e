"""Optical flow for the pass-2 noise: torchvision RAFT-large run the way the reference runs it
(docs/void-reference-details.md §4.3): inputs in [-1, 1], 12 flow updates, fp32, last prediction, forward flow of
consecutive frames only. Weights come from a local file; nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from pathlib import Path
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F

from ..base import PipelineUnavailable

RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"  # torchvision's Raft_Large_Weights.C_T_SKHT_V2
FLOW_UPDATES = 12
MIN_SIDE = 128  # RAFT's 1/8-resolution features must survive its 4-level correlation pyramid


def load_raft(path: Optional[Path], device: Union[str, torch.device]) -> torch.nn.Module:
    """RAFT-large with the C_T_SKHT_V2 weights from `path` (the .pth file, or a folder holding it).
    `path=None` gives random weights: for tests only."""
    from torchvision.models.optical_flow import raft_large

    model = raft_large(weights=None, progress=False)
    if path is not None:
        path = Path(path)
        if path.is_dir():
            path = path / RAFT_FILE
        if not path.is_file():
            raise PipelineUnavailable(
                "RAFT weights not found at %s: put torchvision's %s (Raft_Large_Weights.C_T_SKHT_V2) in the model "
                "directory (`void-server download` fetches it)" % (path, RAFT_FILE)
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval().to(device)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def iter_flow(raft: torch.nn.Module, frames01: torch.Tensor, batch: int = 4) -> Iterator[torch.Tensor]:
    """Yield the (2, H, W) forward flow of each consecutive pair of (T, 3, H, W) frames in [0, 1], in order,
    `batch` pairs per RAFT call, so a long clip's flow never sits in memory whole."""
    if frames01.ndim != 4 or frames01.shape[1] != 3:
        raise ValueError("frames must be (T, 3, H, W), got %s" % (tuple(frames01.shape),))
    T, _, H, W = frames01.shape
    h8, w8 = H // 8 * 8, W // 8 * 8
    if min(h8, w8) < MIN_SIDE:
        raise ValueError("frames of %dx%d are too small for RAFT (its correlation pyramid needs at least %dx%d)"
                         % (W, H, MIN_SIDE, MIN_SIDE))
    dev = _device(raft)
    for start in range(0, T - 1, batch):
        chunk = frames01[start:min(start + batch + 1, T)].to(dev, torch.float32)
        if (h8, w8) != (H, W):  # RAFT needs multiples of 8: floor, as the reference does
            chunk = F.interpolate(chunk, size=(h8, w8), mode="bilinear", align_corners=False, antialias=True)
        chunk = chunk * 2 - 1
        flow = raft(chunk[:-1], chunk[1:], num_flow_updates=FLOW_UPDATES)[-1].float()
        if (h8, w8) != (H, W):
            # Back to the frame size. Unlike the reference we also rescale the values to the new pixel size
            # (the reference's own 240x360 never needs this resize, so parity is unaffected).
            flow = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([W / w8, H / h8], device=dev)[None, :, None, None]
        yield from flow


@torch.no_grad()
def iter_flow_ahead(raft: torch.nn.Module, frames01: torch.Tensor, to_device: Optional[torch.device] = None,
                    ahead: int = 8, batch: int = 4) -> Iterator[torch.Tensor]:
    """`iter_flow`'s flows, computed on a thread (and, on a GPU, RAFT's own CUDA stream) up to `ahead` flows ahead
    of the consumer, so RAFT runs while the consumer warps noise with the flows it already has. `to_device` is
    where the consumer wants them (a RAFT on another GPU hands them over there). The values are iter_flow's: the
    same kernels run, only their overlap with the consumer changes."""
    dev = _device(raft)
    to_device = torch.device(to_device) if to_device is not None else dev
    side = torch.cuda.Stream(dev) if dev.type == "cuda" else None
    if side is not None:
        side.wait_stream(torch.cuda.current_stream(dev))  # whatever the caller queued before stays before
    out: "queue.Queue[object]" = queue.Queue(maxsize=max(1, ahead))
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            with torch.no_grad(), (torch.cuda.stream(side) if side is not None else contextlib.nullcontext()):
                for flow in iter_flow(raft, frames01, batch):
                    flow = flow.to(to_device)
                    if side is not None:
                        side.synchronize()  # the consumer gets finished values, whatever stream it reads them on
                    if not put(flow):
                        return
            put(done)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    worker = threading.Thread(target=produce, name="void-raft", daemon=True)
    worker.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            if side is not None and item.device == dev:
                # Allocated on RAFT's stream: keep its memory from being reused there while the consumer's stream
                # may still read it.
                item.record_stream(torch.cuda.current_stream(dev))
            yield item
    finally:
        stop.set()
        worker.join()


def compute_flow(raft: torch.nn.Module, frames01: torch.Tensor) -> torch.Tensor:
    """(T, 3, H, W) frames in [0, 1] -> (T-1, 2, H, W) forward flow (dx, dy in pixels) of consecutive pairs."""
    flows = list(iter_flow(raft, frames01))
    if not flows:
        return torch.zeros((0, 2) + tuple(frames01.shape[-2:]), device=_device(raft))
    return torch.stack(flows)
