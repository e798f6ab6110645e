"""The last pass's frames reach the merge as the VAE decodes them (decoded_frames.py): same frames, in order, a
reader waits only for its own frame, and a pass that fails never leaves the merge thread waiting."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from void_server.pipelines.void.decode import decode_latents
from void_server.pipelines.void.decoded_frames import DecodedFrames, StreamClosed
from void_server.pipelines.void.loading import load_vae
from void_server.pipelines.void.weights import resolve_layout


def _clip(t: int = 9) -> torch.Tensor:
    return torch.rand(1, 3, t, 4, 6, generator=torch.Generator().manual_seed(t))


def test_frames_read_as_their_chunks_arrive():
    video, frames = _clip(), DecodedFrames()
    got = {}
    reader = threading.Thread(target=lambda: got.update(f5=frames.frame(5), t=time.monotonic()))
    reader.start()
    frames.add(0, video[:, :, :1])
    frames.add(1, video[:, :, 1:5])
    time.sleep(0.2)
    assert "f5" not in got  # frame 5 has not arrived: the reader waits
    arrived = time.monotonic()
    frames.add(5, video[:, :, 5:9])
    reader.join(5)
    assert got["t"] >= arrived
    for i in range(9):
        np.testing.assert_array_equal(frames.frame(i), video[0, :, i].numpy().transpose(1, 2, 0))
    np.testing.assert_array_equal(got["f5"], video[0, :, 5].numpy().transpose(1, 2, 0))
    with pytest.raises(ValueError, match="in order"):
        frames.add(3, video[:, :, 3:5])


def test_a_closed_stream_releases_its_readers_and_fill_completes_a_resumed_clip():
    video, frames = _clip(), DecodedFrames()
    frames.add(0, video[:, :, :3])
    errors = []

    def read_late():
        try:
            frames.frame(7)
        except StreamClosed as e:
            errors.append(e)

    reader = threading.Thread(target=read_late)
    reader.start()
    frames.close()
    reader.join(5)
    assert not reader.is_alive() and errors
    resumed = DecodedFrames()  # a pass resumed from its checkpoint: nothing decoded, the whole clip at once
    resumed.fill(video)
    resumed.fill(video)  # nothing more to add
    assert resumed.received == 9
    np.testing.assert_array_equal(resumed.frame(8), video[0, :, 8].numpy().transpose(1, 2, 0))


def test_decode_hands_over_each_chunk_as_the_result_holds_it(tiny_model_dir):
    vae = load_vae(resolve_layout(tiny_model_dir), torch.float32)
    z = torch.randn(1, 6, 16, 2, 3, generator=torch.Generator().manual_seed(2))
    chunks = []
    video = decode_latents(vae, z, on_chunk=lambda start, f: chunks.append((start, f)))
    assert [s for s, _ in chunks] == [0, 1, 9, 17] and video.shape[2] == 21  # latent 0, pairs, the single last
    assert torch.equal(torch.cat([f for _, f in chunks], dim=2), video)
    assert torch.equal(video, decode_latents(vae, z))


def test_a_final_pass_that_fails_stops_the_merge_thread(tiny_model_dir, tmp_path, monkeypatch):
    from void_server.media.frames import ArrayFrames, MemorySink
    from void_server.pipelines.base import PipelineInputs, PipelineSettings
    from void_server.pipelines.void import pipeline as pipeline_module
    from void_server.pipelines.void.pipeline import VoidPipeline

    pipe = VoidPipeline(tiny_model_dir, device="cpu", model_size=(64, 112), window_frames=21)
    merges = []
    real_start = pipeline_module.VoidPipeline._start_merge

    def recording_start(self, *args, **kwargs):
        merges.append(real_start(self, *args, **kwargs))
        return merges[-1]

    def failing_pass(self, inputs, job, base, *args, **kwargs):
        raise RuntimeError("pass %d failed" % base.index)

    monkeypatch.setattr(pipeline_module.VoidPipeline, "_start_merge", recording_start)
    monkeypatch.setattr(pipeline_module.VoidPipeline, "_pass", failing_pass)
    quad = np.full((9, 36, 64), 255, np.float32)
    quad[:, 10:20, 20:30] = 0
    inputs = PipelineInputs(plate=ArrayFrames(np.full((9, 36, 64, 3), 0.5, np.float32), range(1, 10)),
                            settings=PipelineSettings(prompt="a wall", mask_mode="quadmask", passes=1),
                            workdir=tmp_path, quadmask=ArrayFrames(quad))
    sink = MemorySink()
    with pytest.raises(RuntimeError, match="pass 1 failed"):
        pipe.run(inputs, sink, lambda p: None, lambda: False)
    assert len(merges) == 1 and merges[0].done()  # not left waiting for frames that will never come
    with pytest.raises(StreamClosed):
        merges[0].result()
    assert not sink.clean
