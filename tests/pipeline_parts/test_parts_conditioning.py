"""Model-resolution inputs: per-frame area resize on the frame pool, equal to the serial and whole-clip forms."""
import numpy as np
import torch
import torch.nn.functional as F

import warnings

import pytest

from void_server.pipelines.void.colour import to_model
from void_server.pipelines.void.conditioning import pingpong_pad, prepare_mask, prepare_video, quantise_levels
from void_server.reasoning.combine import quantise


class _Lazy:
    """Frames fetched on access, as the pipeline's plate reads are; counts the fetches."""

    def __init__(self, frames):
        self.frames, self.fetched = frames, []

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        self.fetched.append(i)
        return self.frames[i]


def test_video_and_mask_equal_the_serial_per_frame_loop_and_the_whole_clip_resize():
    rng = np.random.default_rng(0)
    frames = rng.random((9, 50, 90, 4), dtype=np.float32)  # an extra channel, dropped
    quad = rng.choice(np.uint8([0, 63, 127, 255]), size=(9, 50, 90))
    size, length = (24, 40), 13
    lazy = _Lazy(frames)
    video = prepare_video(lazy, size, length)
    assert sorted(lazy.fetched) == list(range(9))  # each frame read once
    serial = torch.stack([F.interpolate(torch.from_numpy(f[..., :3].copy()).permute(2, 0, 1)[None], size=size,
                                        mode="area")[0] for f in frames], dim=1)[None]
    assert torch.equal(video, pingpong_pad(serial, length))
    whole = F.interpolate(torch.from_numpy(frames[..., :3].copy()).permute(0, 3, 1, 2).contiguous(), size=size, mode="area")
    torch.testing.assert_close(video[0, :, :9], whole.permute(1, 0, 2, 3), atol=1e-6, rtol=0)
    assert video.shape == (1, 3, length) + size

    mask = prepare_mask(_Lazy(quad), size, length)
    resized = [F.interpolate(torch.from_numpy(q.astype(np.float32))[None, None], size=size, mode="area")[0, 0] for q in quad]
    expected = torch.stack([255.0 - torch.from_numpy(quantise(r.numpy())).float() for r in resized])[None, None]
    assert torch.equal(mask, pingpong_pad(expected, length) / 255.0)


def test_plate_colour_is_converted_at_plate_resolution_before_the_resize():
    # What the pipeline hands in: half-float plate frames, read-only (a memory-mapped read) and cropped (strided),
    # HDR values and NaN included. The model sees to_model of the plate, area-resized.
    rng = np.random.default_rng(1)
    full = (rng.random((5, 40, 70, 4), dtype=np.float32) * 3 - 1).astype(np.float16)
    full[0, 3, 4, 0] = np.nan
    full.setflags(write=False)
    crop = full[:, 4:36, 6:62, :3]
    size, length = (16, 28), 21
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning would be a copy we did not make ourselves
        video = prepare_video(crop, size, length, encoding="linear", device=torch.device("cpu"))
    plate = torch.from_numpy(crop.astype(np.float32))
    want = F.interpolate(to_model(plate, "linear").permute(0, 3, 1, 2), size=size, mode="area").permute(1, 0, 2, 3)
    torch.testing.assert_close(video[0, :, :5], want, atol=1e-6, rtol=0)
    assert video.dtype == torch.float32 and torch.isfinite(video).all() and 0 <= video.min() <= video.max() <= 1
    assert video.shape == (1, 3, length) + size
    assert np.isnan(full[0, 3, 4, 0])  # the plate itself is untouched


@pytest.mark.parametrize("values", [np.arange(256, dtype=np.float32), np.linspace(0, 255, 1021, dtype=np.float32)])
def test_mask_levels_equal_the_quadmask_quantiser(values):
    # The model's mask quantises on the device; the quadmask reader's quantiser is numpy: the same thresholds.
    assert np.array_equal(quantise_levels(torch.from_numpy(values)).numpy(), quantise(values).astype(np.float32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked uploads to a GPU")
def test_on_a_gpu_frames_upload_through_pinned_memory_with_their_values(monkeypatch):
    # Uint8 masks, half and float plates, cropped (strided) and read-only: the same values on the GPU as on the
    # CPU path, and the GPU path's inputs can be reused at once (the pinned copy is the frame's own).
    from void_server.pipelines.void.conditioning import _tensor

    rng = np.random.default_rng(2)
    for full in (rng.integers(0, 256, (64, 96, 4), dtype=np.uint8), rng.random((64, 96, 4)).astype(np.float16),
                 rng.random((64, 96, 4), dtype=np.float32)):
        full.setflags(write=False)
        for f in (full, full[5:60, 7:90, :3]):
            got = _tensor(f, torch.device("cuda"))
            assert got.is_cuda and got.dtype == _tensor(f, None).dtype
            assert torch.equal(got.cpu(), _tensor(f, None))
    size = (24, 40)
    crop = rng.random((9, 50, 90, 3), dtype=np.float32)[:, 3:47, 5:80]
    on_gpu = prepare_video(crop, size, 13, encoding="linear", device=torch.device("cuda"))
    plate = torch.from_numpy(crop.copy()).cuda()  # the plain upload
    want = F.interpolate(to_model(plate, "linear").permute(0, 3, 1, 2), size=size, mode="area").permute(1, 0, 2, 3)
    torch.testing.assert_close(on_gpu[0, :, :9], want, atol=1e-6, rtol=0)

    # Page-locked memory refused (a container's limits): the pageable upload, the same values.
    empty = torch.empty

    def no_pinning(*args, pin_memory=False, **kwargs):
        if pin_memory:
            raise RuntimeError("CUDA error: out of memory (cudaHostAlloc)")
        return empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", no_pinning)
    assert torch.equal(_tensor(crop[0], torch.device("cuda")).cpu(), _tensor(crop[0], None))
