"""The rank group's second GPU working for rank 0 (issue 9): a copy of the VAE there, in the server's process.

While rank 0 works alone (the VAE, the pass-2 noise, the merge) the other ranks' GPUs wait, and what rank 0 does
alone is what keeps a 2-GPU job from 1.8x (docs/performance.md, "One job on 2 GPUs"). The second GPU takes three
parts of the VAE's work, all exact:
- pass 2's mask latents, encoded while rank 0 prepares the plate;
- the plate's latents, encoded while rank 0 encodes pass 1's mask;
- the second part of every decode (decode.decode_latents' `pipelined`): the first GPU runs the decoder's stages up
  to the cut for chunk k while this one runs the rest for chunk k - 1.
The encodes run one after another on a worker thread of this object's. RAFT's flows run on that GPU too
(pipeline._raft_device). The ranks' own processes hold only transformers; this copy costs the second GPU the
VAE's 0.4 GB and its decode's activations.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional, Set, Tuple, TypeVar, Union

import torch

from ..conditioning import encode_plate
from ..decode import decoder_stages, split_after
from ..loading import VoidModels, vae_skeleton
from ..passes import PassConfig, pass_mask_latents

# The last decoder stage the first GPU runs (decode.decoder_stages' names): the fastest cut on two H200s with the
# full-size VAE, 1.30 -> 0.80 s a decode of 22 latents (bench/bench_decode_split.py, docs/performance.md).
DEFAULT_CUT = "up_block_2.upsample"

T = TypeVar("T")


class SecondVae:
    """The VAE on `device` (the rank group's second GPU), loaded and compiled at first use as `models.vae` is."""

    def __init__(self, models: VoidModels, device: torch.device, cut: Union[int, str] = DEFAULT_CUT) -> None:
        """ValueError where the model dir's decoder has no such cut (checked on its config, no weights read)."""
        self.models, self.device, self.cut = models, device, cut
        split_after(decoder_stages(vae_skeleton(models.layout).decoder), cut)
        self._vae = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="void-second-vae")
        self._seen: Set[Tuple[object, ...]] = set()

    @property
    def vae(self):
        if self._vae is None:
            self._vae = self.models.vae_copy(self.device)
        return self._vae

    @property
    def decode_plan(self) -> Tuple[object, Union[int, str]]:
        """decode.decode_latents' `pipelined` argument."""
        return self.vae, self.cut

    def encode_mask(self, cfg: PassConfig, mask: torch.Tensor) -> "Future[torch.Tensor]":
        """passes.pass_mask_latents encoded here; the latents on the models' device."""
        return self._submit(("mask", tuple(mask.shape)), lambda vae: pass_mask_latents(vae, cfg, mask))

    def encode_plate(self, video01: torch.Tensor, seed: int,
                     augment_noise: Optional[Callable[[], torch.Tensor]] = None) -> "Future[torch.Tensor]":
        """conditioning.encode_plate's latents, encoded here; on the models' device."""
        return self._submit(("plate", tuple(video01.shape)), lambda vae: encode_plate(
            vae, video01, self.models.add_noise, seed, augment_noise)[0])

    def _submit(self, key: Tuple[object, ...], encode: Callable[[object], torch.Tensor]) -> "Future[torch.Tensor]":
        """`encode(vae)` on the worker, its result moved to the models' device. A call of a kind and shape not seen
        before is waited for: it compiles (or loads) the encoder's graphs, and inductor's compiling is not
        thread-safe (beside the caller's own it failed on two GPUs), so nothing else may compile meanwhile."""
        vae = self.vae  # loaded on the caller's thread: never twice
        future = self._worker.submit(_no_grad(lambda: encode(vae).to(self.models.device)))
        if key not in self._seen:
            future.result()
            self._seen.add(key)
        return future

    def close(self) -> None:
        """Stop the worker and let the VAE's memory on the second GPU go (the pipeline is being closed)."""
        self._worker.shutdown(wait=True)
        self._vae = None

    def describe(self) -> dict:
        return {"second_vae": str(self.device), "decode_cut": self.cut}


def _no_grad(fn: Callable[[], T]) -> Callable[[], T]:
    """`fn` under no_grad on whichever thread runs it (grad mode is per thread)."""
    def run() -> T:
        with torch.no_grad():
            return fn()
    return run
