"""Optical flow for the pass-2 noise: torchvision RAFT-large run the way the reference runs it
(docs/void-reference-details.md §4.3): inputs in [-1, 1], 12 flow updates, fp32, last prediction, forward flow of
consecutive frames only. Weights come from a local file; nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import weakref
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..base import PipelineUnavailable, error_line

log = logging.getLogger(__name__)

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


@dataclasses.dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    first: torch.Tensor  # the inputs' and output's fixed places: a replay reads and writes only these
    second: torch.Tensor
    flow: torch.Tensor


CUDA_GRAPHS = True  # raft_flow's default (benches switch it off to compare)
# Per RAFT module, per (shape, dtype, device) of its inputs; weakly held, so a dropped RAFT takes its graphs along.
_GRAPHS: "weakref.WeakKeyDictionary[torch.nn.Module, Dict[Tuple[object, ...], Optional[_Graph]]]" = (
    weakref.WeakKeyDictionary())
_GRAPHS_LOCK = threading.Lock()


@torch.no_grad()
def raft_flow(raft: torch.nn.Module, first: torch.Tensor, second: torch.Tensor,
              graphs: Optional[bool] = None) -> torch.Tensor:
    """RAFT's last flow prediction (B, 2, H, W) for image pairs (first[i], second[i]) in [-1, 1].

    On a GPU its forward is replayed as a CUDA graph, one per input shape, captured on first use: RAFT-large's
    12 update iterations launch ~1,300 small kernels a call, and issued from Python they took 2-3x the GPU's time
    (84 ms against ~31 ms a batch of 4 pairs beside the noise warp, H100, docs/performance.md), so the warp waited
    on the flows. A replay runs the same kernels on the same values: the same flow. The graph reads RAFT's weights
    where they were at capture (load_state_dict copies into them in place, which keeps it right; moving the module
    does not). `graphs` False calls it as it is; None: `CUDA_GRAPHS`."""
    if not ((CUDA_GRAPHS if graphs is None else graphs) and first.is_cuda):
        return raft(first, second, num_flow_updates=FLOW_UPDATES)[-1]
    with _GRAPHS_LOCK:  # one capture at a time, and one caller between a replay's inputs and its output
        g = _graph_for(raft, first, second)
        if g is None:  # it could not be captured: as it is
            return raft(first, second, num_flow_updates=FLOW_UPDATES)[-1]
        # On RAFT's device (a rank group's second GPU): a replay goes to the current device's current stream.
        with torch.cuda.device(first.device):
            g.first.copy_(first)
            g.second.copy_(second)
            g.graph.replay()
            flow = g.flow.clone()
            # The next caller (another job's thread, on another stream) overwrites the inputs: this one must be done.
            torch.cuda.current_stream(first.device).synchronize()
    return flow


def _graph_for(raft: torch.nn.Module, first: torch.Tensor, second: torch.Tensor) -> Optional[_Graph]:
    """The graph for these inputs' shape, captured now if it is new; None where the capture failed (logged once,
    then that shape runs as it is: the flows stay right, only slower)."""
    made = _GRAPHS.setdefault(raft, {})
    key = (tuple(first.shape), first.dtype, first.device)
    if key not in made:
        try:
            made[key] = _capture(raft, first, second)
        except Exception as exc:  # noqa: BLE001 - a torch or torchvision this capture does not suit: keep working
            log.warning("RAFT's CUDA graph for inputs %s on %s could not be captured (%s); it runs as it is",
                        key[0], key[2], error_line(exc))
            made[key] = None
    return made[key]


def _capture(raft: torch.nn.Module, first: torch.Tensor, second: torch.Tensor) -> _Graph:
    dev = first.device
    with torch.cuda.device(dev):
        a, b = first.clone(), second.clone()
        for _ in range(2):  # eagerly first: cuDNN's and cuBLAS's handles and workspaces exist before the capture
            raft(a, b, num_flow_updates=FLOW_UPDATES)
        graph = torch.cuda.CUDAGraph()
        # A capture stream of RAFT's device (torch's default one is made once, on whichever device came first);
        # thread_local: the job's other threads may use the GPU meanwhile (RAFT runs beside the noise warp).
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(dev), capture_error_mode="thread_local"), \
                _ConstantsOn(dev):
            flow = raft(a, b, num_flow_updates=FLOW_UPDATES)[-1]
    return _Graph(graph, a, b, flow)


class _ConstantsOn(TorchFunctionMode):
    """torchvision's RAFT makes a few constants on the host at every call and copies them over (the coordinate
    grid, `torch.arange`; the lookup window's offsets, `torch.linspace`), which a CUDA graph cannot capture. While
    it is captured they are made on its device instead: the same small integers, computed there."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in (torch.arange, torch.linspace):
            kwargs["device"] = self.device
        return func(*args, **kwargs)


@torch.no_grad()
def warm_up_flow(raft: torch.nn.Module, frames: int, hw: Tuple[int, int], batch: int = 4) -> None:
    """Capture the CUDA graphs `iter_flow` replays for a clip of `frames` frames of `hw` (a multiple of 8): its
    full batches and its last one, so a job does not capture them (nothing to do off a GPU)."""
    dev = _device(raft)
    if dev.type != "cuda":
        return
    for n in sorted(set(batch_sizes(frames, batch))):
        x = torch.zeros((n, 3) + tuple(hw), device=dev)
        raft_flow(raft, x, x)


def batch_sizes(frames: int, batch: int = 4) -> List[int]:
    """How many pairs each of `iter_flow`'s RAFT calls takes for a clip of `frames` frames."""
    return [min(batch, frames - 1 - start) for start in range(0, frames - 1, batch)]


@torch.no_grad()
def iter_flow(raft: torch.nn.Module, frames01: torch.Tensor, batch: int = 4,
              graphs: Optional[bool] = None) -> Iterator[torch.Tensor]:
    """Yield the (2, H, W) forward flow of each consecutive pair of (T, 3, H, W) frames in [0, 1], in order,
    `batch` pairs per RAFT call, so a long clip's flow never sits in memory whole. `graphs`: `raft_flow`'s."""
    if frames01.ndim != 4 or frames01.shape[1] != 3:
        raise ValueError("frames must be (T, 3, H, W), got %s" % (tuple(frames01.shape),))
    T, _, H, W = frames01.shape
    h8, w8 = H // 8 * 8, W // 8 * 8
    if min(h8, w8) < MIN_SIDE:
        raise ValueError("frames of %dx%d are too small for RAFT (its correlation pyramid needs at least %dx%d)"
                         % (W, H, MIN_SIDE, MIN_SIDE))
    dev = _device(raft)
    start = 0
    for pairs in batch_sizes(T, batch):  # what warm_up_flow captures graphs for
        chunk = frames01[start:start + pairs + 1].to(dev, torch.float32)
        start += pairs
        if (h8, w8) != (H, W):  # RAFT needs multiples of 8: floor, as the reference does
            chunk = F.interpolate(chunk, size=(h8, w8), mode="bilinear", align_corners=False, antialias=True)
        chunk = chunk * 2 - 1
        flow = raft_flow(raft, chunk[:-1], chunk[1:], graphs).float()
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
