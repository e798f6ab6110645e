"""`void-server quality`: judge the lossy speed options on sample shots, with the weights this server loads.

Random weights say nothing about a lossy option's picture (the step cache never hits on them, and any change of
math is amplified through 42 random blocks), so the judgement belongs where the real weights are. Per sample
(a folder in VOID's sample layout) the lossless job runs first, then every speed option, each as the Nuke node
would send it (`nuke_void.jobspec.build_spec`) and read as the server reads a job (`jobs.inputs.pipeline_inputs`);
each option's clean frames are compared with the lossless ones (`metrics.ClipDifference`), over the edit region
(quadmask != 255, all the pipeline may change) and the whole frame. An option passes when its edit-region PSNR
reaches the bar on every sample.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from nuke_void.jobspec import PRESETS, SPEEDS, SpecError, build_spec

from ..api.models import JobSpec
from ..jobs.inputs import pipeline_inputs
from ..jobs.layout import JobFiles
from ..media.readers import video_header
from ..media.sequences import MediaError
from ..pipelines.base import Pipeline
from ..pipelines.void.step_cache import hit_rate_from_notes
from .metrics import ClipDifference

DEFAULT_BAR_DB = 35.0  # issue #6's bar for the lossy preset, against lossless
LOSSLESS = "lossless"
Log = Callable[[str], None]


class SampleError(ValueError):
    """A sample folder that cannot be read as one; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One shot in VOID's sample layout: input_video.mp4, one *quadmask*.mp4 (0 remove, 63 overlap, 127 affected,
    255 keep) with the plate's frame count, and prompt.json {"bg": "the clean scene"}."""

    name: str
    plate: Path
    quadmask: Path
    prompt: str

    @classmethod
    def from_folder(cls, folder: Path) -> "Sample":
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise SampleError("%s is not a folder (a sample is a folder with input_video.mp4, a *quadmask*.mp4 "
                              "and prompt.json)" % folder)
        plate = folder / "input_video.mp4"
        if not plate.is_file():
            raise SampleError("%s has no input_video.mp4 (the plate)" % folder)
        masks = sorted(folder.glob("*quadmask*.mp4"))
        if len(masks) != 1:
            raise SampleError("%s has %s: a sample needs exactly one quadmask video (*quadmask*.mp4)"
                              % (folder, "no *quadmask*.mp4" if not masks else ", ".join(m.name for m in masks)))
        prompt_file = folder / "prompt.json"
        try:
            prompt = json.loads(prompt_file.read_text(encoding="utf-8")).get("bg", "")
        except FileNotFoundError:
            raise SampleError("%s has no prompt.json ({\"bg\": \"the clean scene\"})" % folder)
        except (ValueError, AttributeError) as e:
            raise SampleError("%s is not a JSON object with a \"bg\" prompt (%s)" % (prompt_file, e))
        if not isinstance(prompt, str) or not prompt.strip():
            raise SampleError("%s: \"bg\" (the clean scene's prompt) is missing or empty" % prompt_file)
        _check_videos_match(plate, masks[0])
        return cls(folder.name, plate, masks[0], prompt.strip())


def _check_videos_match(plate: Path, quadmask: Path) -> None:
    """The plate and quadmask videos agree in frame count and size (read from their headers: before any job, not
    after the minutes of a warm-up)."""
    try:
        (n_plate, *size_plate), (n_mask, *size_mask) = video_header(plate), video_header(quadmask)
    except MediaError as e:
        raise SampleError(str(e))
    if n_plate != n_mask or size_plate != size_mask:
        raise SampleError("%s is %d frames of %dx%d but %s is %d frames of %dx%d: a sample's quadmask matches its plate"
                          % (plate, n_plate, size_plate[0], size_plate[1], quadmask.name, n_mask, size_mask[0],
                             size_mask[1]))


Steps = Tuple[int, int]  # denoising steps of pass 1 and pass 2


@dataclasses.dataclass(frozen=True)
class Variant:
    """A speed option (nuke_void.jobspec.SPEEDS), its step-cache threshold and step counts optionally overridden as
    the node's Advanced tab overrides them; lossless at other step counts is the fewer-steps option alone."""

    speed: str
    step_cache: Optional[float] = None
    steps: Optional[Steps] = None

    @property
    def name(self) -> str:
        threshold = "" if self.step_cache is None else "@%g" % self.step_cache
        return self.speed + threshold + ("" if self.steps is None else " %d+%d steps" % self.steps)


REFERENCE = Variant(LOSSLESS)  # what every option is compared with


def variants(speeds: Sequence[str], step_caches: Sequence[float] = (), steps: Sequence[Steps] = ()) -> List[Variant]:
    """The options to judge: each speed as defined, with each of `step_caches` as its threshold where the speed uses
    the step cache, and at each of `steps` where given. Lossless itself is the reference: named here only with
    `steps` (the fewer-steps option alone)."""
    out: List[Variant] = []
    for speed in speeds:
        if speed not in SPEEDS:
            raise SpecError("speed '%s' is not one of %s" % (speed, ", ".join(SPEEDS)))
        if speed == LOSSLESS and not steps:
            raise SpecError("lossless is what every option is measured against: name lossy speeds (%s), or lossless "
                            "with other step counts" % ", ".join(s for s in SPEEDS if s != LOSSLESS))
        thresholds = [float(t) for t in step_caches] if step_caches and "step_cache" in SPEEDS[speed] else [None]
        out += [Variant(speed, t, n) for t in thresholds for n in (steps or [None])]
    if not out:
        raise SpecError("no speed options to judge")
    return out


