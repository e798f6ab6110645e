"""A rank group: one job's denoising loops over N devices, driven from the server process.

Rank 0 is the calling process (the server's pipeline); ranks 1..N-1 are long-lived worker processes (spawned once,
kept between jobs) that hold their own copies of the pass transformers on their own device, loaded with the same
`loading.VoidModels`. All N join one torch.distributed group (nccl on CUDA, gloo on CPU, a loopback TCPStore).

Per pass, rank 0 sends the small settings over a pipe, the workers get their transformer ready and say so, then the
tensors (latents, conditioning, prompt embeddings) go out by `dist.broadcast` device to device, and every rank runs
`denoise(parallel=plan)`. Rank 0's cancel check is shared through the plan's world axis, so every rank stops at the
same step. A worker's pipe is read by one monitor thread only: an error report or a dead process is recorded and
the group aborted, so rank 0 fails with the worker's own message instead of waiting on a collective. A failed
group is torn down and started again for the next pass.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import logging
import multiprocessing.connection as mpc
import os
import queue
import sys
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from .plan import ParallelPlan, make_plan

log = logging.getLogger(__name__)

# Groups still up at interpreter exit are shut down properly (stop the workers, destroy the process group): only
# killing the workers leaves nccl's communicator to be torn down mid-exit, which aborts the process.
_LIVE_GROUPS: "weakref.WeakSet[RankGroup]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_groups() -> None:
    for group in list(_LIVE_GROUPS):
        try:
            group.shutdown()
        except Exception:
            log.debug("shutting down a rank group at exit failed", exc_info=True)

Degrees = Tuple[int, int, int]  # cfg, windows, sequence


class RankGroupError(RuntimeError):
    """A rank of the group failed (its own error, its death, or a collective that timed out)."""


def pass_degrees(world: int, guidance: float, sequence_ok: bool = True) -> Degrees:
    """The measured best split (docs/performance.md): the guidance pair over 2 ranks when there is guidance and the
    ranks pair up (pass 2: 1.98x on 2 GPUs), sequence parallel over the rest (pass 1: 1.62x on 2 GPUs). Where
    sequence parallelism is ruled out (the step cache), the rest goes to the window split."""
    cfg = 2 if guidance > 1.0 and world % 2 == 0 else 1
    rest = world // cfg
    return (cfg, 1, rest) if sequence_ok else (cfg, rest, 1)


def all_degrees(world: int) -> List[Degrees]:
    """Every plan a group of `world` ranks may use; each rank builds them all, in this order (new_group is
    collective)."""
    return sorted({pass_degrees(world, g, ok) for g in (1.0, 6.0) for ok in (True, False)})


def rank_device(base: torch.device, rank: int) -> torch.device:
    """Rank r computes on cuda:(base + r); on the CPU every rank is "cpu"."""
    if base.type == "cuda":
        return torch.device("cuda", (base.index or 0) + rank)
    return base


def check_devices(base: torch.device, world: int) -> None:
    """N GPUs must exist from the base device on: raises ValueError naming what is visible."""
    if base.type != "cuda":
        return
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    first = base.index or 0
    if first + world > visible:
        raise ValueError("gpus_per_worker=%d needs cuda:%d..cuda:%d, but %d GPU%s visible (CUDA_VISIBLE_DEVICES=%s)"
                         % (world, first, first + world - 1, visible, " is" if visible == 1 else "s are",
                            os.environ.get("CUDA_VISIBLE_DEVICES", "unset")))


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """What a worker needs to join and load (picklable: it crosses the spawn)."""

    model_dir: str
    world: int
    device: str  # rank 0's device; rank r uses rank_device(device, r)
    memory_mode: str  # rank 0's resolved mode, so every rank computes in the same precision
    compile_blocks: bool
    timeout_s: float  # one collective's limit
    port: int = 0
    attention: str = "sdpa"  # rank 0's resolved attention, so every rank runs the same kernels
    fuse_gelu: bool = False  # rank 0's feed-forward GELU (fused into its GEMM or not): the same math on every rank
    cuda_graphs: bool = False  # rank 0's choice (loading.use_cuda_graphs): every rank replays its blocks alike


@dataclasses.dataclass(frozen=True)
class PassRequest:
    """One pass's settings for the workers; the tensors follow by broadcast, described by `tensors`."""

    pass_index: int
    scheduler: str  # diffusers class name
    scheduler_config: dict
    guidance: float
    steps: int
    window: int
    overlap: int
    degrees: Degrees
    extra: dict  # further denoise() keywords with plain values (e.g. step_cache)
    tensors: Tuple[Optional[Tuple[Tuple[int, ...], str]], ...]  # latents, inpaint, prompt, negative: (shape, dtype)


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def _loopback_env() -> None:
    # gloo binds to the host name's address by default; one machine's ranks talk over loopback.
    if sys.platform.startswith("linux") and os.path.exists("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")


