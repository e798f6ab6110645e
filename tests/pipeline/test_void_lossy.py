"""The lossy options through VoidPipeline: a lossy pass never reuses (or is reused as) a lossless checkpoint, the
step cache reports its hits in the job's notes, and float8 matmul on the CPU fails naming its requirement."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from void_server.media.frames import ArrayFrames, MemorySink  # noqa: E402
from void_server.pipelines.base import PipelineInputs, PipelineSettings  # noqa: E402
from void_server.pipelines.void.fp8_linear import Fp8Unsupported  # noqa: E402
from void_server.pipelines.void.passes import PASS1, PASS2  # noqa: E402
from void_server.pipelines.void.pipeline import ModelInputs, VoidPipeline  # noqa: E402

SIZE = (64, 112)


def _inputs(plate, mask, workdir, **settings):
    s = PipelineSettings(prompt="buildings reflecting on a calm river", mask_mode="quadmask", input_encoding="srgb",
                         roi=False, steps_pass1=3, passes=1, **settings)
    return PipelineInputs(plate=ArrayFrames(plate.astype(np.float32) / 255.0, range(1001, 1001 + len(plate))),
                          settings=s, workdir=workdir, quadmask=ArrayFrames(mask.astype(np.float32)))


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return VoidPipeline(tiny_model_dir, device="cpu", model_size=SIZE, window_frames=21)


def test_checkpoint_tags_differ_with_every_lossy_setting(pipe, tmp_path):
    job = ModelInputs(frames=5, length=21, box=None, video=torch.zeros(1), mask=torch.zeros(1))
    plate, mask = np.zeros((5, 8, 8, 3)), np.zeros((5, 8, 8))
    tags = {}
    for name, kw in {"lossless": {}, "cache 0.1": dict(step_cache=0.1), "cache 0.2": dict(step_cache=0.2),
                     "fp8": dict(fp8_matmul=True), "both": dict(step_cache=0.1, fp8_matmul=True)}.items():
        inputs = _inputs(plate, mask, tmp_path, **kw)
        tags[name] = (pipe._checkpoint_tag(inputs, job, PASS1, 3, 1.0), pipe._checkpoint_tag(inputs, job, PASS2, 50, 6.0))
    assert len({t for pair in tags.values() for t in pair}) == 2 * len(tags)


def test_lossy_and_lossless_jobs_never_share_a_pass_checkpoint(pipe, bigben, tmp_path):
    plate, mask = bigben[0][:5], bigben[1][:5]

    def run(**kw):
        sink = MemorySink()
        summary = pipe.run(_inputs(plate, mask, tmp_path / "job", **kw), sink, lambda p: None, lambda: False)
        return np.stack([sink.clean[i] for i in range(len(plate))]), summary.notes

    lossy, notes = run(step_cache=1e9)
    # One window, 3 steps: the first computes every block, the other two reuse.
    assert "pass 1: step cache (threshold 1e+09) skipped the transformer's later blocks in 2 of 3 window steps (67%)" in notes
    lossless, notes = run()  # same workdir: a lossless job must not resume from the lossy checkpoint
    assert not any("step cache" in n for n in notes)
    assert not np.array_equal(lossy, lossless)


def test_fp8_matmul_on_the_cpu_is_a_clear_error_before_any_work(pipe, bigben, tmp_path):
    plate, mask = bigben[0][:5], bigben[1][:5]
    with pytest.raises(Fp8Unsupported, match="compute capability 8.9 or newer"):
        pipe.run(_inputs(plate, mask, tmp_path / "job", fp8_matmul=True), MemorySink(), lambda p: None, lambda: False)
    assert not (tmp_path / "job" / "void_pass1.safetensors").exists()
