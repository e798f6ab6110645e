"""Modules compiled by dynamo ahead of time and kept on disk: a warm start loads their graphs instead of tracing.

Why: torch.compile with a warm inductor cache still runs dynamo over a module's Python at every start; for the VAE
that is 18-23 s of a warm server start on an H100 (docs/performance.md). Dynamo's precompile (`torch.compile(fn,
fullgraph=True).aot_compile(...)`, `save_compiled_function`, `torch.compiler.load_compiled_function`) keeps the
traced bytecode, its guards and inductor's code together in one file. Unlike an AOTInductor package (tried in the
seventh session: torch 2.11.0+cu130's loader segfaulted on the device machine) it runs through inductor's usual
Python runtime, and the module's parameters stay inputs of the graph, read at each call: no weight is baked in, and
every module of one class and shape shares one function (the VAE's resnet blocks).

One file per key: the module's class and the source of its file, its parameters' names, shapes and dtypes, its
submodules' classes, patched forwards, attention processors (class and plain settings) and weights' devices at the
call, the call's input structure, shapes, (canonical) strides, dtypes and devices, grad mode, and the torch /
diffusers / GPU it was built on. Dynamo's saved guards check the inputs again but leave out identity checks, and
nothing here looks at other attributes a module's code may read: precompile only modules whose code depends on
nothing else (the VAE's; a transformer block with its attention made direct, direct_attention.py). A missing file
is built on first use (the usual compile time, once per machine and version) and written whole (temporary file, then
rename); later processes load it. The source of every function dynamo inlined is checked when a file loads, so an
edited model file rebuilds instead of running stale code. Files unused for `UNUSED_DAYS` are deleted when a
process first opens the folder (loading a file marks it used). Anything that fails (a torch without the API, a graph that
does not serialise, a file that does not load) sends that module back to plain torch.compile for the rest of the
process, with a warning: a server never stops over this. Builds and loads hold dynamo's compile lock
(`compile_lock`): several threads may use the store at once (`--concurrency` slots, a rank group's second GPU).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.utils import _pytree as pytree

from ..base import error_line

log = logging.getLogger(__name__)

# Bump when what a file holds changes for the same key (this module's build call).
FORMAT = 1
FOLDER_NAME = "void-precompiled"
# A file no process has loaded or built for this long goes when a process next opens the folder: keys change with
# torch, diffusers, the GPU and the shapes, so an upgraded server would otherwise keep its old files forever.
UNUSED_DAYS = 30


def functions_folder() -> Path:
    """`void-precompiled` inside inductor's cache folder (the server points that at DATA_DIR/compile-cache)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / FOLDER_NAME


def supported() -> Optional[str]:
    """None if this torch can precompile; else why not."""
    if not hasattr(torch.compiler, "load_compiled_function"):
        return "torch %s has no torch.compiler.load_compiled_function" % torch.__version__
    return None


def _digest(text: str, n: int = 24) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def module_signature(module: torch.nn.Module) -> str:
    """What a function traced on `module` depends on besides its inputs: its class, the source file that defines it,
    and its parameters' and buffers' names, shapes, dtypes and, where not contiguous, strides (vae_rewrites' channels-
    last weights are laid out into the graph; their values are read at each call)."""
    cls = type(module)
    try:
        source = inspect.getsource(inspect.getmodule(cls))
    except (OSError, TypeError):
        source = ""
    named = list(module.named_parameters()) + list(module.named_buffers())
    # Contiguous tensors keep the key they had before strides counted, so existing files stay valid.
    tensors = [(n, list(t.shape), str(t.dtype)) + (() if t.is_contiguous() else (list(t.stride()),))
               for n, t in named]
    return json.dumps({"class": "%s.%s" % (cls.__module__, cls.__qualname__), "source": _digest(source),
                       "tensors": tensors, "training": module.training})


def _leaf_signature(leaf: object) -> object:
    if isinstance(leaf, torch.Tensor):
        return [list(leaf.shape), list(leaf.stride()), str(leaf.dtype), str(leaf.device)]
    return repr(leaf)


