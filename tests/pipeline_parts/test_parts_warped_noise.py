"""RAFT loading and flow, the reference noise maker and the aligned noise, on tiny clips with random-weight RAFT."""
import numpy as np
import pytest
import torch

from void_server.pipelines.base import PipelineUnavailable
from void_server.pipelines.void import flow as flow_module
from void_server.pipelines.void.flow import (RAFT_FILE, batch_sizes, compute_flow, iter_flow, iter_flow_ahead,
                                             load_raft, raft_flow)
from void_server.pipelines.void.warped_noise import (
    aligned_warped_noise,
    cover_and_crop,
    latent_frame_indices,
    reference_warped_noise,
    retime_indices,
)


@pytest.fixture(scope="module")
def raft():
    torch.manual_seed(0)
    return load_raft(None, "cpu")


def _moving_square(T, h, w):
    """A textured background with a bright square moving right by 3 px a frame, (T, 3, h, w) in [0, 1]."""
    rng = np.random.default_rng(0)
    bg = rng.random((3, h, w), dtype=np.float32) * 0.5
    frames = np.repeat(bg[None], T, axis=0)
    for t in range(T):
        frames[t, :, h // 3:h // 3 + h // 4, 10 + 3 * t:10 + 3 * t + w // 5] = 0.9
    return torch.from_numpy(frames)


def test_load_raft_from_a_state_dict_file(tmp_path, raft):
    path = tmp_path / RAFT_FILE
    torch.save(raft.state_dict(), path)
    for where in (path, tmp_path):  # the file, or the model folder holding it
        loaded = load_raft(where, "cpu")
        assert not loaded.training
        for (k, a), (_, b) in zip(raft.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), k
    with pytest.raises(PipelineUnavailable, match=RAFT_FILE):
        load_raft(tmp_path / "missing", "cpu")


def test_compute_flow_shape_on_a_size_not_multiple_of_8(raft):
    flow = compute_flow(raft, _moving_square(3, 130, 197))
    assert flow.shape == (2, 2, 130, 197) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
    with pytest.raises(ValueError, match="too small"):
        compute_flow(raft, torch.rand(2, 3, 64, 64))


def test_flow_ahead_gives_iter_flows_values_in_order(raft):
    frames = _moving_square(7, 128, 136)
    plain = list(iter_flow(raft, frames, batch=2))
    ahead = list(iter_flow_ahead(raft, frames, ahead=1, batch=2))
    assert len(ahead) == len(plain) == 6
    for a, b in zip(ahead, plain):
        assert torch.equal(a, b)


def test_flow_ahead_raises_rafts_error_and_stops_when_the_consumer_does(raft):
    import threading

    with pytest.raises(ValueError, match="too small for RAFT"):
        list(iter_flow_ahead(raft, torch.rand(3, 3, 64, 64)))
    flows = iter_flow_ahead(raft, _moving_square(9, 128, 128), ahead=1, batch=1)
    next(flows)
    flows.close()  # the consumer gives up (a cancelled job): the RAFT thread must end, not block on a full queue
    assert not [t for t in threading.enumerate() if t.name == "void-raft"]


def test_the_flow_warm_up_knows_every_batch_iter_flow_asks_raft_for(raft, monkeypatch):
    # The warm-up captures RAFT's CUDA graphs for these batch sizes: a size it missed would be captured mid-job.
    asked = []
    real = flow_module.raft_flow

    def recording(model, first, second, graphs=None):
        asked.append(first.shape[0])
        return real(model, first, second, graphs)

    monkeypatch.setattr(flow_module, "raft_flow", recording)
    for frames in (2, 5, 7, 10):
        del asked[:]
        list(iter_flow(raft, torch.rand(frames, 3, 128, 128), batch=4))
        assert asked == batch_sizes(frames, 4), frames
    assert sorted(set(batch_sizes(72, 4))) == [3, 4]  # the reference noise maker's 71 pairs


def test_while_rafts_graph_is_captured_its_host_constants_are_made_on_the_device(raft):
    # torchvision's RAFT builds its coordinate grid and lookup offsets on the host each call; a capture cannot copy
    # them over, so they are made where the graph runs: the same values, and only those two factories move.
    with flow_module._ConstantsOn(torch.device("meta")):
        assert torch.arange(3).device.type == "meta" and torch.linspace(-4, 4, 9, device="cpu").device.type == "meta"
        assert torch.zeros(2).device.type == "cpu"
    a, b = torch.rand(2, 3, 128, 128) * 2 - 1, torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad(), flow_module._ConstantsOn(torch.device("cpu")):
        inside = raft(a, b, num_flow_updates=2)[-1]
    with torch.no_grad():
        assert torch.equal(inside, raft(a, b, num_flow_updates=2)[-1])


def test_a_shape_whose_graph_cannot_be_captured_is_asked_once_then_runs_as_it_is(raft, monkeypatch, caplog):
    tries = []

    def failing(model, first, second):
        tries.append(tuple(first.shape))
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(flow_module, "_capture", failing)
    x = torch.zeros(2, 3, 128, 128)
    with caplog.at_level("WARNING"):
        assert flow_module._graph_for(raft, x, x) is None
        assert flow_module._graph_for(raft, x, x) is None
    assert tries == [(2, 3, 128, 128)]  # not captured again at every call
    assert "could not be captured (RuntimeError: operation not permitted" in caplog.text
    flow_module._GRAPHS.pop(raft)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_rafts_cuda_graph_gives_the_eager_flow_and_is_captured_once():
    torch.manual_seed(0)
    model = load_raft(None, "cuda")
    frames = (_moving_square(5, 128, 136).cuda() * 2 - 1)
    eager = raft_flow(model, frames[:-1], frames[1:], graphs=False)
    graphed = raft_flow(model, frames[:-1], frames[1:], graphs=True)
    again = raft_flow(model, frames[1:], frames[:-1], graphs=True)  # the same graph, other values
    assert torch.equal(graphed, eager)
    assert torch.equal(again, raft_flow(model, frames[1:], frames[:-1], graphs=False))
    assert len(flow_module._GRAPHS[model]) == 1
    # where a capture fails, that shape runs as it is: the same flow
    odd = frames[:3]
    flow_module._GRAPHS[model][(tuple(odd[:-1].shape), odd.dtype, odd.device)] = None
    assert torch.equal(raft_flow(model, odd[:-1], odd[1:]), raft_flow(model, odd[:-1], odd[1:], graphs=False))


def test_retime_and_crop_helpers():
    idx = retime_indices(85, 72)
    assert idx[0] == 0 and idx[-1] == 84 and len(idx) == 72
    assert list(idx[:5]) == [0, 1, 2, 4, 5]  # the reference's 0,1,2,4,5,...
    assert list(latent_frame_indices(85, 22)) == [4 * k for k in range(22)]
    img = np.zeros((384, 672, 3), np.float32)
    img[:, :48] = 1  # the strip the reference's crop drops
    out = cover_and_crop(img, (480, 720))
    assert out.shape == (480, 720, 3)
    assert out[:, 1:].max() < 1e-6  # 480/384 = 1.25x: 48 model px = 60 px each side are gone


def test_reference_noise_small_scale(raft):
    video = _moving_square(5, 96, 168)  # a pass-1 result, small
    g = torch.Generator().manual_seed(42)
    noise = reference_warped_noise(video, raft, g, frames=6, cover_hw=(256, 384), frame_scale=0.5,
                                   warp_factor=2, latent_factor=8)
    assert noise.shape == (6, 32, 48, 16) and noise.dtype == np.float32
    assert np.isfinite(noise).all()
    assert abs(noise.mean()) < 0.03
    assert abs(noise.std() - 1) < 0.05


def test_aligned_noise_shape_and_unit_variance(raft):
    video = _moving_square(9, 96, 168)
    noise = aligned_warped_noise(video, raft, latent_t=3, latent_hw=(8, 14), generator=torch.Generator().manual_seed(1),
                                 pool=32, warp_factor=2)  # flow at 128x224, state 256x448
    assert noise.shape == (3, 16, 8, 14) and noise.dtype == torch.float32
    assert abs(float(noise.mean())) < 0.06
    assert abs(float(noise.std()) - 1) < 0.06
    # Frames far apart in a moving clip differ; the noise is never all repeats.
    assert not torch.equal(noise[0], noise[2])
