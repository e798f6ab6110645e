"""The rank group's second GPU working for rank 0 (issue 9): a copy of the VAE there, in the server's process.

While rank 0 works alone (the VAE, the pass-2 noise, the merge) the other ranks' GPUs wait, and what rank 0 does
alone is what keeps a 2-GPU job from 1.8x (docs/performance.md, "One job on 2 GPUs"). The second GPU takes two
parts of the VAE's work, both exact:
- a later pass's mask latents, encoded on a thread beside the first pass's mask and plate on the first GPU;
- the second part of every decode (decode.decode_latents' `pipelined`): the first GPU runs the decoder's stages up
  to the cut for chunk k while this one runs the rest for chunk k - 1.
RAFT's flows run there too (pipeline._raft_device). The ranks' own processes hold only transformers; this copy
costs the second GPU the VAE's 0.4 GB and its decode's activations.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Set, Tuple, Union

import torch

from ...frame_pool import on_thread
from ..decode import split_after
from ..loading import VoidModels
from ..passes import PassConfig, pass_mask_latents

# The last decoder stage the first GPU runs (decode.decoder_stages' names): the fastest cut on two H200s with the
# full-size VAE, 1.30 -> 0.80 s a decode of 22 latents (bench/bench_decode_split.py, docs/performance.md).
DEFAULT_CUT = "up_block_2.upsample"


class SecondVae:
    """The VAE on `device` (the rank group's second GPU), loaded and compiled at first use as `models.vae` is."""

    def __init__(self, models: VoidModels, device: torch.device, cut: Union[int, str] = DEFAULT_CUT) -> None:
        """ValueError where the model dir's decoder has no such cut (checked on its config, no weights read)."""
        self.models, self.device, self.cut = models, device, cut
        split_after(_decoder_skeleton(models), cut)
        self._vae = None
        self._compiled_shapes: Set[Tuple[int, ...]] = set()

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
        """passes.pass_mask_latents encoded here, on a thread of its own; the latents on the models' device.
        The first encode of a shape runs on the caller's thread: it compiles (or loads) the encoder's graphs, and
        inductor's compiling is not thread-safe (beside the caller's own compiling it failed on two GPUs)."""
        vae = self.vae  # loaded on the caller's thread: never twice
        if tuple(mask.shape) not in self._compiled_shapes:
            done: "Future[torch.Tensor]" = Future()
            done.set_result(self._encode_mask(vae, cfg, mask))
            self._compiled_shapes.add(tuple(mask.shape))
            return done
        return on_thread("void-mask-%s" % cfg.index, self._encode_mask, vae, cfg, mask)

    @torch.no_grad()  # grad mode is per thread: the decorator sets it on this one
    def _encode_mask(self, vae, cfg: PassConfig, mask: torch.Tensor) -> torch.Tensor:
        return pass_mask_latents(vae, cfg, mask).to(self.models.device)

    def describe(self) -> dict:
        return {"second_vae": str(self.device), "decode_cut": self.cut}


def _decoder_skeleton(models: VoidModels) -> torch.nn.Module:
    """The model dir's VAE decoder built from its config on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX

    with init_empty_weights():
        return AutoencoderKLCogVideoX.from_config(AutoencoderKLCogVideoX.load_config(models.layout.base, subfolder="vae")).decoder