def call_key(signature: str, args: tuple, kwargs: dict) -> str:
    """A digest of everything a traced function depends on (module docstring)."""
    import diffusers

    leaves, spec = pytree.tree_flatten((args, kwargs))
    cuda = [x for x in leaves if isinstance(x, torch.Tensor) and x.is_cuda]
    arch = "sm_%d%d" % torch.cuda.get_device_capability(cuda[0].device) if cuda else ""
    return _digest(json.dumps({
        "format": FORMAT, "module": signature, "spec": str(spec), "leaves": [_leaf_signature(x) for x in leaves],
        "grad": torch.is_grad_enabled(), "inference": torch.is_inference_mode_enabled(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "diffusers": diffusers.__version__, "arch": arch,
    }, sort_keys=True))


def stale_source(function: Any) -> Optional[str]:
    """The first source dynamo inlined into `function` that has changed on disk since it was traced, else None."""
    from torch._dynamo.package import _hash_sourcelines

    for code in function.source_info().inlined_sources:
        try:
            current = _hash_sourcelines(importlib.import_module(code.module), code.firstlineno, code.lastlineno)
        except (ImportError, OSError):
            return code.module
        if current != code.checksum:
            return "%s (lines %d-%d)" % (code.module, code.firstlineno, code.lastlineno)
    return None


class FunctionStore:
    """The precompiled functions of one folder, loaded once per process and shared by every module using them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._functions: Dict[str, Any] = {}
        # Keys whose build failed in this process, and why: every module sharing the key falls back at once
        # instead of tracing and compiling again to meet the same failure (84 transformer blocks).
        self._failed: Dict[str, str] = {}
        self._refused: set = set()  # keys whose function's guards refused a call (PrecompiledForward.__call__)
        # What this process did, per key: "built" or "loaded" (tests and benches read it).
        self.events: List[Tuple[str, str]] = []

    def prune(self, unused_days: float = UNUSED_DAYS) -> List[str]:
        """Delete files unused for `unused_days` (a file's modification time is its last use: loading touches it),
        and temporary files of writes that died as old. Returns the names deleted."""
        if not self.folder.is_dir():
            return []
        cutoff = time.time() - unused_days * 86400
        gone = []
        for path in self.folder.iterdir():
            if not (path.suffix == ".bin" or ".bin.tmp" in path.name):
                continue  # only what this store writes
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone.append(path.name)
            except OSError:  # gone meanwhile (another worker on a shared cache), or not ours to delete
                continue
        if gone:
            log.info("precompiled: deleted %d file(s) unused for %g days from %s", len(gone), unused_days, self.folder)
        return gone

    def path(self, name: str, key: str) -> Path:
        return self.folder / ("%s-%s.bin" % (name, key))

    def function(self, name: str, key: str, build: Callable[[], Any], f_globals: Dict[str, object]) -> Any:
        if key in self._failed:
            raise RuntimeError(self._failed[key])
        found = self._functions.get(key)
        if found is None:
            path = self.path(name, key)
            found = self._load(path, f_globals) if path.is_file() else None
            if found is None:
                found = self.rebuild(name, key, build)
            else:
                _touch(path)
                self._keep(key, found, "loaded")
        return found

    def refused_once(self, key: str) -> bool:
        """True the first time a function of `key` has had its guards refuse a call in this process."""
        first = key not in self._refused
        self._refused.add(key)
        return first

    def _keep(self, key: str, function: Any, event: str) -> None:
        # PrecompiledForward checks the guards itself before each call, so the function need not check them again.
        function.disable_guard_check()
        self._functions[key] = function
        self.events.append((key, event))

    def rebuild(self, name: str, key: str, build: Callable[[], Any]) -> Any:
        path = self.path(name, key)
        log.info("precompiling %s (once per shape, machine and version)", path.name)
        tmp = path.with_name("%s.tmp%d" % (path.name, os.getpid()))
        try:
            with compile_lock():
                function = build()
            path.parent.mkdir(parents=True, exist_ok=True)
            # Whole or absent: another process (a second worker on the same cache) may be loading that name.
            function.save_compiled_function(str(tmp))
            os.replace(tmp, path)
        except Exception as exc:
            self._failed[key] = error_line(exc)
            with contextlib.suppress(OSError):  # a save that failed half-way
                tmp.unlink()
            raise
        self._keep(key, function, "built")
        return function

    def _load(self, path: Path, f_globals: Dict[str, object]) -> Optional[Any]:
        try:
            with open(path, "rb") as f, compile_lock():
                function = torch.compiler.load_compiled_function(f, f_globals=f_globals)
            stale = stale_source(function)
        except Exception as exc:  # noqa: BLE001 - torn, stale or from another build: make it again
            log.warning("precompiled %s does not load (%s: %s); rebuilding it", path.name, type(exc).__name__, exc)
            return None
        if stale is not None:
            log.info("precompiled %s traced %s, which has changed; rebuilding it", path.name, stale)
            return None
        return function


def _touch(path: Path) -> None:
    """Mark a file used now (what `prune` goes by); a read-only cache just keeps its times."""
    try:
        os.utime(path)
    except OSError:
        pass


_OWN_LOCK = threading.RLock()


def compile_lock() -> "threading.RLock":
    """The lock dynamo holds while it compiles a frame. Its aot_compile (a build here) and loading a compiled
    function do not take it, and inductor's compiling is not thread-safe: two threads compiling at once failed
    (TritonBundler's "assert cls._entries is None" on two GPUs, "CURRENT_PATCHER is None" on the CPU). Held around
    both, they wait for each other and for any torch.compile on another thread."""
    try:
        from torch._dynamo.convert_frame import compile_lock as dynamos
    except ImportError:  # a torch without it: at least our own builds and loads wait for each other
        return _OWN_LOCK
    return dynamos


_STORES: Dict[str, FunctionStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(folder: Optional[Path] = None) -> FunctionStore:
    """The process's store for `folder` (default `functions_folder()`)."""
    folder = Path(folder or functions_folder())
    key = str(folder.resolve())
    with _STORES_LOCK:  # one store per folder, also when two slots' threads ask first at once
        if key not in _STORES:
            _STORES[key] = FunctionStore(folder)
            _STORES[key].prune()  # once per process and folder
        return _STORES[key]


class PrecompiledForward:
    """Installed as `module.forward`: each call runs the stored function for its inputs (built on first use)."""

    def __init__(self, module: torch.nn.Module, name: str, backend: str = "inductor",
                 folder: Optional[Path] = None) -> None:
        self.module = module
        self.name = name
        self.backend = backend
        self.store = store_for(folder)
        self._forward = type(module).forward.__get__(module)  # the class's own, not this wrapper
        self._globals = type(module).forward.__globals__
        self._signature = module_signature(module)
        self._fallback: Optional[Callable] = None
        self._keys: Dict[tuple, str] = {}
        why = supported()
        if why is not None:
            self._fall_back(why)

    @property
    def fell_back(self) -> bool:
        return self._fallback is not None

    def __reduce__(self) -> Tuple[type, Tuple[str]]:
        # Dynamo pickles the traced module's attributes into a function's saved guards, this wrapper among them. What
        # it holds (the store, its loaded functions, the module) does not pickle, and no guard reads it.
        return (str, ("precompiled forward",))

    def _fall_back(self, why: str) -> None:
        log.warning("%s: not precompiled (%s); torch.compile from here on", self.name, why)
        # Not fullgraph: a graph break may be why precompiling failed, and this must run regardless.
        self._fallback = torch.compile(self._forward, dynamic=False, backend=self.backend)

    def _build(self, args: tuple, kwargs: dict) -> Any:
        if hasattr(torch._dynamo.config, "enable_aot_compile"):
            torch._dynamo.config.enable_aot_compile = True
        compiled = torch.compile(self._forward, fullgraph=True, dynamic=False, backend=self.backend)
        return compiled.aot_compile((args, kwargs))

    def _state(self) -> tuple:
        """What about the module a trace depends on that may change between calls: each submodule's class (one
        swapped for another with the same weights), a forward patched for the call (decode.py's upsampling), each
        attention processor's class and settings (a transformer block's), the weights' devices (a mode that
        offloads them)."""
        state = []
        for n, m in self.module.named_modules():  # once a call: the VAE's blocks are called hundreds of times a decode
            if n:
                state.append((n, type(m), "forward" in m.__dict__))
            # An attention processor is an attribute the traced code reads, not a module: its class and settings count.
            if hasattr(m, "processor"):
                state.append((n, type(m.processor), _settings(m.processor)))
        return tuple(state) + tuple(sorted({str(p.device) for p in self.module.parameters()}))

    def _key(self, args: tuple, kwargs: dict) -> str:
        leaves, spec = pytree.tree_flatten((args, kwargs))
        state = self._state()
        # The digest is worked out once per distinct call: the VAE's blocks are called hundreds of times a decode.
        quick = (str(spec), state, torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
                 tuple((x.shape, x.stride(), x.dtype, x.device) if isinstance(x, torch.Tensor) else repr(x)
                       for x in leaves))
        key = self._keys.get(quick)
        if key is None:
            key = self._keys[quick] = call_key(self._signature + repr(state), args, kwargs)
        return key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = contiguous_inputs(args, kwargs)
        if self._fallback is not None:
            return self._fallback(*args, **kwargs)
        key = self._key(args, kwargs)
        build = lambda: self._build(args, kwargs)  # noqa: E731
        try:
            function = self.store.function(self.name, key, build, self._globals)
            if not function.guard_check(self.module, *args, **kwargs):
                # The key missed something the guards check: trace this call's case afresh, once. Refused again
                # (by another block sharing the key, or the next call), the guards depend on what the key cannot
                # tell apart, and rebuilding at every call would be far slower than torch.compile.
                if not self.store.refused_once(key):
                    raise RuntimeError("its guards refuse calls its key does not tell apart")
                log.warning("%s: precompiled function's guards refuse this call; rebuilding it", self.name)
                function = self.store.rebuild(self.name, key, build)
        except Exception as exc:  # noqa: BLE001 - any precompile failure: keep working, compiled the usual way
            self._fall_back(error_line(exc))
            return self._fallback(*args, **kwargs)
        return function(self.module, *args, **kwargs)


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _settings(obj: object) -> tuple:
    """An object's plain attributes (strings, numbers, flags, None), nested one level into its other attributes:
    what distinguishes one configured attention processor from another (FastCogVideoXAttnProcessor's backend)."""
    out = []
    for name, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
        if _plain(value):
            out.append((name, value))
        elif hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, torch.Tensor)):
            out.append((name, type(value).__qualname__, tuple((k, v) for k, v in sorted(vars(value).items())
                                                              if _plain(v))))
    return tuple(out)


def contiguous_inputs(args: tuple, kwargs: dict) -> Tuple[tuple, dict]:
    """`(args, kwargs)` with every tensor in contiguous memory with canonical strides. A chunk of a clip is a view
    with the clip's strides (the VAE's frame batches, the decode's latents; a mask expanded to three channels where
    no dtype conversion copies it), and even a contiguous view keeps the clip's strides on its dimensions of size 1:
    keyed and guarded as they come, every clip length would need functions of its own, each built (a minute or two
    on an H100) or loaded on first use. Made canonical (a view where the memory already is contiguous, else a copy of
    the chunk, small beside its work), one function serves them all, and a warm-up on a short clip readies every
    length."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    if not any(isinstance(x, torch.Tensor) and x.stride() != _canonical_strides(x.shape) for x in leaves):
        return args, kwargs
    return pytree.tree_unflatten([_canonical(x) if isinstance(x, torch.Tensor) else x for x in leaves], spec)


def _canonical_strides(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(int(size), 1)
    return tuple(reversed(strides))


def _canonical(x: torch.Tensor) -> torch.Tensor:
    want = _canonical_strides(x.shape)
    if x.stride() == want:
        return x
    if x.is_contiguous():  # only size-1 dimensions' strides differ, and those address nothing
        return x.as_strided(x.shape, want)
    return x.contiguous()


def precompile(module: torch.nn.Module, name: str, backend: str = "inductor",
               folder: Optional[Path] = None) -> torch.nn.Module:
    """Install a `PrecompiledForward` on `module` (in place); returns it."""
    module.forward = PrecompiledForward(module, name, backend, folder)
    return module


def wrappers(module: torch.nn.Module) -> List[PrecompiledForward]:
    """Every `PrecompiledForward` installed inside `module` (itself included)."""
    return [m.__dict__["forward"] for m in module.modules()
            if isinstance(m.__dict__.get("forward"), PrecompiledForward)]


def events(module: torch.nn.Module) -> List[Tuple[str, str]]:
    """The build / load events of the store behind every precompiled module inside `module` (shared stores once)."""
    stores = {id(w.store): w.store for w in wrappers(module)}
    return [event for store in stores.values() for event in store.events]
