"""A model's weights kept in (pinned) host memory and lent to the GPU while it runs: the offload modes' mover.

`module.to("cuda")` / `module.to("cpu")` copies from pageable memory (~1.5 GB/s here: ~7 s per 10.6 GB pass
transformer, docs/performance.md) and copies every weight back on the way out. Inference never changes a weight, so
the host copy can stay where it is: `HostCopy` pins it once, `lend(device)` points every parameter and buffer at a
device copy made from the pinned memory (asynchronous, at full PCIe rate), and `restore()` points them back at the
host copy, dropping the device copies; nothing is copied back.
"""
from __future__ import annotations

import logging
from typing import List, Tuple

import torch

log = logging.getLogger(__name__)


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
        self.pinned = False
        if pin and torch.cuda.is_available():
            try:
                self._homes = [t.data.cpu().pin_memory() for t in tensors]
                self.pinned = True
            except RuntimeError as e:  # not enough page-locked memory: pageable copies still work, slower
                log.warning("cannot pin %s's weights in host memory (%s); moving them from pageable memory",
                            type(module).__name__, e)
                self._homes = [t.data.cpu() for t in tensors]
        else:
            self._homes = [t.data.cpu() for t in tensors]
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
