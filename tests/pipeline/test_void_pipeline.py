"""VoidPipeline end to end on tiny random models in the real layout, through the real loading path."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.media.frames import ArrayFrames, MemorySink  # noqa: E402
from void_server.pipelines.base import JobCancelled, PipelineInputs, PipelineSettings, PipelineUnavailable  # noqa: E402
from void_server.pipelines.void import pipeline as void_pipeline  # noqa: E402
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402

SIZE = (64, 112)


@dataclasses.dataclass
class Config:
    model_dir: Path
    memory_mode: str = "auto"
    device: str = "cpu"
    options: dict = dataclasses.field(default_factory=lambda: {"model_size": SIZE, "window_frames": 21})


def _stub_noise(monkeypatch, calls):
    """Warped noise stand-in (RAFT needs frames >= 128 px, far above these tiny sizes): seeded Gaussian noise of
    the shape the real function returns, recording what it was asked for."""
    from void_server.pipelines.void import warped_noise

    def aligned(video01, raft, latent_t, latent_hw, generator, **kw):
        calls.append((tuple(video01.shape), latent_t, tuple(latent_hw)))
        return torch.randn((latent_t, 16) + tuple(latent_hw), generator=torch.Generator().manual_seed(generator.initial_seed()))

    monkeypatch.setattr(warped_noise, "aligned_warped_noise", aligned)


def _eager_precompiled_store(monkeypatch) -> list:
    """Precompiled functions (precompiled.py) replaced by the module's own forward, nothing compiled; returns the
    list the (name, key) of every function asked for is appended to."""
    from void_server.pipelines.void import precompiled

    asked = []

    class Eager:
        def guard_check(self, *args, **kwargs):
            return True

        def __call__(self, module, *args, **kwargs):
            return type(module).forward(module, *args, **kwargs)

    monkeypatch.setattr(precompiled.FunctionStore, "function",
                        lambda self, name, key, build, f_globals: asked.append((name, key)) or Eager())
    return asked


def _inputs(plate, mask, workdir, **settings):
    s = PipelineSettings(prompt="buildings reflecting on a calm river", mask_mode="quadmask", input_encoding="srgb",
                         roi=False, steps_pass1=3, steps_pass2=2, **settings)
    return PipelineInputs(plate=ArrayFrames(plate.astype(np.float32) / 255.0, range(1001, 1001 + len(plate))),
                          settings=s, workdir=workdir, quadmask=ArrayFrames(mask.astype(np.float32)))


def test_from_config_names_download_when_weights_missing(tmp_path):
    with pytest.raises(PipelineUnavailable, match="void-server download"):
        VoidPipeline.from_config(Config(model_dir=tmp_path / "nothing"))


def test_both_passes_end_to_end(tiny_model_dir, bigben, tmp_path, monkeypatch):
    plate, mask = bigben
    calls = []
    _stub_noise(monkeypatch, calls)
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    progress = []
    sink = MemorySink()
    summary = pipe.run(_inputs(plate, mask, tmp_path / "job", noise_mode="aligned"), sink, progress.append, lambda: False)

    assert summary.frames_written == len(plate) == len(sink.clean)
    assert calls == [((21, 3) + SIZE, 6, (8, 14))]  # 12 frames pad to one 21-frame window: 6 latents
    for i in range(len(plate)):
        clean = sink.clean[i]
        assert clean.shape == plate.shape[1:] and clean.dtype == np.float32
        assert np.isfinite(clean).all() and clean.min() >= 0 and clean.max() <= 1
        # away from the edit region (past the merge's dilation and feather) the plate comes back bit-identical
        edit = (sink.quadmask[i] != 255).astype(np.uint8)
        far = cv2.dilate(edit, np.ones((25, 25), np.uint8)) == 0
        assert far.sum() > 0.5 * far.size
        assert np.array_equal(clean[far], (plate[i].astype(np.float32) / 255.0)[far])
        assert not np.array_equal(clean[edit > 0], (plate[i].astype(np.float32) / 255.0)[edit > 0])
        assert set(sink.layers[i]) == {"pass1"}
    assert not np.array_equal(sink.clean[0], sink.layers[0]["pass1"])  # pass 2 changed the edit region
    stages = [p.stage for p in progress]
    assert stages.index("pass1") < stages.index("pass2") < stages.index("merge")
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert [p.step for p in progress if p.stage == "pass1"][-3:] == [1, 2, 3]


def test_deterministic_under_a_seed_and_resumes_from_checkpoints(tiny_model_dir, bigben, tmp_path, monkeypatch):
    plate, mask = bigben[0][:5], bigben[1][:5]
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    runs = []
    for workdir, seed in (("a", 7), ("b", 7), ("c", 8)):
        sink = MemorySink()
        pipe.run(_inputs(plate, mask, tmp_path / workdir, passes=1, seed=seed), sink, lambda p: None, lambda: False)
        runs.append(np.stack([sink.clean[i] for i in range(len(plate))]))
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])

    # A finished job's last pass is its results: no checkpoint of it is copied out and written...
    assert not (tmp_path / "a" / "void_pass1.safetensors").exists()

    # ...unless the job fails after it (its results could not be written): then the restarted job finds that
    # checkpoint and never denoises again.
    class FullDisk(MemorySink):
        def write_frame(self, *a, **k):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        pipe.run(_inputs(plate, mask, tmp_path / "d", passes=1, seed=7), FullDisk(), lambda p: None, lambda: False)
    monkeypatch.setattr(void_pipeline, "run_pass", lambda *a, **k: pytest.fail("pass 1 ran again"))
    sink = MemorySink()
    pipe.run(_inputs(plate, mask, tmp_path / "d", passes=1, seed=7), sink, lambda p: None, lambda: False)
    assert np.array_equal(np.stack([sink.clean[i] for i in range(len(plate))]), runs[0])


def test_checkpoints_are_written_on_threads_and_whole_before_the_job_ends(tiny_model_dir, bigben, tmp_path, monkeypatch):
    # The job goes on while a pass's checkpoint is written; a finished job leaves pass 1's whole on disk (its last
    # pass's frames are its results, not checkpointed), and a job that fails after pass 1 leaves pass 1's.
    import threading
    import time

    from void_server.pipelines.void import checkpoints

    plate, mask = bigben[0][:3], bigben[1][:3]
    writers, real_write = [], checkpoints._write

    def slow_write(path, tensors, tag):
        writers.append(threading.current_thread().name)
        time.sleep(0.3)
        real_write(path, tensors, tag)

    monkeypatch.setattr(checkpoints, "_write", slow_write)
    from void_server.reasoning import quadmask as quadmask_stage

    sealers, real_seal = [], quadmask_stage._seal

    def slow_seal(out, workdir):  # the quadmask's flush and marker, on the job's writer thread too
        sealers.append(threading.current_thread().name)
        time.sleep(0.3)
        real_seal(out, workdir)

    monkeypatch.setattr(quadmask_stage, "_seal", slow_seal)
    _stub_noise(monkeypatch, [])
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    timings = pipe.run(_inputs(plate, mask, tmp_path / "done", noise_mode="aligned"), MemorySink(), lambda p: None,
                       lambda: False).timings
    assert len(writers) == 1 and all(name.startswith("void-checkpoint") for name in writers + sealers)
    assert timings["pass1.checkpoint"] < 0.3 and "checkpoints" in timings and "pass2.checkpoint" not in timings
    assert timings["quadmask"] < 0.3 and (tmp_path / "done" / quadmask_stage.DONE_MARKER).exists()
    assert checkpoints.tag_of(tmp_path / "done" / "void_pass1.safetensors") is not None
    assert not (tmp_path / "done" / "void_pass2.safetensors").exists()
    assert not list((tmp_path / "done").glob("*.tmp"))

    def no_noise(*a, **k):
        raise RuntimeError("RAFT failed")

    monkeypatch.setattr(pipe, "_pass2_noise", no_noise)
    with pytest.raises(RuntimeError, match="RAFT failed"):
        pipe.run(_inputs(plate, mask, tmp_path / "failed", noise_mode="aligned"), MemorySink(), lambda p: None,
                 lambda: False)
    assert checkpoints.tag_of(tmp_path / "failed" / "void_pass1.safetensors") is not None
    assert (tmp_path / "failed" / quadmask_stage.DONE_MARKER).exists()

    def no_inputs(*a, **k):  # a failure before the job's writer belongs to its model inputs
        raise RuntimeError("plate unreadable")

    monkeypatch.setattr(pipe, "_model_inputs", no_inputs)
    with pytest.raises(RuntimeError, match="plate unreadable"):
        pipe.run(_inputs(plate, mask, tmp_path / "early", noise_mode="aligned"), MemorySink(), lambda p: None,
                 lambda: False)
    assert (tmp_path / "early" / quadmask_stage.DONE_MARKER).exists()  # sealed before the failure is handled


def test_a_checkpoint_that_cannot_be_written_fails_the_job(tiny_model_dir, bigben, tmp_path, monkeypatch):
    from void_server.pipelines.void import checkpoints

    def full_disk(path, tensors, tag):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "_write", full_disk)
    _stub_noise(monkeypatch, [])
    plate, mask = bigben[0][:3], bigben[1][:3]
    with pytest.raises(OSError, match="No space left"):  # pass 1's (a finished job does not checkpoint its last)
        VoidPipeline.from_config(Config(model_dir=tiny_model_dir)).run(
            _inputs(plate, mask, tmp_path / "job", noise_mode="aligned"), MemorySink(), lambda p: None, lambda: False)


def test_cancel_during_denoising(tiny_model_dir, bigben, tmp_path):
    plate, mask = bigben[0][:3], bigben[1][:3]
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    steps = []

    def progress(p):
        if p.stage == "pass1" and p.step:
            steps.append(p.step)

    with pytest.raises(JobCancelled):
        pipe.run(_inputs(plate, mask, tmp_path / "job", passes=1), MemorySink(), progress, lambda: len(steps) >= 1)
    assert steps == [1]
    assert not (tmp_path / "job" / "void_pass1.safetensors").exists()


def test_single_frame_clip(tiny_model_dir, bigben, tmp_path):
    plate, mask = bigben[0][:1], bigben[1][:1]
    sink = MemorySink()
    VoidPipeline.from_config(Config(model_dir=tiny_model_dir)).run(
        _inputs(plate, mask, tmp_path / "job", passes=1), sink, lambda p: None, lambda: False)
    assert list(sink.clean) == [0] and sink.clean[0].shape == plate.shape[1:]


class _FakeReasoner:
    """Stands in for reasoning.auto.AutoReasoner (tested on its own in tests/reasoning): marks a fixed region."""

    def __init__(self):
        from void_server.reasoning.auto import AutoSettings

        self.settings = AutoSettings()
        self.unloaded = False
        self.seen_encoding = None

    def affected(self, plate, target, notes):
        self.seen_encoding = self.settings.input_encoding
        out = np.zeros(target.shape, bool)
        out[:, -20:, -30:] = True
        notes.append("fake reasoner ran")
        return out

    def unload(self):
        self.unloaded = True


def _target_inputs(plate, mask, workdir, mask_mode):
    inputs = _inputs(plate, mask, workdir, passes=1)
    inputs.settings.mask_mode = mask_mode
    inputs.target = ArrayFrames((mask == 0).astype(np.float32))
    return inputs


def test_auto_mask_mode_uses_the_reasoner_then_frees_it_in_offload_modes(tiny_model_dir, bigben, tmp_path):
    plate, mask = bigben
    reasoner = _FakeReasoner()
    pipe = VoidPipeline(tiny_model_dir, device="cpu", memory_mode="model_offload", model_size=SIZE,
                        window_frames=21, reasoner=reasoner)
    sink = MemorySink()
    summary = pipe.run(_target_inputs(plate, mask, tmp_path / "job", "auto"), sink, lambda p: None, lambda: False)
    assert "fake reasoner ran" in summary.notes
    assert reasoner.seen_encoding == "srgb"  # the job's plate encoding reaches the reasoner
    assert reasoner.unloaded and pipe.reasoner is None
    q = sink.quadmask[1]
    assert (q[-20:, -30:] == 127).any() and set(np.unique(q)) <= {0, 63, 127, 255}
    assert not (sink.quadmask[0] == 127).any()  # the reference's stage 4: no affected level on the first frame
    assert any("first frame was cleared" in n for n in summary.notes)


def test_auto_mask_mode_without_reasoning_models_says_so_and_removes_the_target(tiny_model_dir, bigben, tmp_path):
    plate, mask = bigben
    pipe = VoidPipeline(tiny_model_dir, device="cpu", model_size=SIZE, window_frames=21)
    sink = MemorySink()
    summary = pipe.run(_target_inputs(plate, mask, tmp_path / "job", "auto"), sink, lambda p: None, lambda: False)
    assert any("auto mask mode unavailable" in n and "void-server download" in n for n in summary.notes)
    assert set(np.unique(sink.quadmask[0])) == {0, 255}


def test_augmentation_noise_drawn_ahead_changes_nothing(tiny_model_dir, bigben, tmp_path, monkeypatch):
    """Pass 1's conditioning noise is drawn on its own thread from the job's start; the job's frames are exactly
    those of the same job drawing it inline."""
    import threading

    from void_server.pipelines.void import conditioning

    plate, mask = bigben[0][:5], bigben[1][:5]
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    threads = []
    real = conditioning.augmentation_noise

    def recording(shape, seed):
        threads.append(threading.current_thread().name)
        return real(shape, seed)

    monkeypatch.setattr(conditioning, "augmentation_noise", recording)
    runs = []
    for workdir in ("ahead", "inline"):
        if workdir == "inline":
            monkeypatch.setattr(VoidPipeline, "_draw_augmentation_noise", lambda self, inputs: None)
        sink = MemorySink()
        pipe.run(_inputs(plate, mask, tmp_path / workdir, passes=1, seed=7), sink, lambda p: None, lambda: False)
        runs.append(np.stack([sink.clean[i] for i in range(len(plate))]))
    assert threads[0].startswith("void-augment-noise") and not threads[1].startswith("void-augment-noise")
    assert np.array_equal(runs[0], runs[1])


def test_warm_up_loads_every_model_and_changes_no_result(tiny_model_dir, bigben, tmp_path, monkeypatch):
    _stub_noise(monkeypatch, [])
    plate, mask = bigben[0][:5], bigben[1][:5]
    cold = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    warm = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    assert not warm.warm_up_by_default  # on the CPU the server says ready at once
    assert warm.describe()["loaded"] == []
    timings = warm.warm_up()
    assert {"load", "load.vae", "load.transformers", "vae", "text", "pass1", "pass2", "raft"} <= set(timings)
    assert warm.describe()["loaded"] == ["text_encoder", "transformer_pass1", "transformer_pass2", "vae"]
    assert warm.describe()["warm_up_s"] == timings and warm._raft is not None
    assert not warm.models.placement._host_copies  # T5 is parked (and pinned) on a GPU only
    results = []
    for pipe, workdir in ((cold, "cold"), (warm, "warm")):
        sink = MemorySink()
        pipe.run(_inputs(plate, mask, tmp_path / workdir, noise_mode="aligned"), sink, lambda p: None, lambda: False)
        results.append(np.stack([sink.clean[i] for i in range(len(plate))]))
    assert np.array_equal(results[0], results[1])


def test_the_warm_ups_short_vae_clip_readies_every_vae_function_a_longer_job_runs(tiny_model_dir, bigben, tmp_path,
                                                                                   monkeypatch):
    # The precompiled VAE is keyed on its chunks' shapes and strides. A chunk is a view of its clip, so unless its
    # strides are made canonical every clip length needs functions of its own,
    # built or loaded during the job: the warm-up's 21 frames must cover a 29-frame job's every call. The store is
    # replaced by one that records keys and runs the module eagerly (nothing is compiled here).
    asked = _eager_precompiled_store(monkeypatch)
    _stub_noise(monkeypatch, [])
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.compile_vae = "both"  # what the gpu memory mode compiles (precompiled, the default unit)
    pipe.warm_up()
    pipe.models.wait_for_decoder()  # warmed up behind ready
    warmed = set(asked)
    assert {name for name, _ in warmed} == {"vae-encoder", "vae-decoder-block"}
    del asked[:]
    plate, mask = (np.concatenate([x, x[::-1], x[:1]]) for x in bigben)  # 25 frames: a 29-frame clip, 8 latents
    sink = MemorySink()
    pipe.run(_inputs(plate, mask, tmp_path / "job", noise_mode="aligned"), sink, lambda p: None, lambda: False)
    assert len(sink.clean) == 25 and asked
    assert set(asked) <= warmed


def test_the_decoder_warms_up_behind_ready_and_the_first_decode_waits_for_it(tiny_model_dir, bigben, tmp_path,
                                                                              monkeypatch, caplog):
    # Where the VAE is compiled, the warm-up returns before the decoder's functions are loaded: a thread does that
    # while the first job runs its encodes and its pass-1 loop, and the job's first decode waits for that thread.
    import threading

    from void_server.pipelines.void import precompiled

    asked = _eager_precompiled_store(monkeypatch)
    _stub_noise(monkeypatch, [])
    plate, mask = bigben[0][:5], bigben[1][:5]
    release = threading.Event()
    calls = []  # (thread, name) of every precompiled function asked for
    store_function = precompiled.FunctionStore.function

    def recording(self, name, key, build, f_globals):
        if name.startswith("vae-decoder") and threading.current_thread().name.startswith("void-warm-decoder"):
            assert release.wait(60)  # held until the job has started its loop
        calls.append((threading.current_thread().name, name))
        return store_function(self, name, key, build, f_globals)

    monkeypatch.setattr(precompiled.FunctionStore, "function", recording)
    results = []
    for defer in (True, False):
        pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
        pipe.models.compile_vae = "both"  # what the gpu memory mode compiles
        calls.clear()
        pipe.warm_up(defer_decoder=defer)
        ready = list(calls)
        assert any(n == "vae-encoder" for _, n in ready)
        assert any(n.startswith("vae-decoder") for _, n in ready) is not defer  # deferred: none yet at ready
        assert (pipe.models.decoder_warming is not None) is defer
        sink = MemorySink()
        progress = (lambda p: release.set()) if defer else (lambda p: None)
        pipe.run(_inputs(plate, mask, tmp_path / str(defer), noise_mode="aligned", passes=1), sink, progress,
                 lambda: False)
        decoder = [t for t, n in calls if n.startswith("vae-decoder")]
        if defer:  # every call of the warm-up's thread came before the job's first decode
            first_job_call = next(i for i, t in enumerate(decoder) if not t.startswith("void-warm-decoder"))
            assert first_job_call > 0 and all(t.startswith("void-warm-decoder") for t in decoder[:first_job_call])
            assert not any(t.startswith("void-warm-decoder") for t in decoder[first_job_call:])
        results.append(np.stack([sink.clean[i] for i in range(len(plate))]))
        pipe.close()
    assert np.array_equal(results[0], results[1]) and asked

    # a cold cache (the encoder's functions were built, not loaded): the decoder's would build for minutes during
    # the first job, so the warm-up waits for them
    events = precompiled.events
    monkeypatch.setattr(precompiled, "events", lambda module: [("key", "built")])
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.compile_vae = "both"
    calls.clear()
    pipe.warm_up()
    assert pipe.models.decoder_warming is None and any(n.startswith("vae-decoder") for _, n in calls)
    monkeypatch.setattr(precompiled, "events", events)

    # a warm-up of the decoder that fails costs the job nothing but time: the decode runs regardless
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.compile_vae = "both"
    monkeypatch.setattr(VoidPipeline, "_warm_up_decode", lambda self: 1 / 0)
    pipe.warm_up()
    sink = MemorySink()
    with caplog.at_level("WARNING"):
        pipe.run(_inputs(plate, mask, tmp_path / "failed", noise_mode="aligned", passes=1), sink, lambda p: None,
                 lambda: False)
    assert "the VAE decoder's warm-up failed (ZeroDivisionError" in caplog.text
    assert np.array_equal(np.stack([sink.clean[i] for i in range(len(plate))]), results[0])


def test_a_jobs_prompt_goes_through_t5_on_a_thread_while_the_host_reads_its_inputs(tiny_model_dir, bigben, tmp_path,
                                                                                    monkeypatch):
    # Where T5 waits in host memory (the GPU's gpu and fp8 modes), a new prompt costs its lend to the GPU and a
    # forward: the job starts that beside the quadmask and the plate's reading, and waits for it before the VAE.
    import threading

    from void_server.pipelines.void import text

    _stub_noise(monkeypatch, [])
    plate, mask = bigben[0][:5], bigben[1][:5]
    ran = []
    real = text.encode_prompt
    monkeypatch.setattr(text, "encode_prompt", lambda tok, enc, prompt, *a: ran.append(
        (threading.current_thread().name, prompt)) or real(tok, enc, prompt, *a))
    results = []
    for parked in (True, False):
        pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
        pipe.models.park_text_encoder = parked  # on this CPU the lend is a no-op; the threads are what is tested
        ran.clear()
        sink = MemorySink()
        inputs = _inputs(plate, mask, tmp_path / str(parked), noise_mode="aligned", passes=1)
        summary = pipe.run(inputs, sink, lambda p: None, lambda: False)
        job_prompt = [name for name, prompt in ran if prompt == inputs.settings.prompt]
        assert len(job_prompt) == 1  # once a job, cached for its passes
        assert job_prompt[0].startswith("void-embed-prompt") is parked
        assert "prompt" in summary.timings
        results.append(np.stack([sink.clean[i] for i in range(len(plate))]))
    assert np.array_equal(results[0], results[1])


def test_work_behind_ready_or_beside_a_job_runs_with_the_models_gpu_current(monkeypatch):
    # A new thread starts on cuda:0; a server slot's models may be on another GPU.
    import contextlib
    import threading

    from void_server.pipelines.void.pipeline import on_models_device_thread

    made_current = []

    @contextlib.contextmanager
    def device(d):
        made_current.append((threading.current_thread().name, d))
        yield

    monkeypatch.setattr(torch.cuda, "device", device)
    got = on_models_device_thread("void-test", torch.device("cuda", 1), lambda a, b: a + b, 2, 3).result()
    assert got == 5 and len(made_current) == 1
    assert made_current[0][0].startswith("void-test") and made_current[0][1] == torch.device("cuda", 1)
    assert on_models_device_thread("void-test", torch.device("cpu"), lambda: 7).result() == 7
    assert len(made_current) == 1  # no GPU to make current


def test_a_job_that_fails_before_its_prompt_stage_still_waits_for_t5(tiny_model_dir, bigben, tmp_path, monkeypatch):
    # T5 is lent to the GPU on that thread: a failed job must not leave it there for the next job.
    import time

    from void_server.pipelines.void import text

    plate, mask = bigben[0][:3], bigben[1][:3]
    finished = []
    real = text.encode_prompt

    def slow(*args):
        time.sleep(0.5)
        out = real(*args)
        finished.append(args[2])
        return out

    monkeypatch.setattr(text, "encode_prompt", slow)
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.park_text_encoder = True
    inputs = _inputs(plate, mask, tmp_path / "job", passes=1)
    inputs = dataclasses.replace(inputs, quadmask=None)  # the quadmask stage fails at once
    with pytest.raises(ValueError, match="needs a quadmask input"):
        pipe.run(inputs, MemorySink(), lambda p: None, lambda: False)
    assert finished == [inputs.settings.prompt]


def test_t5_runs_once_for_a_prompt_asked_for_by_two_threads_at_once(tiny_model_dir, monkeypatch):
    import threading
    import time

    from void_server.pipelines.void import text
    from void_server.pipelines.void.loading import VoidModels
    from void_server.pipelines.void.weights import resolve_layout

    models = VoidModels(resolve_layout(tiny_model_dir), torch.device("cpu"))
    calls = []
    real = text.encode_prompt

    def slow(*args):
        calls.append(args[2])
        time.sleep(0.2)  # long enough for the other thread to ask meanwhile
        return real(*args)

    monkeypatch.setattr(text, "encode_prompt", slow)
    got = [None, None]

    def ask(i):
        got[i] = models.prompt_embeddings("a clean plate")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["a clean plate"]
    assert got[0] is got[1]


def test_the_compiler_is_imported_beside_the_loading_and_a_failed_import_does_not_fail_the_warm_up(
        tiny_model_dir, monkeypatch, caplog):
    import threading

    from void_server.pipelines.void import accel

    _eager_precompiled_store(monkeypatch)
    ran_on = []

    def failing():
        ran_on.append(threading.current_thread().name)
        raise ImportError("cannot import name 'x' from partially initialized module 'torch._inductor.y'")

    monkeypatch.setattr(accel, "import_compiler", failing)
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.compile_vae = "both"  # something compiles, so the import goes ahead
    with caplog.at_level("WARNING"):
        timings = pipe.warm_up()
    assert ran_on and ran_on[0].startswith("void-import-compiler")
    assert "import_compiler" in timings and "pass2" in timings  # the warm-up went on
    assert "importing torch's compiler ahead failed (ImportError" in caplog.text
    pipe.close()  # its decoder's warm-up too, while the store is still the eager one
    ran_on.clear()
    plain = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))  # nothing compiles on this CPU: no import
    assert "import_compiler" not in plain.warm_up() and not ran_on


def test_the_encoders_warm_up_can_run_beside_the_transformers_reading(tiny_model_dir, bigben, tmp_path, monkeypatch,
                                                                      caplog):
    # Opt-in: after the compiler's import, on its thread, while the transformers load; the VAE stage then does not
    # run the encoder again. A failure there leaves it to the VAE stage.
    import threading

    from void_server.pipelines.void import precompiled

    _eager_precompiled_store(monkeypatch)
    _stub_noise(monkeypatch, [])
    asked = []
    store_function = precompiled.FunctionStore.function
    monkeypatch.setattr(precompiled.FunctionStore, "function", lambda self, name, key, build, g: asked.append(
        (threading.current_thread().name, name)) or store_function(self, name, key, build, g))
    plate, mask = bigben[0][:5], bigben[1][:5]
    results = []
    for early in (True, False):
        pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
        pipe.models.compile_vae = "both"
        asked.clear()
        pipe.warm_up(encode_beside_loading=early)
        encoder = [t for t, n in asked if n == "vae-encoder"]
        assert encoder and all(t.startswith("void-import-compiler") is early for t in encoder)
        sink = MemorySink()
        pipe.run(_inputs(plate, mask, tmp_path / str(early), noise_mode="aligned", passes=1), sink, lambda p: None,
                 lambda: False)
        results.append(np.stack([sink.clean[i] for i in range(len(plate))]))
        pipe.close()
    assert np.array_equal(results[0], results[1])

    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.compile_vae = "both"
    calls = []

    def failing_then_fine(self):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            raise RuntimeError("out of memory beside the reading")

    monkeypatch.setattr(VoidPipeline, "_warm_up_encode", failing_then_fine)
    with caplog.at_level("WARNING"):
        pipe.warm_up(encode_beside_loading=True)
    pipe.close()
    assert calls[0].startswith("void-import-compiler") and not calls[1].startswith("void-import-compiler")
    assert "importing torch's compiler and warming the encoder up ahead failed (RuntimeError" in caplog.text


def test_a_warm_up_that_holds_one_transformer_at_a_time_loads_each_once(tiny_model_dir, monkeypatch):
    from void_server.pipelines.void import loading

    loads, real_load = [], loading.load_transformer

    def load(layout, index, *args, **kw):
        loads.append(index)
        return real_load(layout, index, *args, **kw)

    monkeypatch.setattr(loading, "load_transformer", load)
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.placement.mode = "sequential_offload"
    assert not pipe.models.holds_every_transformer
    pipe.warm_up()
    assert loads == [1, 2]


def test_warm_up_pins_a_parked_text_encoder_on_a_thread_before_t5_runs(tiny_model_dir, monkeypatch):
    # On a GPU, T5 waits in host memory between prompts and its weights are pinned once: the warm-up does that on
    # a thread while the VAE compiles, and the text stage waits for it.
    import threading

    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    pipe.models.park_text_encoder = True
    placement = pipe.models.placement
    made_on = []
    real = placement.host_copy

    def recording(model):
        made_on.append(threading.current_thread().name)
        return real(model)

    monkeypatch.setattr(placement, "host_copy", recording)
    pipe.warm_up()
    assert made_on and made_on[0].startswith("void-pin-t5")
    assert pipe.models.text[1] in placement._host_copies


def test_a_rank_groups_raft_runs_on_the_second_gpu_and_the_warp_on_the_first():
    # Rank 0 makes the pass-2 noise while the other ranks idle: RAFT goes to the next GPU, the warp stays.
    from types import SimpleNamespace

    alone = SimpleNamespace(_group=None, models=SimpleNamespace(device=torch.device("cuda", 0)))
    grouped = SimpleNamespace(_group=object(), models=SimpleNamespace(device=torch.device("cuda", 2)))
    assert VoidPipeline._raft_device(alone) == torch.device("cuda", 0)
    assert VoidPipeline._raft_device(grouped) == torch.device("cuda", 3)


def test_a_finished_job_holds_no_pass_tensors_once_it_returns(tiny_model_dir, bigben, tmp_path, monkeypatch):
    # The last pass's frames wait in the job for a checkpoint written only on failure; nothing may keep them (GPU
    # memory, on a server) past the job by reference cycles that only the cyclic collector would break.
    import gc
    import weakref

    kept = []
    real = void_pipeline.run_pass

    def watched(*a, **k):
        result = real(*a, **k)
        kept.append(weakref.ref(result.video))
        return result

    monkeypatch.setattr(void_pipeline, "run_pass", watched)
    plate, mask = bigben[0][:3], bigben[1][:3]
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    gc.collect()
    gc.disable()
    try:
        pipe.run(_inputs(plate, mask, tmp_path / "job", passes=1), MemorySink(), lambda p: None, lambda: False)
        assert kept and all(ref() is None for ref in kept)
    finally:
        gc.enable()


def test_the_merge_makes_the_last_frames_edit_alphas_ahead_and_the_frames_do_not_change(tiny_model_dir, bigben,
                                                                                       tmp_path, monkeypatch):
    # The alphas of the frames merged after the last decode are made while the GPU denoises; within the byte
    # budget, counted from the clip's end. The clean frames are the same as with every alpha made in the merge.
    from void_server.pipelines.void import merge

    plate, mask = bigben[0][:5], bigben[1][:5]
    pipe = VoidPipeline.from_config(Config(model_dir=tiny_model_dir))
    real = merge.merge_layers
    outputs, given = {}, {}

    def recording(plate_frame, *args, region=merge.COMPUTE, **kwargs):
        i = next(k for k in range(len(plate)) if np.array_equal(plate_frame, plate[k].astype(np.float32) / 255.0))
        given.setdefault(budget, {})[i] = region is not merge.COMPUTE  # frames merge on several threads
        return real(plate_frame, *args, region=region, **kwargs)

    monkeypatch.setattr(merge, "merge_layers", recording)
    frame_bytes = 4 * plate.shape[1] * plate.shape[2]
    for budget in (0, 2 * frame_bytes, 100 * frame_bytes):
        monkeypatch.setattr(void_pipeline, "MERGE_AHEAD_BYTES", budget)
        sink = MemorySink()
        pipe.run(_inputs(plate, mask, tmp_path / str(budget), passes=1), sink, lambda p: None, lambda: False)
        outputs[budget] = np.stack([sink.clean[i] for i in range(len(plate))])
    made_ahead = {b: [given[b][i] for i in range(len(plate))] for b in given}
    assert made_ahead == {0: [False] * 5, 2 * frame_bytes: [False] * 3 + [True] * 2, 100 * frame_bytes: [True] * 5}
    assert np.array_equal(outputs[0], outputs[2 * frame_bytes]) and np.array_equal(outputs[0], outputs[100 * frame_bytes])