def _init(spec: GroupSpec, rank: int, store: dist.Store) -> Dict[Degrees, ParallelPlan]:
    device = rank_device(torch.device(spec.device), rank)
    kwargs = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    dist.init_process_group(_backend(device), store=store, rank=rank, world_size=spec.world,
                            timeout=datetime.timedelta(seconds=spec.timeout_s), **kwargs)
    return {d: make_plan(*d) for d in all_degrees(spec.world)}


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name.replace("torch.", ""))


# -- the worker process ------------------------------------------------------------------------------------------

def worker_main(rank: int, spec: GroupSpec, conn, parent_pid: int) -> None:
    """Ranks 1..N-1: join, then serve passes until told to stop or the server goes away."""
    try:
        _serve(rank, spec, conn, parent_pid)
    except BaseException as e:  # anything escaping is fatal: say what, then exit so rank 0's collectives end too
        try:
            conn.send(("error", "%s: %s" % (type(e).__name__, e), traceback.format_exc()))
        except Exception:
            pass
        os._exit(1)
    os._exit(0)


def _serve(rank: int, spec: GroupSpec, conn, parent_pid: int) -> None:
    from ...base import JobCancelled
    from ..denoise import denoise
    from ..loading import VoidModels
    from ..weights import resolve_layout

    device = rank_device(torch.device(spec.device), rank)
    if device.type == "cpu":
        torch.set_num_threads(1)  # N ranks share the machine's cores
    _loopback_env()
    conn.send(("joining",))
    store = dist.TCPStore("127.0.0.1", spec.port, spec.world, is_master=False,
                          timeout=datetime.timedelta(seconds=spec.timeout_s))
    plans = _init(spec, rank, store)
    models = VoidModels(resolve_layout(Path(spec.model_dir)), device, spec.memory_mode, compile_blocks=spec.compile_blocks,
                        attention=spec.attention, fuse_gelu=spec.fuse_gelu, cuda_graphs=spec.cuda_graphs,
                        # sequence parallelism swaps the blocks' processors for the pass: not precompiled (untried)
                        transformer_unit="compiled")
    conn.send(("up",))
    t0 = time.perf_counter()
    passes = _preload(models)
    conn.send(("preloaded", passes, time.perf_counter() - t0))
    while True:
        while not conn.poll(1.0):
            if os.getppid() != parent_pid:  # the server died: nothing left to serve
                return
        msg = conn.recv()
        if msg[0] == "stop":
            dist.destroy_process_group()
            return
        req: PassRequest = msg[1]
        transformer = models.transformer(req.pass_index)
        import diffusers

        scheduler = getattr(diffusers, req.scheduler).from_config(req.scheduler_config)
        conn.send(("ready",))
        latents, inpaint, prompt, negative = _receive(req.tensors, device)
        steps = [0]

        def on_step(i: int, n: int) -> None:
            steps[0] = i

        try:
            with models.placement.use(transformer):
                denoise(transformer, scheduler, latents, inpaint, prompt, negative, req.guidance, req.steps,
                        req.window, req.overlap, on_step, lambda: False, None, plans[req.degrees], **req.extra)
        except JobCancelled:
            conn.send(("cancelled", steps[0]))
            continue
        conn.send(("done", steps[0]))