class ClipFileSink:
    """A ResultSink keeping a job's clean frames and quadmask in .npy files (memory-mapped: a 4K clip is gigabytes),
    so the comparison runs after the job, outside its timing."""

    def __init__(self, folder: Path, frames: int, height: int, width: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.clean = np.lib.format.open_memmap(str(folder / "clean.npy"), "w+", np.float32, (frames, height, width, 3))
        self.quadmask = np.lib.format.open_memmap(str(folder / "quadmask.npy"), "w+", np.uint8, (frames, height, width))
        self.written = np.zeros(frames, bool)

    def write_frame(self, index: int, clean: np.ndarray, quadmask: np.ndarray,
                    layers: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.clean[index] = clean[..., :3]
        self.quadmask[index] = quadmask
        self.written[index] = True


@dataclasses.dataclass
class Row:
    """One job: a sample under one speed option (or lossless)."""

    sample: str
    option: str
    seconds: float = float("nan")
    first_of_option: bool = False  # the process's first job with these settings: its time includes compiling
    speedup: float = float("nan")  # lossless seconds / these seconds, same sample
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)  # ClipDifference.result against lossless
    step_cache_hit_rate: Optional[float] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    error: Optional[str] = None


@dataclasses.dataclass
class Verdict:
    option: str
    worst_psnr_edit_db: float  # over the samples it ran on
    worst_psnr_db: float
    worst_ssim_edit: float
    passed: bool
    why: str


@dataclasses.dataclass
class Report:
    bar_db: float
    preset: str
    seed: int
    rows: List[Row]
    verdicts: List[Verdict]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def to_json(self) -> Dict[str, object]:
        return _plain({"bar_db": self.bar_db, "bar_region": "edit", "preset": self.preset, "seed": self.seed,
                       "rows": [dataclasses.asdict(r) for r in self.rows],
                       "verdicts": [dataclasses.asdict(v) for v in self.verdicts], "passed": self.passed})


def _plain(value: object) -> object:
    """Strict JSON: NaN (nothing measured) as null, an infinite PSNR (identical frames) as the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def job_spec(sample: Sample, variant: Variant, preset: str, seed: int) -> JobSpec:
    """The spec the Nuke node would send for this sample (its files read as shared paths), validated by the server's
    model."""
    steps = variant.steps or (None, None)
    spec = build_spec(None, None, sample.prompt, plate=[str(sample.plate)], quadmask=[str(sample.quadmask)],
                      mask_mode="quadmask", preset=preset, seed=seed, shared_paths=True, speed=variant.speed,
                      step_cache=variant.step_cache, steps_pass1=steps[0], steps_pass2=steps[1],
                      client="void-server quality")
    return JobSpec.model_validate(spec)


def _run(pipeline: Pipeline, sample: Sample, variant: Variant, preset: str, seed: int, memory_mode: str,
         folder: Path) -> "tuple[Row, ClipFileSink]":
    """One timed job, its frames kept in `folder`."""
    files = JobFiles(folder, "job")
    files.create()
    notes: List[str] = []
    inputs = pipeline_inputs(job_spec(sample, variant, preset, seed), files, memory_mode, notes)
    sink = ClipFileSink(folder / "frames", len(inputs.plate), inputs.plate.height, inputs.plate.width)
    t0 = time.perf_counter()
    summary = pipeline.run(inputs, sink, lambda p: None, lambda: False)
    seconds = time.perf_counter() - t0
    files.remove()  # the passes' checkpoints: gigabytes at 4K
    if not sink.written.all():
        raise RuntimeError("the job wrote %d of %d frames" % (sink.written.sum(), len(sink.written)))
    row = Row(sample.name, variant.name, seconds, notes=notes + list(summary.notes),
              step_cache_hit_rate=hit_rate_from_notes(summary.notes))
    return row, sink


def compare(sink: ClipFileSink, reference: ClipFileSink) -> Dict[str, float]:
    """A job's clean frames against the lossless job's, the edit region from the lossless job's quadmask."""
    diff = ClipDifference()
    for i in range(len(reference.clean)):
        diff.add(sink.clean[i], reference.clean[i], reference.quadmask[i] != 255)
    return diff.result()


def check_quality(pipeline: Pipeline, samples: Sequence[Sample], options: Sequence[Variant], workroot: Path,
                  bar_db: float = DEFAULT_BAR_DB, preset: str = "reference", seed: int = 42,
                  memory_mode: str = "auto", log: Log = print) -> Report:
    """Lossless, then every option, on each sample; a job that fails becomes a row with its error (the other jobs
    still run). The frames live in `workroot` only while their sample is being judged."""
    if preset not in PRESETS:
        raise SpecError("quality preset '%s' is not one of %s" % (preset, ", ".join(sorted(PRESETS))))
    if not bar_db > 0:
        raise ValueError("the PSNR bar must be a positive number of dB, not %r" % bar_db)
    rows: List[Row] = []
    seen = set()
    for sample in samples:
        folder = workroot / sample.name
        reference: Optional[ClipFileSink] = None
        for k, variant in enumerate([REFERENCE] + list(options)):
            name = variant.name
            if k and reference is None:
                rows.append(Row(sample.name, name, error="not run: the lossless job failed"))
                continue
            log("%s: %s ..." % (sample.name, name))
            job_dir = folder / ("job%d" % k)
            try:
                row, sink = _run(pipeline, sample, variant, preset, seed, memory_mode, job_dir)
            except Exception as e:  # one option failing (float8 on a GPU without it) must not sink the others
                rows.append(Row(sample.name, name, error="%s: %s" % (type(e).__name__, e)))
                log("%s: %s failed: %s" % (sample.name, name, rows[-1].error))
                continue
            row.first_of_option = name not in seen
            seen.add(name)
            if k == 0:
                reference, lossless = sink, row
            else:
                row.metrics = compare(sink, reference)
                row.speedup = lossless.seconds / row.seconds
                del sink
                shutil.rmtree(job_dir, ignore_errors=True)  # only the lossless frames are needed again
            rows.append(row)
            log("%s: %s %.1f s%s" % (sample.name, name, row.seconds, "".join(
                ", %s %.2f" % (key, v) for key, v in row.metrics.items() if key.startswith("psnr"))))
        shutil.rmtree(folder, ignore_errors=True)
    return Report(bar_db, preset, seed, rows, [judge(o.name, rows, bar_db) for o in options])


def judge(option: str, rows: Sequence[Row], bar_db: float) -> Verdict:
    """Passed: the option ran on every sample and its edit-region PSNR reached the bar on each."""
    mine = [r for r in rows if r.option == option]
    ran = [r for r in mine if r.error is None]
    worst = {k: min((r.metrics[k] for r in ran), default=float("nan"))
             for k in ("psnr_edit_db", "psnr_db", "ssim_edit")}
    failed = [r for r in mine if r.error is not None]
    if failed:
        why = "did not run on %s (%s)" % (", ".join(r.sample for r in failed), failed[0].error)
        passed = False
    elif math.isnan(worst["psnr_edit_db"]):
        why, passed = "no edit region to judge (the quadmasks are all 255)", False
    else:
        passed = worst["psnr_edit_db"] >= bar_db
        below = [r.sample for r in ran if r.metrics["psnr_edit_db"] < bar_db]
        why = ("edit-region PSNR >= %g dB on every sample" % bar_db if passed
               else "edit-region PSNR under %g dB on %s" % (bar_db, ", ".join(below)))
    return Verdict(option, worst["psnr_edit_db"], worst["psnr_db"], worst["ssim_edit"], passed, why)


def format_report(report: Report) -> str:
    """A Markdown table per job, then the verdicts."""
    def num(v: Optional[float], fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt % v

    lines = ["| sample | option | job s | speed-up | PSNR edit dB | PSNR frame dB | SSIM edit | SSIM frame | "
             "step cache hits |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report.rows:
        m = r.metrics
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r.sample, r.option, (num(r.seconds, "%.1f") + (" *" if r.first_of_option else "")) if r.error is None
            else "failed: " + r.error.replace("|", "/"), num(r.speedup, "%.2fx"), num(m.get("psnr_edit_db"), "%.2f"),
            num(m.get("psnr_db"), "%.2f"), num(m.get("ssim_edit"), "%.4f"), num(m.get("ssim"), "%.4f"),
            "-" if r.step_cache_hit_rate is None else "%.0f%%" % (100 * r.step_cache_hit_rate)))
    lines += ["", "\\* the process's first job with these settings: its time may include loading and compiling "
              "(the lossless job's follows a warm-up on a GPU).", "",
              "Bar: edit-region PSNR >= %g dB against lossless on every sample (preset %s, seed %d)."
              % (report.bar_db, report.preset, report.seed), ""]
    for v in report.verdicts:
        lines.append("- **%s: %s** (%s; worst edit-region PSNR %s dB, whole frame %s dB, edit-region SSIM %s)" % (
            v.option, "passed" if v.passed else "FAILED", v.why, num(v.worst_psnr_edit_db, "%.2f"),
            num(v.worst_psnr_db, "%.2f"), num(v.worst_ssim_edit, "%.4f")))
    return "\n".join(lines) + "\n"


def write_report(report: Report, out: Path) -> List[Path]:
    """quality.json and quality.md in `out`; an earlier run's pair stays, this one becomes quality-2.json, ..."""
    out.mkdir(parents=True, exist_ok=True)

    def pair(n: int) -> List[Path]:
        return [out / ("quality%s.%s" % ("-%d" % n if n > 1 else "", ext)) for ext in ("json", "md")]

    n = 1
    while any(p.exists() for p in pair(n)):
        n += 1
    paths = pair(n)
    paths[0].write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n")
    paths[1].write_text(format_report(report))
    return paths
