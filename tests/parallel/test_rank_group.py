"""A whole VoidPipeline job over 2 ranks (gpus_per_worker=2: rank 0 here, rank 1 a spawned process, gloo on the CPU)
gives the single-process job's frames; a cancel stops both ranks at the same step; a killed rank fails the job with
a clear message in bounded time, and the next job starts the group again.

One two-rank pipeline serves the module (spawning a rank and importing diffusers is the slow part)."""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.media.frames import ArrayFrames, MemorySink  # noqa: E402
from void_server.pipelines.base import JobCancelled, PipelineInputs, PipelineSettings, PipelineUnavailable  # noqa: E402
from void_server.pipelines.void.parallel.group import RankGroupError, check_devices, pass_degrees  # noqa: E402
from void_server.pipelines.void.parallel.second_vae import DEFAULT_CUT  # noqa: E402
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402

SIZE = (64, 112)
RANK_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Config:
    model_dir: Path
    gpus_per_worker: int = 1
    memory_mode: str = "auto"
    device: str = "cpu"
    options: dict = dataclasses.field(default_factory=lambda: {"model_size": SIZE, "window_frames": 21,
                                                               "rank_timeout_s": RANK_TIMEOUT_S})


def _clip(frames: int = 6, h: int = 72, w: int = 128):
    """A textured plate with a moving square to remove (quadmask 0) and its shadow (127)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    plate = np.empty((frames, h, w, 3), np.float32)
    quad = np.full((frames, h, w), 255, np.float32)
    for i in range(frames):
        plate[i] = np.stack([0.3 + 0.2 * np.sin(xx / 9.0), 0.4 + 0.2 * np.cos(yy / 7.0), 0.5 + 0.1 * np.sin((xx + yy) / 5.0)], -1)
        x0 = 30 + 6 * i
        quad[i, 40:56, x0 + 4:x0 + 24] = 127
        quad[i, 24:44, x0:x0 + 20] = 0
        plate[i, 24:44, x0:x0 + 20] = (0.9, 0.1, 0.1)
    return plate, quad


def _inputs(workdir: Path, **settings) -> PipelineInputs:
    plate, quad = _clip()
    s = PipelineSettings(prompt="a textured wall", mask_mode="quadmask", input_encoding="srgb", roi=False,
                         steps_pass1=3, steps_pass2=2, noise_mode="aligned", **settings)
    return PipelineInputs(plate=ArrayFrames(plate), settings=s, workdir=workdir, quadmask=ArrayFrames(quad))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from void_server.pipelines.void.tiny import build_random_model_dir

    return build_random_model_dir(tmp_path_factory.mktemp("models"), size="tiny", raft=True)


@pytest.fixture(scope="module")
def two_ranks(model_dir):
    pipe = VoidPipeline.from_config(Config(model_dir, gpus_per_worker=2))
    yield pipe
    pipe.close()
    assert not pipe._group.started
    assert pipe._second._vae is None and pipe._second._worker._shutdown  # its VAE's memory goes with it


@pytest.fixture(autouse=True)
def stub_noise(monkeypatch):
    """RAFT needs frames of >= 128 px: pass 2's warped noise is seeded Gaussian noise here (rank 0 makes it)."""
    from void_server.pipelines.void import warped_noise

    def aligned(video01, raft, latent_t, latent_hw, generator, **kw):
        return torch.randn((latent_t, 16) + tuple(latent_hw), generator=torch.Generator().manual_seed(generator.initial_seed()))

    monkeypatch.setattr(warped_noise, "aligned_warped_noise", aligned)


def _run(pipe: VoidPipeline, workdir: Path, progress=None, should_cancel=lambda: False, **settings):
    sink = MemorySink()
    pipe.run(_inputs(workdir, **settings), sink, progress or (lambda p: None), should_cancel)
    return sink


def _assert_same_frames(out: MemorySink, ref: MemorySink) -> None:
    assert len(out.clean) == len(ref.clean) == 6
    for name, a, b in [("clean", out.clean, ref.clean),
                       ("pass1", {i: f["pass1"] for i, f in out.layers.items()}, {i: f["pass1"] for i, f in ref.layers.items()})]:
        a, b = np.stack([a[i] for i in range(6)]), np.stack([b[i] for i in range(6)])
        # float32 on the CPU: a matmul over a shard of the tokens may round differently from one over them all
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert rel <= 1e-5 and np.abs(a - b).max() <= 1e-4, "%s: rel L2 %.3g, max %.3g" % (name, rel, np.abs(a - b).max())


def _watch_transformers(pipe: VoidPipeline) -> dict:
    """Rank 0's view of the work: the batch each transformer call got and the video tokens its blocks held."""
    seen = {1: [], 2: []}
    for index in (1, 2):
        model = pipe.models.transformer(index)
        model.transformer_blocks[1].register_forward_pre_hook(
            lambda m, a, kw, index=index: seen[index].append(tuple(kw["hidden_states"].shape[:2])), with_kwargs=True)
    return seen


