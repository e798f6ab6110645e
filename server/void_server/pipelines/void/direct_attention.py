"""diffusers' `Attention` calling its processor directly, so a CogVideoX block can be precompiled (precompiled.py).

`Attention.forward` reads its processor's signature (`inspect.signature`) to sort its keyword arguments, and dynamo
guards that on the identity of the processor's code object, which a function saved to disk cannot keep ("ID_MATCH
guard cannot be serialized"). A block whose `attn1` is a `DirectAttention` makes the same processor call for the
keywords a CogVideoX block passes, with nothing to inspect. A class of a module of its own, importable by name: a
saved function refers to it so, which a class made inside a function or a forward set on the instance would not
allow.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from diffusers.models.attention_processor import Attention


class DirectAttention(Attention):
    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        return self.processor(self, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)


def make_direct(attn: torch.nn.Module) -> bool:
    """Turn a plain `Attention` into a `DirectAttention` in place (same weights, same processor); False, changing
    nothing, for any other class."""
    if type(attn) is not Attention:
        return False
    attn.__class__ = DirectAttention
    return True
