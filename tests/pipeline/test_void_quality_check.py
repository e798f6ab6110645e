"""`void-server quality` on tiny random weights: a sample folder in VOID's layout (BigBen's first frames, downscaled,
written as videos) goes through the lossless job and the speed options as the server runs jobs, and each option is
judged against lossless. Random weights make the figures meaningless as quality; these tests check the procedure:
what runs, what is compared with what, what passes, what is written."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
cv2 = pytest.importorskip("cv2")

from nuke_void.jobspec import SpecError  # noqa: E402
from void_server.cli import main as server_main  # noqa: E402
from void_server.pipelines.void.pipeline import VoidPipeline  # noqa: E402
from void_server.quality.check import (Report, Row, Sample, SampleError, Variant, check_quality, judge,  # noqa: E402
                                       variants, write_report)

SIZE = (64, 112)
FRAMES = 5


def _write_video(path: Path, frames: np.ndarray) -> None:
    h, w = frames.shape[1:3]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (w, h))
    assert out.isOpened()
    for f in frames:
        out.write(cv2.cvtColor(f if f.ndim == 3 else np.repeat(f[..., None], 3, -1), cv2.COLOR_RGB2BGR))
    out.release()


@pytest.fixture(scope="module")
def sample_dir(bigben, tmp_path_factory) -> Path:
    plate, quad = bigben
    folder = tmp_path_factory.mktemp("samples") / "bigben_small"
    folder.mkdir()
    _write_video(folder / "input_video.mp4", plate[:FRAMES])
    _write_video(folder / "quadmask_0.mp4", quad[:FRAMES])
    (folder / "prompt.json").write_text(json.dumps({"bg": "buildings reflecting on a calm river"}))
    return folder


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return VoidPipeline(tiny_model_dir, device="cpu", model_size=SIZE, window_frames=21)


def test_a_sample_folder_is_read_in_voids_layout(sample_dir):
    s = Sample.from_folder(sample_dir)
    assert (s.name, s.plate.name, s.quadmask.name) == ("bigben_small", "input_video.mp4", "quadmask_0.mp4")
    assert s.prompt == "buildings reflecting on a calm river"


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "input_video.mp4").unlink(), "no input_video.mp4"),
    (lambda d: (d / "quadmask_0.mp4").unlink(), "no \\*quadmask\\*.mp4"),
    (lambda d: (d / "trimask_quadmask.mp4").write_bytes(b""), "quadmask_0.mp4, trimask_quadmask.mp4"),
    (lambda d: (d / "prompt.json").unlink(), "no prompt.json"),
    (lambda d: (d / "prompt.json").write_text('{"bg": "  "}'), "missing or empty"),
    (lambda d: (d / "prompt.json").write_text("[1, 2]"), "not a JSON object"),
    (lambda d: _write_video(d / "quadmask_0.mp4", np.zeros((FRAMES - 1, 90, 136), np.uint8)),
     "is %d frames of 136x90 but quadmask_0.mp4 is %d frames of 136x90" % (FRAMES, FRAMES - 1)),
    (lambda d: _write_video(d / "quadmask_0.mp4", np.zeros((FRAMES, 90, 128), np.uint8)),
     "but quadmask_0.mp4 is %d frames of 128x90" % FRAMES),
    (lambda d: (d / "quadmask_0.mp4").write_bytes(b"not a video"), "cannot be opened as a video"),
])
def test_a_broken_sample_folder_is_named_with_what_is_wrong(sample_dir, tmp_path, breakage, message):
    import shutil

    broken = tmp_path / "s"
    shutil.copytree(str(sample_dir), str(broken))
    breakage(broken)
    with pytest.raises(SampleError, match=message):
        Sample.from_folder(broken)
    with pytest.raises(SampleError, match="is not a folder"):
        Sample.from_folder(tmp_path / "absent")


def test_variants_expand_the_step_cache_thresholds_of_the_options_that_use_one():
    assert [v.name for v in variants(["fast", "fastest"])] == ["fast", "fastest"]
    assert [v.name for v in variants(["fast", "fastest"], [0.05, 0.2])] == [
        "fast@0.05", "fast@0.2", "fastest@0.05", "fastest@0.2"]
    with pytest.raises(SpecError, match="not one of"):
        variants(["faster"])
    with pytest.raises(SpecError, match="lossless is what every option is measured against"):
        variants(["lossless", "fast"])
    # With step counts, as the node's Advanced tab sets them: lossless at fewer steps is that option alone.
    assert [v.name for v in variants(["lossless", "fastest"], [0.2], [(30, 50), (20, 25)])] == [
        "lossless 30+50 steps", "lossless 20+25 steps", "fastest@0.2 30+50 steps", "fastest@0.2 20+25 steps"]


def _row(sample, option, psnr_edit=40.0, error=None):
    return Row(sample, option, seconds=1.0, error=error,
               metrics={} if error else {"psnr_edit_db": psnr_edit, "psnr_db": psnr_edit + 6, "ssim_edit": 0.99})


def test_an_option_passes_only_at_or_over_the_bar_on_every_sample_it_ran_on_all_of():
    rows = [_row("a", "fast", 36.0), _row("b", "fast", 35.0), _row("a", "fastest", 40.0), _row("b", "fastest", 34.9),
            _row("a", "fp", error="Fp8Unsupported: no"), _row("b", "fp", 50.0)]
    fast, fastest, fp = (judge(o, rows, 35.0) for o in ("fast", "fastest", "fp"))
    assert fast.passed and fast.worst_psnr_edit_db == 35.0 and fast.worst_psnr_db == 41.0
    assert not fastest.passed and fastest.why == "edit-region PSNR under 35 dB on b"
    assert not fp.passed and "did not run on a (Fp8Unsupported: no)" == fp.why


def test_reports_are_strict_json_and_never_replace_an_earlier_one(tmp_path):
    rows = [Row("a", "lossless", 2.0), _row("a", "fast", math.inf)]
    report = Report(35.0, "reference", 42, rows, [judge("fast", rows, 35.0)])
    first = write_report(report, tmp_path)
    second = write_report(report, tmp_path)
    assert [p.name for p in first] == ["quality.json", "quality.md"]
    assert [p.name for p in second] == ["quality-2.json", "quality-2.md"]
    data = json.loads(first[0].read_text())  # strict: NaN and Infinity would not parse as written below
    assert data["rows"][1]["metrics"]["psnr_edit_db"] == "inf" and data["rows"][0]["metrics"] == {}
    assert data["verdicts"][0]["passed"] is True and data["passed"] is True
    assert "**fast: passed**" in first[1].read_text()


def test_check_runs_lossless_then_each_option_as_a_server_job_and_compares_the_clean_frames(pipe, sample_dir, tmp_path):
    logged = []
    report = check_quality(pipe, [Sample.from_folder(sample_dir)],
                           [Variant("fast", 1e-12), Variant("fast", 1.0), Variant("fastest"),
                            Variant("lossless", steps=(12, 25))],
                           tmp_path / "work", bar_db=35.0, preset="draft", log=logged.append)
    rows = {r.option: r for r in report.rows}
    assert list(rows) == ["lossless", "fast@1e-12", "fast@1", "fastest", "lossless 12+25 steps"]
    lossless, never, always, fastest, fewer = rows.values()
    # Fewer steps alone (draft's 20 -> 12): another picture, no step cache.
    assert fewer.error is None and 0 < fewer.metrics["rel_l2"] and fewer.step_cache_hit_rate is None
    assert lossless.error is None and lossless.metrics == {} and lossless.first_of_option
    # As the server reads a video plate: display-referred, said in the job's notes.
    assert any("treated as display-referred" in n for n in lossless.notes)
    # A threshold nothing stays under: the cache never skips, the picture is the lossless one exactly.
    assert never.step_cache_hit_rate == 0.0
    assert never.metrics["psnr_edit_db"] == math.inf and never.metrics["rel_l2"] == 0.0
    # The widest threshold the spec allows: steps are skipped (how many depends on the weights), the picture moves.
    assert 0 < always.step_cache_hit_rate < 1
    assert any("step cache (threshold 1)" in n for n in always.notes)
    m = always.metrics
    assert 0 < m["psnr_edit_db"] < math.inf and 0 < m["rel_l2"]
    # Outside the edit region the merge keeps the plate: the whole frame is closer than the edit region.
    assert m["psnr_db"] > m["psnr_edit_db"] and m["ssim"] > m["ssim_edit"]
    assert fastest.error is not None and "compute capability 8.9" in fastest.error  # float8 on a CPU
    verdicts = {v.option: v for v in report.verdicts}
    assert verdicts["fast@1e-12"].passed and not verdicts["fastest"].passed
    assert verdicts["fast@1"].passed == (m["psnr_edit_db"] >= 35.0)
    assert not report.passed
    assert not (tmp_path / "work" / "bigben_small").exists()  # the frames go once judged
    assert any("fast@1" in line for line in logged)


@pytest.fixture
def own_environment():
    """The command points this process's compile caches at its data dir (os.environ, as a server start does):
    put the environment back, so no later test or the processes it starts inherit a test's folder."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_the_command_runs_the_check_and_says_by_its_exit_code_whether_every_option_passed(
        tiny_model_dir, sample_dir, tmp_path, capsys, monkeypatch, own_environment):
    warmed = []  # on a GPU the command warms up first, as a server start does (on the CPU a pipeline says not to)
    monkeypatch.setattr(VoidPipeline, "warm_up_by_default", True)
    monkeypatch.setattr(VoidPipeline, "warm_up", lambda self: warmed.append(self))
    out = tmp_path / "report"
    argv = ["quality", str(sample_dir), "--model-dir", str(tiny_model_dir), "--data-dir", str(tmp_path / "data"),
            "--memory-mode", "gpu",
            "--pipeline-option", "device=cpu", "--pipeline-option", "model_size=[64,112]",
            "--pipeline-option", "window_frames=21", "--preset", "draft", "--speeds", "fast", "--step-cache", "1",
            "--out", str(out)]
    assert server_main(argv + ["--bar", "1000"]) == 1  # no lossy picture is within 1000 dB of another
    assert len(warmed) == 1
    data = json.loads((out / "quality.json").read_text())
    assert [r["option"] for r in data["rows"]] == ["lossless", "fast@1"]
    assert data["verdicts"][0]["passed"] is False and data["bar_db"] == 1000.0
    assert "fast@1: FAILED" in (out / "quality.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "quality.md"]  # the frames are gone
    assert "fast@1" in capsys.readouterr().out


def test_the_command_refuses_bad_samples_and_missing_weights_before_any_work(sample_dir, tmp_path, capsys,
                                                                             own_environment):
    assert server_main(["quality", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert server_main(["quality", str(sample_dir), "--speeds", "lossless"]) == 2
    assert "lossless is what every option is measured against" in capsys.readouterr().err
    assert server_main(["quality", str(sample_dir), "--model-dir", str(tmp_path / "no-weights")]) == 2
    assert "void-server download" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        server_main(["quality", str(sample_dir), "--step-cache", "0,0.1"])
    assert "thresholds lie in (0, 1]" in capsys.readouterr().err
    for bad in ("30,50", "30+0", "30+fifty"):
        with pytest.raises(SystemExit):
            server_main(["quality", str(sample_dir), "--steps", bad])
        assert "is not PASS1+PASS2 denoising steps" in capsys.readouterr().err
