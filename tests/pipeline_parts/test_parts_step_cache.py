"""The first-block step cache: off is exact, on skips the later blocks per window, never across windows."""
from typing import Dict, List, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.pipelines.void.denoise import denoise  # noqa: E402
from void_server.pipelines.void.parallel import Axis, ParallelPlan  # noqa: E402
from void_server.pipelines.void.step_cache import CacheStats, FirstBlockCache, attach  # noqa: E402


def _tiny_transformer(layers: int = 3) -> torch.nn.Module:
    from diffusers import CogVideoXTransformer3DModel

    from void_server.pipelines.void.tiny import TRANSFORMER_CONFIGS

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(**dict(TRANSFORMER_CONFIGS["tiny"], in_channels=48, num_layers=layers)).eval()


def _problem(t_lat: int = 6):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn((1, t_lat, 16, 8, 12), generator=gen)
    inpaint = torch.randn((1, t_lat, 32, 8, 12), generator=gen)
    prompt = torch.randn((1, 7, 32), generator=gen)
    negative = torch.randn((1, 7, 32), generator=gen)
    return latents, inpaint, prompt, negative


def _run(transformer, guidance: float = 1.0, steps: int = 4, **kw) -> torch.Tensor:
    from diffusers import DDIMScheduler

    latents, inpaint, prompt, negative = _problem()
    # window 4, overlap 2 over 6 latent frames: two windows of equal length (0-4, 2-6), so a shared cache would fit.
    return denoise(transformer, DDIMScheduler(), latents, inpaint, prompt, negative if guidance > 1 else None,
                   guidance, steps, window=4, overlap=2, **kw)


def _count_calls(transformer) -> List[int]:
    counts = [0] * len(transformer.transformer_blocks)
    for i, block in enumerate(transformer.transformer_blocks):
        block.register_forward_pre_hook(lambda m, a, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_cache_that_never_hits_gives_exactly_the_uncached_output(guidance):
    transformer = _tiny_transformer()
    plain = _run(transformer, guidance)
    stats = CacheStats(1e-30)
    cached = _run(transformer, guidance, step_cache=1e-30, cache_stats=stats)
    assert torch.equal(plain, cached)
    assert (stats.hits, stats.calls) == (0, 4 * 2)
    assert torch.equal(_run(transformer, guidance, step_cache=0.0), plain)
    assert len(transformer.transformer_blocks) == 3  # the block list is put back


def test_a_large_threshold_skips_later_blocks_and_each_window_keeps_its_own_cache():
    transformer = _tiny_transformer()
    plain = _run(transformer)
    counts = _count_calls(transformer)
    stats = CacheStats(1e9)
    cached = _run(transformer, step_cache=1e9, cache_stats=stats)
    # Step 1 computes every block once per window (no earlier residual to compare with); steps 2-4 reuse.
    assert counts == [8, 2, 2]
    assert (stats.hits, stats.calls) == (6, 8)
    assert stats.hit_rate == pytest.approx(0.75)
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)


class _AddBlock(torch.nn.Module):
    """A block adding `delta` to the video tokens and 1 to the text tokens; counts its calls."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta, self.calls = delta, 0

    def forward(self, hidden_states, encoder_hidden_states, **kw) -> Tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return hidden_states + self.delta, encoder_hidden_states + 1


def test_the_decision_compares_with_the_last_fully_computed_residual():
    head, tail = _AddBlock(1.0), _AddBlock(10.0)
    cache = FirstBlockCache(0.15)
    x, text = torch.zeros(1, 4, 2), torch.zeros(1, 3, 2)
    outputs: Dict[float, torch.Tensor] = {}
    for delta in (1.0, 1.1, 1.2, 1.25):  # relative changes against the computed 1.0: 0.1, 0.2, (after refresh) 0.04
        head.delta = delta
        with cache.context("w0"):
            outputs[delta] = cache.run([head, tail], x, text)[0]
    assert tail.calls == 2  # 1.0 (first), 1.2 (change 0.2 > 0.15); 1.1 and 1.25 reuse
    assert cache.stats.hits == 2
    torch.testing.assert_close(outputs[1.1], torch.full_like(x, 11.1))  # head output + the cached tail residual
    torch.testing.assert_close(outputs[1.25], torch.full_like(x, 11.25))


def test_misuse_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        FirstBlockCache(-0.1)
    with pytest.raises(ValueError, match=">= 0"):
        FirstBlockCache(float("nan"))
    cache = FirstBlockCache(0.1)
    with pytest.raises(RuntimeError, match="outside a context"):
        cache.run([_AddBlock(1.0), _AddBlock(1.0)], torch.zeros(1, 2, 2), torch.zeros(1, 1, 2))
    transformer = _tiny_transformer(layers=2)
    sequence = ParallelPlan(sequence=Axis(rank=0, size=2))
    with pytest.raises(ValueError, match="sequence parallelism"):
        _run(transformer, steps=1, step_cache=0.1, parallel=sequence)
    with pytest.raises(ValueError, match=">= 0"):
        _run(transformer, steps=1, step_cache=-1.0)


def test_attach_puts_the_blocks_back_after_an_error():
    transformer = _tiny_transformer(layers=2)
    blocks = transformer.transformer_blocks
    with pytest.raises(KeyError):
        with attach(transformer, FirstBlockCache(0.1)):
            assert len(transformer.transformer_blocks) == 1
            raise KeyError("boom")
    assert transformer.transformer_blocks is blocks
