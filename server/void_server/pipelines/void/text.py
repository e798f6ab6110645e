"""T5 prompt embedding, as CogVideoX does it: 226 tokens, padded and truncated, no attention mask."""
from __future__ import annotations

from typing import Tuple

import torch

from .loading import execution_device

MAX_TEXT_TOKENS = 226


def tokenize(tokenizer, prompt: str, max_length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
    """prompt -> (1, max_length) int64 token ids (special tokens added, padded to max_length)."""
    ids = tokenizer(
        [prompt],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    ).input_ids
    return ids


@torch.no_grad()
def encode_prompt(
    tokenizer,
    text_encoder,
    prompt: str,
    device: torch.device,
    dtype: torch.dtype,
    max_length: int = MAX_TEXT_TOKENS,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """prompt -> (token ids (1, L), embeddings (1, L, D) in `dtype` on `device`).

    CogVideoX's T5 is run without an attention mask, so pad tokens are embedded too (the model was trained so).
    """
    ids = tokenize(tokenizer, prompt, max_length)
    embeds = text_encoder(ids.to(execution_device(text_encoder)))[0]
    return ids, embeds.to(device=device, dtype=dtype)
