"""Model-resolution inputs: per-frame area resize on the frame pool, equal to the serial and whole-clip forms."""
import numpy as np
import torch
import torch.nn.functional as F

from void_server.pipelines.void.conditioning import pingpong_pad, prepare_mask, prepare_video, quantise


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