def _watch_vaes(pipe: VoidPipeline) -> list:
    """(which VAE, which part) for each encoder call and for the decoder's first and last layers, in call order."""
    calls = []
    vaes = [("first", pipe.models.vae)] + ([("second", pipe._second.vae)] if pipe._second is not None else [])
    for name, vae in vaes:
        vae.encoder.register_forward_hook(lambda m, a, o, n=name: calls.append((n, "encode")))
        for part in ("conv_in", "conv_out"):
            getattr(vae.decoder, part).register_forward_hook(lambda m, a, o, n=name, p=part: calls.append((n, p)))
    return calls


def test_two_ranks_give_the_single_process_frames(model_dir, two_ranks, tmp_path):
    one = VoidPipeline.from_config(Config(model_dir))
    seen_one, seen_two = _watch_transformers(one), _watch_transformers(two_ranks)
    vae_two = _watch_vaes(two_ranks)
    ref = _run(one, tmp_path / "one")
    out = _run(two_ranks, tmp_path / "two")

    _assert_same_frames(out, ref)
    # The second GPU's VAE encoded pass 2's mask and the plate and ran the last stages of both passes' decodes
    # (parallel/second_vae.py)
    assert one._second is None and two_ranks.describe()["parallel"]["decode_cut"] == DEFAULT_CUT
    # the encoder runs per frame batch: pass 1's mask on the first; pass 2's mask, then the plate on the second
    assert vae_two.count(("second", "encode")) == 2 * vae_two.count(("first", "encode")) > 0
    encodes = [c for c in vae_two if c[1] == "encode"]
    assert encodes.index(("second", "encode")) < encodes.index(("first", "encode"))  # pass 2's mask came first
    decodes = [c for c in vae_two if c[1] != "encode"]
    chunks = len(decodes) // 4  # each chunk: conv_in on the first VAE, conv_out on the second
    assert chunks > 2 and sorted(set(decodes)) == [("first", "conv_in"), ("second", "conv_out")]
    assert decodes.count(("first", "conv_in")) == decodes.count(("second", "conv_out")) == 2 * chunks
    assert not np.array_equal(ref.clean[0], ref.layers[0]["pass1"])  # both passes really ran
    # pass 1 went sequence-parallel (rank 0 held part of the tokens), pass 2 split the guidance pair (batch 1 of 2)
    assert pass_degrees(2, 1.0) == (1, 1, 2) and pass_degrees(2, 6.0) == (2, 1, 1)
    assert max(n for _, n in seen_two[1]) < min(n for _, n in seen_one[1])
    assert {b for b, _ in seen_two[2]} == {1} and {b for b, _ in seen_one[2]} == {2}
    assert two_ranks._group.last_outcome == {1: ("done", 2)}  # rank 1 ran all of pass 2's steps
    assert two_ranks.describe()["parallel"]["ranks"] == 2


def test_step_cache_goes_to_every_rank_and_avoids_sequence_parallelism(model_dir, two_ranks, tmp_path):
    """The step cache cannot span token shards: pass 1 splits windows instead; its threshold reaches rank 1 too."""
    assert pass_degrees(2, 1.0, sequence_ok=False) == (1, 2, 1) and pass_degrees(2, 6.0, sequence_ok=False) == (2, 1, 1)
    one = VoidPipeline.from_config(Config(model_dir))
    # a threshold this high reuses the cache at every step after a window's first: a large, certain change
    ref = _run(one, tmp_path / "one", step_cache=1e3)
    out = _run(two_ranks, tmp_path / "two", step_cache=1e3)
    _assert_same_frames(out, ref)
    plain = _run(one, tmp_path / "plain")
    assert not np.array_equal(np.stack(list(plain.clean.values())), np.stack(list(ref.clean.values())))


def test_rank_one_loads_both_transformers_before_the_first_pass_asks(two_ranks, tmp_path):
    """Fresh workers (the module's group started again: one group per process): rank 1 loads its transformers
    while rank 0 has not asked for a pass yet (it was idle until then, and the first pass waited for its
    loading)."""
    group = two_ranks._group
    group.shutdown()
    group.start()
    deadline = time.monotonic() + 120
    while not group.preloaded and time.monotonic() < deadline:
        time.sleep(0.1)
    preloaded = two_ranks.describe()["parallel"]["preloaded"]
    assert list(preloaded) == ["rank1"] and preloaded["rank1"]["passes"] == [1, 2]
    assert preloaded["rank1"]["s"] > 0
    assert len(_run(two_ranks, tmp_path / "after-preload").clean) == 6  # the protocol is undisturbed


def test_warm_up_runs_each_pass_through_the_rank_group(two_ranks):
    """Warm-up compiles what the jobs will run: every rank's own shapes, so each pass goes through the group."""
    timings = two_ranks.warm_up()
    assert {"pass1", "pass2"} <= set(timings)
    assert two_ranks._group.last_outcome == {1: ("done", 1)}  # rank 1 ran pass 2's one warm-up step