def _preload(models) -> List[int]:
    """The transformers this rank will hold anyway, loaded before the first pass asks for them, and the compiler
    imported: the rank is idle until then, while rank 0 loads its own models and warms up its VAE. Loaded on
    demand, they made the server's first pass-1 step wait 12-19 s for this rank on two H200s (docs/performance.md,
    thirteenth session). Where a memory mode keeps one transformer at a time, nothing is loaded ahead."""
    passes = models.load_resident_transformers()
    if passes and models.compile_blocks:
        from ..accel import import_compiler

        import_compiler()
    return passes


def _receive(metas, device: torch.device) -> List[Optional[torch.Tensor]]:
    out: List[Optional[torch.Tensor]] = []
    for meta in metas:
        if meta is None:
            out.append(None)
            continue
        t = torch.empty(meta[0], dtype=_dtype(meta[1]), device=device)
        dist.broadcast(t, src=0)
        out.append(t)
    return out


# -- rank 0 --------------------------------------------------------------------------------------------------------

class RankGroup:
    """Rank 0's handle on the group. `denoise(pass_index, ...)` has `denoise.denoise`'s signature after the pass
    index; one pass at a time (a lock), as the group has one set of transformers."""

    def __init__(self, model_dir: Path, world: int, device: torch.device, memory_mode: str, compile_blocks: bool,
                 timeout_s: float = 600.0, start_timeout_s: float = 600.0, attention: str = "sdpa",
                 fuse_gelu: bool = False, cuda_graphs: bool = False) -> None:
        if world < 2:
            raise ValueError("a rank group needs at least 2 ranks, not %d" % world)
        check_devices(device, world)
        self.spec = GroupSpec(str(model_dir), int(world), str(device), memory_mode, bool(compile_blocks), float(timeout_s),
                              attention=attention, fuse_gelu=bool(fuse_gelu), cuda_graphs=bool(cuda_graphs))
        self.device = rank_device(device, 0)
        self.start_timeout_s = float(start_timeout_s)
        self._lock = threading.Lock()
        self._procs: List[object] = []
        self._conns: List[object] = []
        self._inbox: Dict[int, "queue.Queue[tuple]"] = {}
        self._failure: Optional[str] = None
        self._plans: Dict[Degrees, ParallelPlan] = {}
        self._monitor: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self.last_outcome: Dict[int, tuple] = {}  # rank -> ("done" | "cancelled", steps) of the last pass
        # rank -> the passes whose transformer it loaded ahead, and the seconds that took
        self.preloaded: Dict[int, Dict[str, object]] = {}
        # Killed at interpreter exit at the latest (finalize's atexit); close() stops them earlier.
        weakref.finalize(self, RankGroup._kill, self._procs)

    @property
    def world(self) -> int:
        return self.spec.world

    @property
    def started(self) -> bool:
        return bool(self._procs)

    def describe(self) -> Dict[str, object]:
        return {"ranks": self.world, "devices": [str(rank_device(torch.device(self.spec.device), r)) for r in range(self.world)],
                "backend": _backend(self.device), "plans": {"pass1": list(pass_degrees(self.world, 1.0)),
                                                            "pass2": list(pass_degrees(self.world, 6.0))},
                "preloaded": {"rank%d" % r: passes for r, passes in sorted(self.preloaded.items())}}

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the workers and join the group with them (blocking; raises RankGroupError on a failed start)."""
        if self._procs:
            return
        if dist.is_initialized():
            raise RankGroupError("this process already has a torch.distributed group: one multi-GPU pipeline per process")
        import torch.multiprocessing as mp

        _loopback_env()
        if self.device.type == "cuda":
            # nccl's watchdog must not kill the server on a timeout: abort the communicators, raise in the job.
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
        self._failure = None
        self.preloaded.clear()
        self._stopping.clear()
        store = dist.TCPStore("127.0.0.1", 0, self.world, is_master=True, wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=self.start_timeout_s))
        spec = dataclasses.replace(self.spec, port=store.port)
        ctx = mp.get_context("spawn")
        for rank in range(1, self.world):
            mine, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker_main, args=(rank, spec, theirs, os.getpid()), daemon=True,
                               name="void-rank%d" % rank)
            proc.start()
            theirs.close()
            self._procs.append(proc)
            self._conns.append(mine)
            self._inbox[rank] = queue.Queue()
        _LIVE_GROUPS.add(self)
        self._monitor = threading.Thread(target=self._watch, name="void-rank-monitor", daemon=True)
        self._monitor.start()
        try:
            self._await_all("joining", self.start_timeout_s)  # workers imported torch: the group will form
            self._plans = _init(spec, 0, store)
            self._await_all("up", self.start_timeout_s)
        except BaseException:
            self.shutdown()
            raise
        log.info("rank group up: %s", self.describe())

    def shutdown(self) -> None:
        """Stop the workers (politely, then by force) and leave the group."""
        self._stopping.set()
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except Exception:
                pass
        deadline = time.monotonic() + 10
        for proc in self._procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        RankGroup._kill(self._procs)
        if self._monitor is not None:
            self._monitor.join(5)
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()
        self._inbox.clear()
        self._plans = {}
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # an aborted group may refuse; it is gone either way
                log.debug("destroying the process group failed", exc_info=True)

    close = shutdown

    @staticmethod
    def _kill(procs: Sequence[object]) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    # -- the monitor: the only reader of the workers' pipes ----------------------------------------------------

    def _watch(self) -> None:
        conns, procs = list(self._conns), list(self._procs)
        by_conn = {c: r for r, c in enumerate(conns, start=1)}
        by_sentinel = {p.sentinel: r for r, p in enumerate(procs, start=1)}
        open_conns = set(conns)
        while not self._stopping.is_set():
            ready = mpc.wait(list(open_conns) + list(by_sentinel), timeout=0.5)
            for obj in ready:
                if obj in by_conn:
                    rank = by_conn[obj]
                    try:
                        msg = obj.recv()
                    except (EOFError, OSError):
                        open_conns.discard(obj)
                        continue
                    self._handle(rank, msg)
                elif not self._stopping.is_set():
                    rank = by_sentinel.pop(obj)
                    time.sleep(0.2)  # its last words (an error report) usually arrive just before the exit
                    self._drain(rank, conns[rank - 1])
                    self._fail("rank %d (%s) exited unexpectedly (exit code %s)"
                               % (rank, self._device_name(rank), procs[rank - 1].exitcode))
                else:
                    by_sentinel.pop(obj, None)

    def _drain(self, rank: int, conn) -> None:
        try:
            while conn.poll(0):
                self._handle(rank, conn.recv())
        except (EOFError, OSError):
            pass

    def _handle(self, rank: int, msg: tuple) -> None:
        """A worker's message: an error report fails the group; what it loaded ahead is noted (it answers nothing
        rank 0 waits for); every other message goes to the rank's inbox."""
        if msg[0] == "preloaded":
            self.preloaded[rank] = {"passes": list(msg[1]), "s": round(float(msg[2]), 3)}
            return
        if msg[0] == "error":
            log.error("rank %d failed:\n%s", rank, msg[2])
            self._fail("rank %d (%s) failed: %s" % (rank, self._device_name(rank), msg[1]))
        self._post(rank, msg)

    def _post(self, rank: int, msg: tuple) -> None:
        box = self._inbox.get(rank)
        if box is not None:  # None once shut down
            box.put(msg)

    def _fail(self, message: str) -> None:
        if self._failure is None:
            self._failure = message
            log.error("rank group: %s", message)
            if self.device.type == "cuda" and dist.is_initialized():
                try:  # rank 0 may sit in a collective that would otherwise wait for the timeout
                    dist.distributed_c10d._abort_process_group()
                except Exception:
                    log.debug("aborting the process group failed", exc_info=True)

    def _device_name(self, rank: int) -> str:
        return str(rank_device(torch.device(self.spec.device), rank))

    def _await_all(self, kind: str, timeout_s: float) -> Dict[int, tuple]:
        """Each worker's next message, which must be `kind`; raises RankGroupError on a failure or timeout."""
        deadline = time.monotonic() + timeout_s
        got: Dict[int, tuple] = {}
        for rank in range(1, self.world):
            while rank not in got:
                if self._failure is not None:
                    raise RankGroupError(self._failure)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RankGroupError("rank %d (%s) did not answer '%s' within %.0f s"
                                         % (rank, self._device_name(rank), kind, timeout_s))
                try:
                    msg = self._inbox[rank].get(timeout=min(0.5, left))
                except queue.Empty:
                    continue
                if msg[0] == "error":
                    raise RankGroupError(self._failure or msg[1])
                if msg[0] != kind and not (kind == "done" and msg[0] == "cancelled"):
                    raise RankGroupError("rank %d sent '%s' where '%s' was due" % (rank, msg[0], kind))
                got[rank] = msg
        return got

    # -- one pass ---------------------------------------------------------------------------------------------

    def denoise(self, pass_index: int, transformer, scheduler, latents: torch.Tensor, inpaint_latents: torch.Tensor,
                prompt_embeds: torch.Tensor, negative_embeds: Optional[torch.Tensor] = None,
                guidance_scale: float = 1.0, num_steps: int = 30, window: int = 22, overlap: int = 4,
                on_step: Optional[Callable[[int, int], None]] = None, should_cancel: Optional[Callable[[], bool]] = None,
                observer=None, parallel: Optional[ParallelPlan] = None, **extra) -> torch.Tensor:
        """`denoise.denoise` over the group's ranks (a `parallel` plan given is ignored: the group picks its own).
        Further keywords go to every rank's denoise when they are plain values, to rank 0's only otherwise (e.g. a
        statistics collector)."""
        from ...base import JobCancelled
        from ..denoise import denoise

        with self._lock:
            if self._failure is not None:
                self.shutdown()  # a failed group is rebuilt: its workers may sit in a broken collective
            self.start()
            shared = {k: v for k, v in extra.items() if v is None or isinstance(v, (bool, int, float, str))}
            degrees = pass_degrees(self.world, guidance_scale, sequence_ok=not extra.get("step_cache"))
            tensors = [latents.contiguous(), inpaint_latents.to(self.device).contiguous(),
                       prompt_embeds.to(self.device).contiguous(),
                       None if negative_embeds is None else negative_embeds.to(self.device).contiguous()]
            req = PassRequest(pass_index, type(scheduler).__name__, dict(scheduler.config), float(guidance_scale),
                              int(num_steps), int(window), int(overlap), degrees, shared,
                              tuple(None if t is None else (tuple(t.shape), str(t.dtype)) for t in tensors))
            try:
                for conn in self._conns:
                    conn.send(("pass", req))
                self._await_all("ready", self.start_timeout_s)  # workers' transformers loaded before any collective
                for t in tensors:
                    if t is not None:
                        dist.broadcast(t, src=0)
                ctx = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
                try:
                    with ctx:
                        # every rank must take part in the per-step cancel vote, so rank 0 always has a check
                        out = denoise(transformer, scheduler, tensors[0], tensors[1], tensors[2], tensors[3],
                                      guidance_scale, num_steps, window, overlap, on_step,
                                      should_cancel or (lambda: False), observer, self._plans[degrees], **extra)
                except JobCancelled:  # every rank stopped at the same step: the group stays up
                    self.last_outcome = self._await_all("done", self.spec.timeout_s)
                    raise
                self.last_outcome = self._await_all("done", self.spec.timeout_s)
                return out
            except JobCancelled:
                raise
            except BaseException as e:
                err = self._failed(e)
                if err is e:
                    raise
                raise err from e

    def _failed(self, e: BaseException) -> BaseException:
        """Rank 0's pass failed: give the workers' reason when there is one, and tear the group down."""
        deadline = time.monotonic() + 3.0
        while self._failure is None and time.monotonic() < deadline:
            time.sleep(0.1)  # a collective broken by a dead rank may fail before the monitor sees the death
        failure = self._failure
        self.shutdown()
        if failure is not None:
            return RankGroupError("multi-GPU job failed: " + failure)
        if isinstance(e, dist.DistError):
            return RankGroupError("multi-GPU job failed: a collective between the ranks failed: %s" % e)
        return e
