"""A model's weights kept in (pinned) host memory and lent to the GPU while it runs: the offload modes' mover.

`module.to("cuda")` / `module.to("cpu")` copies from pageable memory (~1.5 GB/s here: ~7 s per 10.6 GB pass
transformer, docs/performance.md) and copies every weight back on the way out. Inference never changes a weight, so
the host copy can stay where it is: `HostCopy` pins it once, `lend(device)` points every parameter and buffer at a
device copy made from the pinned memory (asynchronous, at full PCIe rate), and `restore()` points them back at the
host copy, dropping the device copies; nothing is copied back.

The host copy is one buffer of exactly the weights' size, page-locked in place (`cudaHostRegister`), every tensor a
view of it. `tensor.pin_memory()` per tensor goes through torch's caching host allocator, which rounds each block
up to a power of two: T5-XXL's 4096x4096 bf16 matrices (32 MiB) take 64 MiB blocks each, so its 9.5 GB pinned as
~16 GB, all of it page-locked at a server's start beside the VAE's warm-up.

Frames crossing the bus take page-locked memory too (`pinned_empty`, `to_host`): from or into pageable memory the
driver copies through a staging buffer of its own, ~1 GB/s for pass 1's frames on an H100 (251 MB in 237 ms,
against 5 ms into page-locked memory; docs/performance.md, seventeenth session).
"""
from __future__ import annotations

import ctypes
import logging
import weakref
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

log = logging.getLogger(__name__)

ALIGN = 64  # bytes: every view starts on a boundary any dtype (and a DMA engine) is happy with


def pinned_empty(shape: Sequence[int], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """An uninitialised page-locked host tensor (torch's caching host allocator: reused job after job), or None where
    page-locked memory is refused (a container's limits): the caller then copies through pageable memory."""
    try:
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)
    except RuntimeError:
        return None


def to_host(t: torch.Tensor) -> torch.Tensor:
    """`t` on the host, contiguous: a GPU tensor copied into page-locked memory where it can be (the copy done when
    this returns), anything else as `.cpu()` gives it."""
    if t.is_cuda:
        host = pinned_empty(t.shape, t.dtype)
        if host is not None:
            return host.copy_(t)
    return t.cpu().contiguous()


def _layout(tensors: List[torch.Tensor]) -> Tuple[List[int], int]:
    """Each tensor's byte offset in the shared buffer, and the buffer's size."""
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    return offsets, total


def _cuda_get_last_error() -> Optional[Callable[[], int]]:
    """The CUDA runtime's cudaGetLastError (torch does not expose it), from the libcudart torch has loaded."""
    major = (torch.version.cuda or "").split(".")[0]
    try:
        return ctypes.CDLL("libcudart.so.%s" % major).cudaGetLastError  # the loaded one: dlopen matches its soname
    except (OSError, AttributeError):
        return None


def _page_lock(array: np.ndarray) -> Optional[str]:
    """Page-lock `array`'s memory for the GPU's copy engines, unlocked again when the array is freed; None if done,
    else why not."""
    clear_error = _cuda_get_last_error()
    if clear_error is None:
        # A failed registration leaves its error for torch's next kernel-launch check to raise: only try where it
        # can be cleared.
        return "libcudart.so not found to clear a failed registration's error"
    cudart = torch.cuda.cudart()
    ptr = array.ctypes.data
    err = int(cudart.cudaHostRegister(ptr, array.nbytes, 0))
    if err != 0:
        clear_error()
        return "cudaHostRegister failed with CUDA error %d" % err
    finalizer = weakref.finalize(array, cudart.cudaHostUnregister, ptr)
    finalizer.atexit = False  # at exit the process's memory goes anyway, perhaps after CUDA's teardown
    return None


def packed_homes(tensors: List[torch.Tensor], pin: bool) -> Tuple[List[torch.Tensor], bool]:
    """Host copies of `tensors` as views of one buffer (page-locked if `pin` and possible); returns them and whether
    the buffer is page-locked."""
    offsets, total = _layout(tensors)
    array = np.empty(total + ALIGN, np.uint8)  # numpy aligns to 16 bytes: room to start on ALIGN
    start = -array.ctypes.data % ALIGN
    why = _page_lock(array) if pin else "not asked"
    if pin and why is not None:
        log.warning("cannot page-lock %.1f GB of weights in host memory (%s); moving them from pageable memory",
                    total / 1e9, why)
    buffer = torch.from_numpy(array)  # keeps `array` alive for as long as any view of it lives
    homes = []
    for t, offset in zip(tensors, offsets):
        nbytes = t.numel() * t.element_size()
        home = buffer[start + offset:start + offset + nbytes].view(t.dtype).view(t.shape)
        home.copy_(t.data)
        homes.append(home)
    return homes, why is None


class HostCopy:
    """The host-side home of one module's tensors (parameters and buffers, shared ones once)."""

    def __init__(self, module: torch.nn.Module, pin: bool = True) -> None:
        # No reference to `module` itself: Placement keeps these in a WeakKeyDictionary keyed by the module, which
        # a value holding its key would keep alive for ever.
        tensors: List[torch.Tensor] = []
        seen = set()
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
        self._homes, self.pinned = packed_homes(tensors, pin and torch.cuda.is_available())
        self._pairs: List[Tuple[torch.Tensor, torch.Tensor]] = list(zip(tensors, self._homes))
        self.restore()

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self._homes)

    def lend(self, device: torch.device) -> None:
        """Every tensor of the module on `device` (copies; the host copy stays)."""
        for t, home in self._pairs:
            t.data = home.to(device, non_blocking=self.pinned, copy=True)

    def restore(self) -> None:
        """Every tensor back on its host copy; the device copies are dropped (their memory freed in stream order)."""
        for t, home in self._pairs:
            t.data = home
