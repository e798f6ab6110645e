"""Ulysses sequence parallelism for diffusers' CogVideoX transformer (as xDiT does; diffusers 0.42 has no
context-parallel plan for CogVideoX).

Each rank of the sequence axis holds a contiguous shard of the video tokens through every block; the text tokens
are replicated. Everything in a CogVideoX block except attention is token-wise (AdaLN-zero norms, the
feed-forward), so it runs on the shard as it is. Attention needs every token: q, k and v of the shard go through
one all-to-all that trades heads for sequence (each rank then holds ALL video tokens for heads/P heads), RoPE and
SDPA run on the full sequence per head group, and a second all-to-all trades back, carrying the text tokens'
attention output to every rank too, so the text stream stays identical on every rank.

`sequence_parallel(transformer, axis)` installs the processor and two hooks (shard before the first block, gather
after the last) for the duration of a `with`, and restores the transformer afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Tuple

import torch

from .. import qk_norm_rope
from ..accel import ExactAttention, rope_video_tokens
from .plan import Axis


def shard_sizes(tokens: int, ranks: int) -> List[int]:
    """Contiguous shard lengths, the first `tokens % ranks` one longer (torch.tensor_split's rule)."""
    base, extra = divmod(tokens, ranks)
    return [base + (1 if r < extra else 0) for r in range(ranks)]


class _Shards:
    """The current forward's shard lengths, set by the pre-hook and read by every layer's processor."""

    def __init__(self, axis: Axis) -> None:
        self.axis = axis
        self.sizes: List[int] = []

    def start(self, tokens: int) -> Tuple[int, int]:
        self.sizes = shard_sizes(tokens, self.axis.size)
        if min(self.sizes) == 0:
            raise ValueError("%d video tokens cannot be split over %d ranks" % (tokens, self.axis.size))
        begin = sum(self.sizes[: self.axis.rank])
        return begin, begin + self.sizes[self.axis.rank]


class UlyssesAttnProcessor:
    """Same math as diffusers' CogVideoXAttnProcessor2_0, over a sharded video sequence. `attend` is the exact
    attention the transformer ran before (FlashAttention-4 where it had it), else SDPA.

    `chunks` > 1 splits each rank's heads into that many groups, each exchanged, attended and exchanged back on its
    own: the same per-head math (exact), but a group's exchange no longer waits for the other groups' attention, so
    a compiler that reorders collectives (inductor's `reorder_for_compute_comm_overlap`) can overlap them. Not yet
    measured on GPUs (docs/performance.md, twelfth session): 1, one exchange each way, stays the default."""

    def __init__(self, shards: _Shards, attend: Optional[ExactAttention] = None, chunks: int = 1) -> None:
        if chunks < 1:
            raise ValueError("head chunks must be at least 1, not %d" % chunks)
        self.shards = shards
        self.attend = attend or ExactAttention()
        self.chunks = int(chunks)
        qk_norm_rope.qk_norm_rope_op()  # registered now: dynamo cannot trace an op's registration

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        image_rotary_emb: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise NotImplementedError("CogVideoX runs without an attention mask")
        axis, sizes = self.shards.axis, self.shards.sizes
        p, heads, c = axis.size, attn.heads, self.chunks
        if heads % (p * c):
            raise ValueError("%d attention heads cannot be split over %d sequence-parallel ranks in %d chunks"
                             % (heads, p, c))
        hp, hc = heads // p, heads // (p * c)  # heads per rank, per chunk
        text_len, local = encoder_hidden_states.size(1), hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        b = x.shape[0]
        qkv = torch.stack([attn.to_q(x), attn.to_k(x), attn.to_v(x)]).view(3, b, text_len + local, heads, -1)
        d = qkv.shape[-1]
        # LayerNorm over head_dim is per token and head, so it may run before the exchange or after it; after, on
        # the exchanged heads, together with RoPE where `qk_norm_rope` computes both (one pass over q and k).
        fused = qk_norm_rope.applies(attn, image_rotary_emb)
        if not fused:
            q, k, v = qkv.unbind(0)
            q = attn.norm_q(q) if attn.norm_q is not None else q
            k = attn.norm_k(k) if attn.norm_k is not None else k
            qkv = torch.stack([q, k, v])
        text, video = qkv[:, :, :text_len], qkv[:, :, text_len:]
        starts = [sum(sizes[:j]) for j in range(p)]

        def group(j: int, m: int) -> slice:  # rank j's heads of chunk m
            return slice(j * hp + m * hc, j * hp + (m + 1) * hc)

        # heads -> sequence: rank j gets this shard's tokens for its heads of each chunk. Every chunk's exchange is
        # issued before any attention, so chunk m + 1's can run beside chunk m's attention where the compiler waits
        # for it only at its first use (inductor's default order waited earlier in a CPU dump: docs/performance.md).
        exchanged = [axis.all_to_all([video[..., group(j, m), :].contiguous() for j in range(p)],
                                     [(3, b, n, hc, d) for n in sizes]) for m in range(c)]
        backs = []
        for m, parts in enumerate(exchanged):
            full = torch.cat([text[..., group(axis.rank, m), :], torch.cat(parts, dim=2)], dim=2)  # (3, b, L+S, hc, d)
            if fused:
                q, k = qk_norm_rope.apply(attn, full[0].flatten(-2), full[1].flatten(-2), hc, text_len,
                                          image_rotary_emb)
                v = full[2].transpose(1, 2)
            else:
                q, k, v = full.transpose(2, 3).unbind(0)  # (b, hc, L+S, d)
                if image_rotary_emb is not None:
                    q, k = rope_video_tokens(q, k, text_len, image_rotary_emb, not attn.is_cross_attention)
            out = self.attend(q, k, v)  # (b, L+S, hc, d)
            # sequence -> heads: rank j gets the text tokens and its shard of the video tokens, for these heads.
            # The text rides along in the one exchange (every rank needs every head of it) instead of an
            # all-gather of its own: one collective fewer per block.
            text_out = out[:, :text_len]
            backs.append(axis.all_to_all([torch.cat([text_out, out[:, text_len + s:text_len + s + n]], dim=1)
                                          for s, n in zip(starts, sizes)], [(b, text_len + local, hc, d)] * p))
        # every head in order: rank j's chunks 0..c-1 hold heads j*hp .. (j+1)*hp
        out = torch.cat([backs[m][j] for j in range(p) for m in range(c)], dim=2).reshape(b, text_len + local, heads * d)
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, text_len:], out[:, :text_len]


