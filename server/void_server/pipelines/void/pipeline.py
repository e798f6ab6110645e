"""`VoidPipeline`: the server's VOID pipeline (base.Pipeline), job in -> clean plate frames out.

    quadmask -> model-resolution inputs (ROI crop, colour) -> pass 1 -> pass-2 noise -> pass 2 -> plate merge

Each pass leaves a checkpoint in the job's workdir (`void_pass1.safetensors`, `void_pass2.safetensors`, tagged
with the settings that made it), so a restarted job skips finished passes; the last pass only if the job fails
after it (a finished job's results are that pass's frames). Clips of any length run: the reference
pads to at least one window (85 frames) and caps at 197; we pad the same way but lift the cap, and the denoiser
covers every latent frame with overlapping windows (denoise.py). Only the plate's own frames are written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, TypeVar, Union

import numpy as np
import torch

from ...reasoning.quadmask import build_quadmask
from ..base import (CancelCheck, PipelineInputs, PipelineSettings, PipelineUnavailable, Progress, ProgressCallback,
                    ResultSink, RunSummary, check_cancel, error_line, stage_fraction)
from ..frame_pool import on_thread
from ..stage_clock import StageClock
from . import checkpoints
from .conditioning import MODEL_SIZE, WINDOW_FRAMES, latent_frames, padded_length, prepare_mask, prepare_video
from .decoded_frames import DecodedFrames
from .denoise import WINDOW_LATENTS
from .host_copy import to_host
from .latent_noise import reference_noise_to_latents
from .loading import VoidModels
from .passes import PASS1, PASS2, PassConfig, passes_mask_latents, run_pass
from .weights import check_model_dir, resolve_layout

log = logging.getLogger(__name__)

Box = Tuple[int, int, int, int]
# The warm-up's VAE clip: the encode's first frame batch (13 frames) and a later one (8), and the decode's first
# latent, a pair after it, a pair after a pair and the trailing single latent (decode.decode_chunks): every kind of
# chunk a clip of any padded length (8k + 5 frames) runs.
VAE_WARM_UP_FRAMES = 21
# Host memory for the edit alphas the merge makes ahead (the last frames'): 64 frames of a whole 1080p box, 16 of 4K.
MERGE_AHEAD_BYTES = 512 * 2**20


@dataclasses.dataclass
class ModelInputs:
    """The job at model resolution: what both passes condition on."""

    frames: int  # the plate's frame count (what we write back)
    length: int  # padded frame count the model generates, 4k + 1
    box: Optional[Box]  # ROI crop in plate pixels, None = whole frame
    video: torch.Tensor  # (1, 3, length, H, W) in [0, 1]
    mask: torch.Tensor  # (1, 1, length, H, W) inverted quadmask
    # VAE latents of the augmented plate, set by the first pass that encodes them; later passes reuse them.
    video_latents: Optional[torch.Tensor] = None
    # The plate's augmentation noise, drawn on a thread from the job's start (None: the model adds none).
    augment_noise: Optional["Future[torch.Tensor]"] = None
    # Pass index -> that pass's mask latents, encoded together before the first pass that runs (or being encoded on a
    # rank group's second GPU).
    mask_latents: Dict[int, Union[torch.Tensor, "Future[torch.Tensor]"]] = dataclasses.field(default_factory=dict)
    # The passes' checkpoints being written, waited for before the job ends.
    checkpoints: checkpoints.CheckpointWriter = dataclasses.field(default_factory=checkpoints.CheckpointWriter)
    # The last pass's checkpoint, written only if the job fails after that pass (VoidPipeline._pass, `last`).
    unsaved: Optional[Callable[[], object]] = None

    def save_unsaved(self) -> None:
        save, self.unsaved = self.unsaved, None
        if save is not None:
            save()

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.length)


T = TypeVar("T")


def on_models_device_thread(name: str, device: torch.device, fn: Callable[..., T], *args) -> "Future[T]":
    """`on_thread`, with `device` the new thread's current GPU: a thread starts on cuda:0, and a server slot's
    models may sit on another GPU (jobs/pipeline_host.on_device sets it for the job's own thread)."""
    def run() -> T:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            return fn(*args)

    return on_thread(name, run)


class VoidPipeline:
    name = "void"
    label = "VOID"

    def __init__(self, model_dir: Path, device: Optional[str] = None, memory_mode: str = "auto",
                 model_size: Tuple[int, int] = MODEL_SIZE, window_frames: int = WINDOW_FRAMES,
                 reasoner: Optional[object] = None, compile_blocks: Optional[bool] = None, gpus: int = 1,
                 rank_timeout_s: float = 600.0, compile_vae: Optional[str] = None, attention: str = "auto",
                 vae_unit: Optional[str] = None, decode_cut: Union[int, str, None] = None,
                 cuda_graphs: Optional[bool] = None, remote_vlm: Optional[object] = None,
                 transformer_unit: Optional[str] = None, vae_rewrites: Optional[bool] = None) -> None:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.layout = resolve_layout(Path(model_dir))
        self.models = VoidModels(self.layout, dev, memory_mode, compile_blocks=compile_blocks, compile_vae=compile_vae,
                                 attention=attention, vae_unit=vae_unit, cuda_graphs=cuda_graphs,
                                 vae_rewrites=vae_rewrites,
                                 # a rank group's sequence parallelism swaps the blocks' processors: not precompiled
                                 transformer_unit=transformer_unit or (None if int(gpus) <= 1 else "compiled"))
        self.model_size = (int(model_size[0]), int(model_size[1]))
        self.window_frames = int(window_frames)
        self.reasoner = reasoner
        self.remote_vlm = remote_vlm  # reasoning.remote_vlm.RemoteVLMConfig: the auto mode asks it, not a local VLM
        self._raft = None
        self._second = self._second_vae(int(gpus), decode_cut)  # before the ranks start: a bad cut fails at once
        self._group = self._rank_group(int(gpus), rank_timeout_s)

    @classmethod
    def from_config(cls, config: object) -> "VoidPipeline":
        """From the server's config (model_dir, device, memory_mode; options may set model_size, window_frames).
        Raises PipelineUnavailable naming `void-server download` when weights are missing."""
        options = dict(getattr(config, "options", None) or {})
        model_dir = Path(getattr(config, "model_dir", Path("~/.void/models"))).expanduser()
        problems = check_model_dir(model_dir)
        if problems:
            raise PipelineUnavailable("VOID weights are not usable:\n  " + "\n  ".join(problems))
        data_dir = getattr(config, "data_dir", None)
        if data_dir is not None:
            from .accel import compile_cache_dir

            # Kept across restarts: a warm start skips the block compilation (docs/performance.md).
            compile_cache_dir(Path(data_dir) / "compile-cache")
        return cls(
            model_dir,
            device=getattr(config, "device", None) or options.get("device"),
            memory_mode=getattr(config, "memory_mode", None) or "auto",
            model_size=tuple(options.get("model_size", MODEL_SIZE)),
            window_frames=int(options.get("window_frames", WINDOW_FRAMES)),
            compile_blocks=options.get("compile"),
            compile_vae=options.get("compile_vae"),
            vae_unit=options.get("vae_unit"),
            vae_rewrites=_bool_option(options, "vae_rewrites"),
            transformer_unit=options.get("transformer_unit"),
            attention=str(options.get("attention", "auto")),
            gpus=int(getattr(config, "gpus_per_worker", 1) or 1),
            rank_timeout_s=float(options.get("rank_timeout_s", 600.0)),
            decode_cut=options.get("decode_cut"),
            cuda_graphs=_cuda_graphs_option(_bool_option(options, "cuda_graphs"),
                                            int(getattr(config, "concurrency", 1) or 1)),
            remote_vlm=_remote_vlm_option(options),
        )

    def _rank_group(self, gpus: int, timeout_s: float):
        """gpus > 1: the denoising loops run over that many devices (parallel/group.py); the workers start now."""
        if gpus <= 1:
            return None
        from .parallel.group import RankGroup, RankGroupError

        try:
            group = RankGroup(self.layout.root, gpus, self.models.device, self.models.placement.mode,
                              self.models.compile_blocks, timeout_s=timeout_s,
                              attention=self.models.attention or "sdpa", fuse_gelu=self.models.fuse_gelu,
                              cuda_graphs=self.models.cuda_graphs)
            group.start()
        except (ValueError, RankGroupError) as e:
            raise PipelineUnavailable("multi-GPU pipeline (gpus_per_worker=%d) cannot start: %s" % (gpus, e))
        return group

    def _second_vae(self, gpus: int, cut: Union[int, str, None]):
        """In a rank group whose models are resident: the VAE's work the second GPU takes (parallel/second_vae.py).
        `cut` "none" (or 0) keeps every VAE call on the first GPU."""
        off = cut is not None and str(cut).lower() in ("none", "0")
        if gpus <= 1 or self.models.placement.mode not in ("gpu", "fp8") or off:
            return None
        from .parallel.group import rank_device
        from .parallel.second_vae import DEFAULT_CUT, SecondVae

        try:
            return SecondVae(self.models, rank_device(self.models.device, 1), DEFAULT_CUT if cut is None else cut)
        except ValueError as e:
            raise PipelineUnavailable("pipeline option decode_cut=%s: %s" % (cut, e))

    def close(self) -> None:
        """Stop the other ranks' processes and the second GPU's VAE (a multi-GPU pipeline); the pipeline is not used
        afterwards."""
        self.models.wait_for_decoder()
        if self._second is not None:
            self._second.close()
        if self._group is not None:
            self._group.shutdown()
        if self.models.cuda_graphs:
            # torch keeps recorded CUDA graphs and their memory pool per thread, past the modules they ran: a reload
            # after running out of memory (on the job's thread, jobs/pipeline_host.py) must not find them holding it.
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees

            reset_cudagraph_trees()

    def describe(self) -> Dict[str, object]:
        out = dict(self.models.describe(), pipeline=self.name, label=self.label, model_size=list(self.model_size))
        if self._group is not None:
            out["parallel"] = dict(self._group.describe(), **(self._second.describe() if self._second else {}))
        if self.warmed_up is not None:
            out["warm_up_s"] = self.warmed_up
        return out

    # -- warm-up -----------------------------------------------------------------------------------------------

    warmed_up: Optional[Dict[str, float]] = None  # warm_up()'s stage times, once it ran

    @property
    def warm_up_by_default(self) -> bool:
        """On a GPU the server warms up before it says ready: loading and compiling are minutes cold."""
        return self.models.device.type == "cuda"

    @torch.no_grad()
    def warm_up(self, pin_text_ahead: bool = True, import_compiler_ahead: bool = True,
                defer_decoder: bool = True, encode_beside_loading: bool = False) -> Dict[str, float]:
        """Load every model a job uses and compile every graph of a one-window job, on inputs of zeros, so the
        first job runs at full speed; a warm compile cache (DATA_DIR/compile-cache) makes this much shorter.
        Runs the VAE's encode and decode of a short clip (`_warm_up_encode`, `_warm_up_decode`: their graphs serve
        every clip length), one denoising step of each pass (`_warm_up_passes`), T5 on the guidance's empty prompt
        (kept: pass 2 uses it), loads RAFT and warps the default pass-2 noise one step (`_warm_up_noise`). Clips
        longer than one window compile their other window length, and aligned noise its warp size, on first use.

        Returns seconds per stage, `load` the weights' (its sub-stages per model). With a warm compile cache the
        VAE's graphs and the transformers' blocks are loaded, not traced (precompiled.py). `pin_text_ahead` False
        pins T5's host copy at the text stage instead of beside the VAE; `import_compiler_ahead` and
        `encode_beside_loading`: `_warm_up_load`. `defer_decoder` (where the VAE is precompiled on one GPU and its
        encoder's functions came from disk) warms the decoder up on a thread that starts as this returns: a job
        first decodes after its pass-1 loop, ~10 s of GPU work in which the job's thread mostly waits on the GPU,
        and waits for that thread only if it is still running then (`VoidModels.wait_for_decoder`). A cold decoder
        builds for a minute or more, which the warm-up itself waits for (fifteenth session: ready 7.9-8.7 s after
        loading against 10.4-11.1 s with the decoder inline, on one H100)."""
        clock = StageClock()
        m = self.models
        encoded = self._warm_up_load(clock, import_compiler_ahead, encode_beside_loading)
        # T5's 9.5 GB pinned beside the VAE's warm-up, not beside the transformers' reading: both copy from the
        # page cache (with the pinning beside them the two took 5.1-5.3 s on an H100, 2.5-3.3 s alone on another).
        parked_text = self._pin_text_encoder_ahead() if pin_text_ahead else None
        m.wait_for_decoder()  # a warm-up again (the bench's) after a deferred one: not two at once
        with clock("vae"):
            if not encoded:
                self._warm_up_encode()
            defer = defer_decoder and self._vae_warms_apart() and self._compile_cache_is_warm()
            if not defer:
                self._warm_up_decode()
        with clock("text"):
            if parked_text is not None:
                parked_text.result()
            _, empty = m.prompt_embeddings(PASS2.negative_prompt)
        self._warm_up_passes(clock, empty)
        self._warm_up_noise(clock)
        if defer:
            m.decoder_warming = on_models_device_thread("void-warm-decoder", m.device, self._warm_up_decode)
        self.warmed_up = clock.timings
        return self.warmed_up

    def _warm_up_load(self, clock: StageClock, import_compiler_ahead: bool, encode_beside_loading: bool) -> bool:
        """Every model's weights (stage `load`, per model). `import_compiler_ahead` imports torch's compiler stack
        (accel.import_compiler: seconds of Python the first compiled call would otherwise run) on a thread beside
        the transformers' reading, which is one copy per file and holds no GIL (H100, fourteenth session: ready
        25.9-27.8 s after the process started against 28.9-32.3 s). `encode_beside_loading` (opt-in, not yet
        measured on a GPU) runs the encoder's warm-up on that thread too, after the import: the VAE's first compiled
        calls pay torch's one-time set-up of its compiled-code runtime (most of the VAE stage's 4.8-5.2 s on an
        H100). Returns whether the encoder is warm."""
        from .accel import import_compiler

        m = self.models
        loading = clock.child("load")
        with clock("load"):
            with loading("vae"):
                m.vae
            with loading("text"):
                m.text
            ahead = import_compiler_ahead and (m.compile_blocks or m.compile_vae != "none")
            encode_early = ahead and encode_beside_loading and self._vae_warms_apart()

            def early() -> None:
                import_compiler()
                if encode_early:
                    self._warm_up_encode()

            compiler = on_models_device_thread("void-import-compiler", m.device, early) if ahead else None
            with loading("transformers"):
                m.load_resident_transformers()
        if compiler is None:
            return False
        with clock("import_compiler"):  # what is left of it
            try:
                compiler.result()
            except Exception as exc:  # noqa: BLE001 - only time is at stake: the VAE stage does it again
                log.warning("importing torch's compiler%s ahead failed (%s); done when first needed",
                            " and warming the encoder up" if encode_early else "", error_line(exc))
                return False
        return encode_early

    def _vae_warms_apart(self) -> bool:
        """Whether the VAE's warm-up may leave the caller's thread (the encoder's beside the loading, the decoder's
        behind ready): it is compiled, stays put on one GPU (an offload mode moves it for each use) and has no
        second GPU's decode plan (whose stages run on both GPUs)."""
        m = self.models
        return m.compile_vae != "none" and m.placement.mode == "gpu" and self._second is None

    def _warm_up_passes(self, clock: StageClock, empty: torch.Tensor) -> None:
        """One denoising step of each pass (stages `pass1`, `pass2`), through the rank group when there is one, so
        every rank compiles its own shapes."""
        from .denoise import denoise

        m, dev = self.models, self.models.device
        t_lat, (h, w) = latent_frames(self.window_frames), (self.model_size[0] // 8, self.model_size[1] // 8)
        for cfg in (PASS1, PASS2):
            with clock("pass%d" % cfg.index):
                transformer = m.transformer(cfg.index)
                latents = torch.zeros((1, t_lat, 16, h, w), device=dev, dtype=m.dtype)
                inpaint = torch.zeros((1, t_lat, 32, h, w), device=dev, dtype=m.dtype)
                guided = cfg.guidance > 1.0
                run = denoise if self._group is None else functools.partial(self._group.denoise, cfg.index)
                with m.placement.use(transformer):
                    run(transformer, m.scheduler(cfg.scheduler), latents, inpaint, empty, empty if guided else None,
                        cfg.guidance, 1, t_lat)

    def _warm_up_noise(self, clock: StageClock) -> None:
        """RAFT loaded, its CUDA graphs for the reference noise's flows captured (stage `raft`), and the reference
        noise's warp step compiled (stage `noise_warp`, on a GPU only: a CPU step at this size is ~20 s of
        nothing). Nothing where the model dir has no RAFT weights."""
        if self.layout.raft is None or not self.layout.raft.is_file():
            return
        from .warped_noise import warm_up_reference_flow, warm_up_reference_warp

        with clock("raft"):
            warm_up_reference_flow(self._raft_model())
        if self.models.device.type == "cuda":
            with clock("noise_warp"):
                warm_up_reference_warp(self.models.device)

    def _compile_cache_is_warm(self) -> bool:
        """Every precompiled function this process has used so far came from disk (at a first warm-up: the
        encoder's, just now; the store is shared, so a later warm-up also counts the transformers'): the decoder's
        most likely will too, in seconds. In a cold cache the decoder builds for a minute or more, which the
        warm-up waits for rather than hand it to the first job; torch.compile's units (`vae_unit`) cannot tell."""
        from . import precompiled

        wrappers = precompiled.wrappers(self.models.vae)
        return (bool(wrappers) and not any(w.fell_back for w in wrappers)
                and all(event == "loaded" for _, event in precompiled.events(self.models.vae)))

    @torch.no_grad()
    def _warm_up_encode(self) -> None:
        """An encode of a `VAE_WARM_UP_FRAMES` clip (and `_warm_up_decode`, a decode of its latents): every graph
        of the VAE any job runs, traced and compiled (the second GPU's too, in a rank group). The compiled parts see
        their chunks with canonical strides (precompiled.contiguous_inputs), so the graphs do not depend on the
        clip's length, and the shortest clip that holds every kind of chunk readies them all for a quarter of a
        window's GPU work."""
        from .conditioning import vae_encode

        m, dev = self.models, self.models.device
        clip = (1, 3, VAE_WARM_UP_FRAMES) + self.model_size
        with m.placement.use(m.vae):
            vae_encode(m.vae, torch.zeros(clip, device=dev))
        if self._second is not None:  # its encoder's graphs: pass 2's mask and the plate
            self._second.encode_mask(PASS2, torch.zeros((1, 1) + clip[2:], device=dev))
            self._second.encode_plate(torch.zeros(clip, device=dev), 0, None).result()

    @torch.no_grad()  # grad mode is per thread, and part of a precompiled function's key
    def _warm_up_decode(self) -> None:
        """A decode of the short clip's latents (see `_warm_up_encode`); on a thread of its own behind ready where
        `warm_up` defers it."""
        from .decode import decode_latents

        m = self.models
        latents = (1, latent_frames(VAE_WARM_UP_FRAMES), 16, self.model_size[0] // 8, self.model_size[1] // 8)
        with m.placement.use(m.vae):
            decode_latents(m.vae, torch.zeros(latents, device=m.device, dtype=m.dtype), pipelined=self._decode_plan())

    def _pin_text_encoder_ahead(self) -> Optional["Future[object]"]:
        """Where T5 waits in host memory between prompts (models.park_text_encoder), its 9.5 GB are pinned once,
        ~6 s: on a thread, so the warm-up's VAE compilation runs meanwhile. None where T5 is not parked."""
        m = self.models
        if not m.park_text_encoder:
            return None
        encoder = m.text[1]  # loaded on the caller's thread: only the pinning goes to the new one
        return on_thread("void-pin-t5", m.placement.host_copy, encoder)

    # -- the job -----------------------------------------------------------------------------------------------

    def run(self, inputs: PipelineInputs, sink: ResultSink, progress: ProgressCallback,
            should_cancel: CancelCheck) -> RunSummary:
        notes: List[str] = []
        clock = StageClock()

        augment_noise = self._draw_augmentation_noise(inputs)  # CPU seconds, overlapping the two stages below
        # The auto mask mode's quadmask stage runs the reasoning models on the GPU: T5 waits until they are done.
        reasoning = inputs.settings.mask_mode == "auto"
        prompt = None if reasoning else self._embed_prompt_ahead(inputs)
        writer = checkpoints.CheckpointWriter()  # the job's writes, the quadmask's seal first
        try:
            with clock("quadmask"):
                quadmask = self._quadmask(inputs, notes, progress, writer)
            if reasoning:
                prompt = self._embed_prompt_ahead(inputs)
            with clock("model_inputs"):
                job = self._model_inputs(inputs, quadmask, writer)
                job.augment_noise = augment_noise
        except BaseException:
            with contextlib.suppress(Exception):  # their own errors are beside the point
                if prompt is not None:  # T5 off the GPU before the next job starts
                    prompt.result()
            with contextlib.suppress(Exception):
                writer.wait()  # the quadmask's checkpoint sealed before a retry looks for it
            raise
        with clock("prompt"):  # what is left of it: T5 is off the GPU again before the VAE's first encode
            if prompt is not None:
                prompt.result()
        check_cancel(should_cancel)

        try:
            merging = self._passes(inputs, quadmask, job, sink, progress, should_cancel, clock, notes)
            with clock("merge"):  # what is left of the merge once the last pass has decoded
                written = merging.result()
        except BaseException:
            with contextlib.suppress(Exception):  # its own error, if any, is a consequence of this one
                job.save_unsaved()  # the last pass too, if it finished: a restart resumes after it
                job.checkpoints.wait()  # a failed job's finished passes are on disk for its restart
            raise
        with clock("checkpoints"):  # what is left of their writing
            job.checkpoints.wait()
        return RunSummary(frames_written=written, notes=notes, timings=clock.timings)

    def _passes(self, inputs: PipelineInputs, quadmask: np.ndarray, job: ModelInputs, sink: ResultSink,
                progress: ProgressCallback, should_cancel: CancelCheck, clock: StageClock,
                notes: List[str]) -> "Future[int]":
        """Pass 1, the pass-2 noise and pass 2; returns the merge, running on its thread. The last pass's frames go
        to it as the VAE decodes them (decoded_frames.py), so the merge overlaps that decode."""
        s = inputs.settings
        final = DecodedFrames()
        merging: Optional["Future[int]"] = None
        try:
            if s.passes < 2:
                merging = self._start_merge(inputs, quadmask, job, final, None, sink, progress, should_cancel)
            with clock("pass1"):
                pass1 = self._pass(inputs, job, PASS1, s.steps_pass1, 1.0, None, progress, should_cancel,
                                   clock.child("pass1"), notes, on_decoded=final.add if s.passes < 2 else None,
                                   last=s.passes < 2)
            last = pass1
            if s.passes >= 2:
                with clock("pass2_noise"):
                    noise = self._pass2_noise(job, pass1, s, notes)
                merging = self._start_merge(inputs, quadmask, job, final, pass1 if s.keep_pass1 else None, sink,
                                            progress, should_cancel)
                with clock("pass2"):
                    last = self._pass(inputs, job, PASS2, s.steps_pass2, s.guidance_pass2, noise, progress,
                                      should_cancel, clock.child("pass2"), notes, on_decoded=final.add, last=True)
            final.fill(last)  # a pass resumed from its checkpoint decoded nothing
        except BaseException:
            final.close()  # the merge thread stops waiting for frames that will not come...
            if merging is not None:
                _wait_quietly(merging)  # ...and stops writing before the job's failure is handled
            raise
        final.close()
        return merging

    # -- stages ------------------------------------------------------------------------------------------------

    def _report(self, progress: ProgressCallback, stage: str, step: int, total: int, passes: int, message: str = "") -> None:
        progress(Progress(stage=stage, step=step, total_steps=total, message=message,
                          fraction=stage_fraction(stage, step / float(max(total, 1)), passes)))

    def _quadmask(self, inputs: PipelineInputs, notes: List[str], progress: ProgressCallback,
                  writer: checkpoints.CheckpointWriter) -> np.ndarray:
        """The quadmask stage; its checkpoint is flushed to disk on `writer`'s thread while the job goes on."""
        passes = inputs.settings.passes
        reasoner = self._reasoner(inputs.settings, notes)
        try:
            return build_quadmask(inputs, reasoner, notes,
                                  on_frame=lambda i, n: self._report(progress, "quadmask", i + 1, n, passes),
                                  seal_later=writer.later)
        finally:
            # The VLM and SAM2 stay resident only where everything fits ("gpu" mode); else the diffusion passes
            # get their memory back.
            if self.reasoner is not None and self.models.placement.mode != "gpu":
                self.reasoner.unload()
                self.reasoner = None

    def _reasoner(self, settings: PipelineSettings, notes: List[str]) -> Optional[object]:
        """The auto mask mode's VLM + SAM2, loaded on first use from the model dir."""
        if settings.mask_mode != "auto":
            return None
        if self.reasoner is None:
            from ...reasoning.auto import AutoReasoner

            backend = None
            if self.remote_vlm is not None:
                from ...reasoning.remote_vlm import OpenAICompatibleVLM

                backend = OpenAICompatibleVLM(self.remote_vlm)
            try:
                self.reasoner = AutoReasoner.from_model_dir(self.layout.root, device=str(self.models.device),
                                                            vlm_backend=backend)
            except FileNotFoundError as e:
                notes.append("auto mask mode unavailable: %s" % e)
                return None
        settings_of = getattr(self.reasoner, "settings", None)
        if settings_of is not None:
            settings_of.input_encoding = settings.input_encoding
        return self.reasoner

    def _model_inputs(self, inputs: PipelineInputs, quadmask: np.ndarray,
                      writer: checkpoints.CheckpointWriter) -> ModelInputs:
        """Plate and quadmask -> model resolution: ROI crop, display-referred colour, area stretch, ping-pong pad.
        Frames are read and cropped on the host; the colour conversion and resize run on the GPU where every model
        is resident (the "gpu" and "fp8" memory modes: 2.2 s of a 1080p job in numpy on 16 cores, 0.5 s so,
        docs/performance.md), else on the CPU, so the offload modes' memory stays what it was. A rank group's
        second GPU starts on pass 2's mask latents once the mask is ready."""
        from .roi import choose_roi

        plate = inputs.plate
        n = len(plate)
        box = choose_roi(quadmask, self.model_size, enabled=inputs.settings.roi)
        x0, y0, x1, y1 = box if box is not None else (0, 0, plate.width, plate.height)
        length = self._padded_length(n)
        encoding = inputs.settings.input_encoding
        device = self.models.placement.load_device
        mask = prepare_mask(_Lazy(lambda i: quadmask[i][y0:y1, x0:x1], n), self.model_size, length, device)
        ahead = {}
        if self._second is not None and inputs.settings.passes >= 2:  # on the second GPU while the plate is read
            ahead[PASS2.index] = self._second.encode_mask(PASS2, mask)
        video = prepare_video(_Lazy(lambda i: plate[i][y0:y1, x0:x1, :3], n), self.model_size, length, encoding, device)
        return ModelInputs(frames=n, length=length, box=box, video=video, mask=mask, mask_latents=ahead,
                           checkpoints=writer)

    def _padded_length(self, frames: int) -> int:
        """Frames the model generates for the plate's: at least one window, no reference cap (windows cover all)."""
        return padded_length(frames, self.window_frames, max_frames=None)

    def _embed_prompt_ahead(self, inputs: PipelineInputs) -> Optional["Future[object]"]:
        """The job's prompt through T5 on a thread, while the host reads the quadmask and the plate: a new prompt
        otherwise costs T5's 9.5 GB lent to the GPU from pinned host memory, and its forward, at the start of pass
        1 (the benches' jobs repeat one prompt and never showed it). Only where T5 waits in host memory between
        prompts (`park_text_encoder`: the gpu and fp8 modes); elsewhere the passes embed it as before."""
        if not self.models.park_text_encoder:
            return None
        return on_models_device_thread("void-embed-prompt", self.models.device, self.models.prompt_embeddings,
                                       inputs.settings.prompt)

    def _draw_augmentation_noise(self, inputs: PipelineInputs) -> Optional["Future[torch.Tensor]"]:
        """Pass 1's conditioning noise depends only on the clip's model-resolution shape and the seed, and the CPU
        generator the parity contract fixes makes it slow: start it now, on its own thread."""
        if not self.models.add_noise:
            return None
        from .conditioning import augmentation_noise

        length = self._padded_length(len(inputs.plate))
        return on_thread("void-augment-noise", augmentation_noise, (1, 3, length) + self.model_size,
                          inputs.settings.seed)

    def _checkpoint_tag(self, inputs: PipelineInputs, job: ModelInputs, cfg: PassConfig, steps: int, guidance: float) -> str:
        s = inputs.settings
        key = dict(pass_index=cfg.index, prompt=s.prompt, seed=s.seed, steps=steps, guidance=guidance,
                   noise_mode=s.noise_mode if cfg.index == 2 else None, box=job.box, length=job.length,
                   size=self.model_size, window=self.window_frames, passes=s.passes)
        # Lossy options are job-wide (a lossy pass 1 changes pass 2's input too); keyed only when on, so lossless
        # tags stay what they were and a lossy checkpoint is never taken for a lossless one.
        if s.step_cache:
            key["step_cache"] = float(s.step_cache)
        if s.fp8_matmul:
            key["fp8_matmul"] = True
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def _pass(self, inputs: PipelineInputs, job: ModelInputs, base: PassConfig, steps: int, guidance: float,
              noise: Optional[torch.Tensor], progress: ProgressCallback, should_cancel: CancelCheck,
              clock: Optional[StageClock] = None, notes: Optional[List[str]] = None,
              on_decoded: Optional[Callable[[int, torch.Tensor], None]] = None,
              last: bool = False) -> torch.Tensor:
        """One pass (checkpointed): -> decoded frames (1, 3, length, H, W) float32 in [0, 1] (on the CPU, or where
        they were decoded for the `last` pass). `on_decoded` gets them chunk by chunk as they decode (not when the
        pass is resumed from its checkpoint). The job's `last` pass is checkpointed only if the job fails after it
        (`ModelInputs.unsaved`): a finished job's results are its frames, and copying the video to the host and
        writing it (263 MB at 85 frames) was the tail of every job (0.1-0.5 s)."""
        stage = "pass%d" % base.index
        cfg = dataclasses.replace(base, steps=steps, guidance=guidance, step_cache=inputs.settings.step_cache,
                                  fp8_matmul=inputs.settings.fp8_matmul)
        tag = self._checkpoint_tag(inputs, job, cfg, steps, guidance)
        path = inputs.workdir / ("void_%s.safetensors" % stage)
        if checkpoints.tag_of(path) == tag:
            self._report(progress, stage, steps, steps, inputs.settings.passes, "resumed from checkpoint")
            saved = checkpoints.read(path)
            if job.video_latents is None:
                job.video_latents = saved.get("video_latents")
            return saved["video"]
        passes = inputs.settings.passes
        self._report(progress, stage, 0, steps, passes)
        clock = clock or StageClock()
        noise_ahead = job.augment_noise.result if job.augment_noise is not None else None
        plate = None
        if self._second is not None and job.video_latents is None:  # on the second GPU beside the mask's encode
            plate = self._second.encode_plate(job.video, inputs.settings.seed, noise_ahead)
        self._encode_masks(job, base.index, passes, clock)
        if plate is not None:
            with clock("plate"):
                job.video_latents = plate.result()
        window = latent_frames(self.window_frames)
        result = run_pass(self.models, cfg, job.video, job.mask, inputs.settings.prompt, inputs.settings.seed,
                          initial_noise=noise, window=window,
                          on_step=lambda i, n: self._report(progress, stage, i, n, passes),
                          should_cancel=should_cancel, video_latents=job.video_latents, clock=clock,
                          denoiser=None if self._group is None else functools.partial(self._group.denoise, base.index),
                          augment_noise=noise_ahead if job.video_latents is None else None,
                          mask_latents=_result(job.mask_latents.pop(base.index, None)), on_decoded=on_decoded,
                          pipelined_decode=self._decode_plan())
        job.video_latents = result.video_latents
        if result.step_cache is not None and notes is not None:
            notes.append(result.step_cache.note("pass %d" % base.index))
        # (the writer, not the job: the job holding a closure over itself would keep the pass's GPU tensors alive
        # after the job until the cyclic collector ran; an H100 run's peak grew 0.5 GiB a job so)
        save = functools.partial(self._save_pass, job.checkpoints, path, tag, result, clock)
        if last:
            job.unsaved = save
            return result.video
        return save()

    @staticmethod
    def _save_pass(writer: checkpoints.CheckpointWriter, path: Path, tag: str, result: object,
                   clock: StageClock) -> torch.Tensor:
        """A finished pass's frames on the host (through page-locked memory: 251 MB took 0.24 s into pageable memory
        on an H100, 5 ms so), and its checkpoint handed to a writer thread (the job goes on)."""
        video = to_host(result.video.float())
        with clock("checkpoint"):
            writer.write(path, {"video": video, "latents": result.latents.float().cpu().contiguous(),
                                "video_latents": result.video_latents.cpu().contiguous()}, tag)
        return video

    def _encode_masks(self, job: ModelInputs, first: int, passes: int, clock: StageClock) -> None:
        """The mask latents of pass `first` and every later pass, encoded now, before pass `first` encodes its plate:
        the plate's augmentation noise may still be drawn on its thread meanwhile, and a later pass's mask (which
        depends on nothing a pass makes) then costs no time of its own. (A rank group's second GPU has pass 2's
        under way already, `_model_inputs`.)"""
        todo = [c for c in (PASS1, PASS2)[:passes] if c.index >= first and c.index not in job.mask_latents]
        if not todo:
            return
        with clock("masks"), self.models.placement.use(self.models.vae):
            job.mask_latents.update(passes_mask_latents(self.models.vae, todo, job.mask))

    def _decode_plan(self) -> Optional[Tuple[object, Union[int, str]]]:
        """decode_latents' `pipelined`: the decode split over the rank group's first two GPUs, where there is one."""
        return None if self._second is None else self._second.decode_plan

    def _raft_model(self):
        from .flow import load_raft

        if self._raft is None:
            if self.layout.raft is None or not self.layout.raft.is_file():
                raise PipelineUnavailable("pass 2 needs the RAFT weights %s: run `void-server download --model-dir %s`"
                                          % (self.layout.root / "raft_large_C_T_SKHT_V2-ff5fadd5.pth", self.layout.root))
            # In a rank group, on the second GPU (idle while rank 0 makes the noise): RAFT then computes the flows
            # beside the warp instead of sharing one GPU with it (docs/performance.md).
            self._raft = load_raft(self.layout.raft, self._raft_device())
        return self._raft

    def _raft_device(self) -> torch.device:
        if self._group is None:
            return self.models.device
        from .parallel.group import rank_device

        return rank_device(self.models.device, 1)

    def _pass2_noise(self, job: ModelInputs, pass1: torch.Tensor, s: PipelineSettings, notes: List[str]) -> torch.Tensor:
        """Flow-warped noise from the pass-1 result, (1, T_lat, 16, h, w). "reference" reproduces the reference's
        noise (one window's worth, under-scaled, centre-cropped); clips longer than one window need noise for
        every latent frame, which only the aligned variant gives, so they use it."""
        from .warped_noise import aligned_warped_noise, reference_warped_noise

        t_lat, (h, w) = job.latent_frames, (self.model_size[0] // 8, self.model_size[1] // 8)
        raft = self._raft_model()
        frames = pass1[0].permute(1, 0, 2, 3)  # (T, 3, H, W), every padded frame
        gen = torch.Generator("cpu").manual_seed(s.seed)
        mode = s.noise_mode
        if mode == "reference" and t_lat > WINDOW_LATENTS:
            notes.append("pass 2: the reference's warped noise covers one %d-frame window; this %d-frame clip uses "
                         "aligned noise for all %d latent frames" % (WINDOW_FRAMES, job.frames, t_lat))
            mode = "aligned"
        dev = self.models.device  # the warp's, wherever RAFT runs
        if mode == "reference":
            return reference_noise_to_latents(reference_warped_noise(frames, raft, gen, device=dev), t_lat, h, w)
        if mode == "aligned":
            return aligned_warped_noise(frames, raft, t_lat, (h, w), gen, device=dev).float().cpu().unsqueeze(0)
        raise ValueError("unknown noise mode %r (reference, aligned)" % mode)

    def _start_merge(self, inputs: PipelineInputs, quadmask: np.ndarray, job: ModelInputs, final: DecodedFrames,
                     pass1: Optional[torch.Tensor], sink: ResultSink, progress: ProgressCallback,
                     should_cancel: CancelCheck) -> "Future[int]":
        """`_merge` on a thread of its own, taking each frame of the last pass as it arrives in `final`."""
        return on_thread("void-merge", self._merge, inputs, quadmask, job, final, pass1, sink, progress,
                          should_cancel)

    def _merge(self, inputs: PipelineInputs, quadmask: np.ndarray, job: ModelInputs, final: DecodedFrames,
               pass1: Optional[torch.Tensor], sink: ResultSink, progress: ProgressCallback,
               should_cancel: CancelCheck) -> int:
        """Model frames -> plate resolution, written frame by frame; pixels outside the edit region are the plate's."""
        from ..frame_pool import ordered_map
        from .merge import COMPUTE, edit_region, merge_layers, plate_box

        encoding = inputs.settings.input_encoding
        passes = inputs.settings.passes

        # Plain numpy views, made once: the merge threads then do numpy/OpenCV work only.
        pass1_np = pass1.float().numpy() if pass1 is not None else None

        # The last frames' edit alphas, made now, while the GPU denoises: those frames are merged after the last
        # decode, the job's tail. Bounded by their size at most (the whole box in float32).
        box = plate_box(job.box, inputs.plate.width, inputs.plate.height)
        ahead = min(job.frames, MERGE_AHEAD_BYTES // max(4 * (box[2] - box[0]) * (box[3] - box[1]), 1))
        first = job.frames - ahead
        regions = dict(zip(range(first, job.frames), ordered_map(
            lambda k: edit_region(quadmask[first + k], job.box, self.model_size[1]), ahead)))

        def merged(i: int):
            plate = np.asarray(inputs.plate[i], dtype=np.float32)
            q = np.asarray(quadmask[i])
            generated = [final.frame(i)] + ([_hwc(pass1_np, i)] if pass1_np is not None else [])
            region = regions.pop(i, COMPUTE)
            merged_layers = [m[..., :3] for m in merge_layers(plate, generated, q, job.box, encoding, region=region)]
            layers = {"pass1": merged_layers[1]} if pass1_np is not None else None
            return np.ascontiguousarray(merged_layers[0], dtype=np.float32), q.astype(np.uint8), layers

        # Frames are merged in parallel and handed to the sink in order (the EXR sink writes them on threads of its
        # own, media/sink.py).
        for i, (clean, q, layers) in enumerate(ordered_map(merged, job.frames)):
            check_cancel(should_cancel)
            sink.write_frame(i, clean, q, layers)
            self._report(progress, "merge", i + 1, job.frames, passes)
        return job.frames


def _bool_option(options: Dict[str, object], name: str) -> Optional[bool]:
    """A true / false pipeline option; None where not given."""
    value = options.get(name)
    if value is not None and not isinstance(value, bool):
        raise PipelineUnavailable("the %s option is true or false, not %r" % (name, value))
    return value


def _cuda_graphs_option(requested: Optional[bool], concurrency: int) -> Optional[bool]:
    """The server's `cuda_graphs` pipeline option (true / false, default false; loading.use_cuda_graphs).
    Jobs side by side (--concurrency > 1) rule it out: torch marks the graphs' steps with one process-wide counter,
    so one job's new step would free another's block outputs mid-forward."""
    if concurrency > 1:
        if requested:
            raise PipelineUnavailable("the cuda_graphs option needs --concurrency 1 (jobs side by side would free "
                                      "each other's graph memory); drop the option or run one job at a time")
        return False
    return requested


def _remote_vlm_option(options: Dict[str, object]) -> Optional[object]:
    """The `vlm_url` / `vlm_model` / `vlm_api_key_env` options (reasoning/remote_vlm.py), checked at start."""
    from ...reasoning.remote_vlm import RemoteVLMConfig

    try:
        return RemoteVLMConfig.from_options(options)
    except ValueError as e:
        raise PipelineUnavailable("pipeline option %s" % e)


def _result(value: Union[None, torch.Tensor, "Future[torch.Tensor]"]) -> Optional[torch.Tensor]:
    return value.result() if isinstance(value, Future) else value


def _wait_quietly(future: "Future") -> None:
    """Until `future` is done, whatever its outcome (the caller is already handling an error of its own)."""
    try:
        future.result()
    except BaseException:  # noqa: BLE001 - its error is a consequence of the caller's
        pass


class _Lazy:
    """A sequence whose items are computed on access (one plate frame at a time)."""

    def __init__(self, get, n: int) -> None:
        self._get, self._n = get, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int):
        return self._get(i)


def _hwc(video: np.ndarray, i: int) -> np.ndarray:
    """Frame i of a (1, 3, T, H, W) clip as (H, W, 3)."""
    return video[0, :, i].transpose(1, 2, 0)