def test_cancel_stops_both_ranks_at_the_same_step(two_ranks, tmp_path):
    steps: List[int] = []

    def progress(p):
        if p.stage == "pass1":
            steps.append(p.step)

    with pytest.raises(JobCancelled):
        _run(two_ranks, tmp_path / "job", progress, should_cancel=lambda: 1 in steps)
    # Asked after step 1; the ranks' vote is read one step later (plan.StopVote: the GPU's queue is not drained
    # for it), so rank 0 stopped after step 2 ...
    assert steps[-1] == 2
    assert two_ranks._group.last_outcome == {1: ("cancelled", 2)}  # ... and so did rank 1, at the same step
    assert two_ranks._group.started  # the group survives a cancel
    assert not (tmp_path / "job" / "void_pass1.safetensors").exists()


def test_killed_rank_fails_the_job_clearly_and_the_next_job_runs(two_ranks, tmp_path):
    group = two_ranks._group
    victim = group._procs[0]

    def progress(p):
        if p.stage == "pass1" and p.step == 1 and victim.is_alive():
            os.kill(victim.pid, signal.SIGKILL)

    start = time.monotonic()
    with pytest.raises(RankGroupError, match=r"rank 1 \(cpu\) exited unexpectedly"):
        _run(two_ranks, tmp_path / "killed", progress)
    assert time.monotonic() - start < RANK_TIMEOUT_S + 10
    assert not group.started and not victim.is_alive()
    # the next job brings the group back
    out = _run(two_ranks, tmp_path / "next")
    assert len(out.clean) == 6 and group.started and group.last_outcome == {1: ("done", 2)}


def test_more_gpus_than_visible_is_a_clear_error_at_load(model_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    check_devices(torch.device("cuda"), 1)
    with pytest.raises(ValueError, match=r"gpus_per_worker=2 needs cuda:0..cuda:1, but 1 GPU is visible"):
        check_devices(torch.device("cuda"), 2)
    # the pipeline checks before spawning anything (no GPU is touched: models load lazily)
    with pytest.raises(PipelineUnavailable, match=r"gpus_per_worker=4.*cuda:0..cuda:3, but 1 GPU is visible"):
        VoidPipeline(model_dir, device="cuda", memory_mode="gpu", gpus=4)


def test_a_decode_cut_the_decoder_lacks_is_a_clear_error_at_load(model_dir):
    """Checked on the VAE's config before any rank starts; "none" keeps the whole VAE on the first GPU."""
    def config(cut):
        return Config(model_dir, gpus_per_worker=2, options={"model_size": SIZE, "decode_cut": cut})

    with pytest.raises(PipelineUnavailable, match=r"decode_cut=up_block_9.resnet_0: the decoder has no stage "
                                                  r"'up_block_9.resnet_0' \(its stages: conv_in, "):
        VoidPipeline.from_config(config("up_block_9.resnet_0"))
    with pytest.raises(PipelineUnavailable, match=r"decode_cut=99: a pipelined decode splits the decoder's \d+ stages"):
        VoidPipeline.from_config(config(99))
    pipe = VoidPipeline(model_dir, device="cpu", gpus=1, decode_cut="up_block_9.resnet_0")  # one GPU: no cut to make
    assert pipe._second is None


def test_second_vae_waits_for_a_new_shape_and_queues_a_known_one(model_dir):
    """A new shape compiles the encoder's graphs: waited for, so nothing compiles beside it. A known one is queued on
    the worker thread and the caller goes on. Either way the latents are the first VAE's."""
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.parallel.second_vae import SecondVae
    from void_server.pipelines.void.passes import PASS2, pass_mask_latents
    from void_server.pipelines.void.weights import resolve_layout

    models = VoidModels(resolve_layout(model_dir), torch.device("cpu"), "gpu")
    second = SecondVae(models, torch.device("cpu"))
    threads = []
    second.vae.encoder.register_forward_pre_hook(lambda m, a: threads.append(threading.current_thread().name))
    mask = (torch.rand(1, 1, 9, *SIZE, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    expected = pass_mask_latents(models.vae, PASS2, mask)

    first = second.encode_mask(PASS2, mask)
    assert first.done() and torch.equal(first.result(), expected)
    release = threading.Event()
    second._worker.submit(release.wait)  # the worker is busy
    queued = second.encode_mask(PASS2, mask)
    time.sleep(0.2)
    assert not queued.done()
    release.set()
    assert torch.equal(queued.result(timeout=30), expected)
    assert threads and set(threads) == {threads[0]} and threads[0].startswith("void-second-vae")


def test_reloading_the_pipeline_stops_the_old_ranks(tmp_path):
    """The out-of-memory fallback reloads the pipeline: the old one's rank processes must not keep their GPUs."""
    from void_server.config import ServerConfig
    from void_server.jobs.pipeline_host import PipelineHost

    closed = []

    class Old:
        def close(self):
            closed.append(True)

    host = PipelineHost("testing", ServerConfig(data_dir=tmp_path))
    host.pipeline = Old()
    host.reload("model_offload")
    assert closed == [True] and host.pipeline is not None and not isinstance(host.pipeline, Old)