@contextlib.contextmanager
def sequence_parallel(transformer: torch.nn.Module, axis: Axis, chunks: int = 1) -> Iterator[torch.nn.Module]:
    """Run `transformer` sequence-parallel over `axis` inside the `with`; a no-op for a one-rank axis. `chunks`:
    UlyssesAttnProcessor's head groups."""
    if axis.size == 1:
        yield transformer
        return
    blocks = transformer.transformer_blocks
    shards = _Shards(axis)
    previous = [blk.attn1.processor for blk in blocks]
    processor = UlyssesAttnProcessor(shards, getattr(previous[0], "attend", None), chunks)

    def shard(_module, args, kwargs):
        hidden = kwargs["hidden_states"]
        begin, end = shards.start(hidden.shape[1])
        return args, dict(kwargs, hidden_states=hidden[:, begin:end])

    def gather(_module, _args, output):
        hidden, text = output
        return _gather(axis, hidden, shards.sizes), text

    hooks = [blocks[0].register_forward_pre_hook(shard, with_kwargs=True), blocks[-1].register_forward_hook(gather)]
    for blk in blocks:
        blk.attn1.set_processor(processor)
    try:
        yield transformer
    finally:
        for h in hooks:
            h.remove()
        for blk, proc in zip(blocks, previous):
            blk.attn1.set_processor(proc)


def _gather(axis: Axis, hidden: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """all_gather needs equal shapes: pad every shard to the longest, gather, trim."""
    longest = max(sizes)
    pad = hidden.new_zeros((hidden.shape[0], longest - hidden.shape[1]) + tuple(hidden.shape[2:]))
    gathered = axis.all_gather(torch.cat([hidden, pad], dim=1))
    return torch.cat([g[:, :n] for g, n in zip(gathered, sizes)], dim=1)
