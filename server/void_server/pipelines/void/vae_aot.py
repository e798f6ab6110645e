"""The VAE's encoder and decoder compiled ahead of time: `torch.export` + AOTInductor, one package per chunk shape.

Why: a server start with torch.compile's warm cache still re-traces the VAE's Python and reloads its kernels
(~20 s of a warm start on an H100, docs/performance.md); a package on disk loads in a fraction of a second. The
packages hold code only. The weights are the loaded VAE's own tensors, lent to each package
(`load_constants(user_managed=True)`), so the VAE's memory is not duplicated per shape, and rebound whenever they
have moved (a memory mode that offloads the VAE between uses).

One exception: inductor writes tiny 1-D tensors (<= 8 values: the decoder's RGB output bias) into a package's code
as literals (`GraphLowering.can_inline_constant`), so those values are part of a package's key (`baked_digest`), and
a package that leaves out any other weight is refused (the part falls back to torch.compile).

A job's chunks come in a few static shapes (the encoder's first and later frame batches; the decoder's first
latent, its pairs, and the trailing single latent with the reference's patched upsampling, decode.py): each is
exported and compiled on its first call (minutes on a GPU, once per machine and torch version), saved under the
inductor cache folder (`DATA_DIR/compile-cache` in a server), and loaded from there by every later process.
If exporting or compiling fails, the part falls back to torch.compile (`fallback`) for the rest of the process.

AOTInductor's loader can crash the process outright (a segfault, not an exception: seen with torch 2.11.0+cu130 on
the device machine, for any package, docs/performance.md). So the first package a torch build makes is loaded in a
child process first (`check_loader`), and the verdict is kept beside the packages: where the loader crashes, the
part falls back instead of taking the server down.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

# Bump when what a package contains changes for the same inputs (this module's export call, decode.py's patch).
PACKAGE_FORMAT = 1
FOLDER_NAME = "void-aot"
# Package code only; the weights come from the live module (module docstring).
INDUCTOR_CONFIGS = {"aot_inductor.package_constants_in_so": False}


def packages_folder() -> Path:
    """`void-aot` inside inductor's cache folder (the server points that at DATA_DIR/compile-cache)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / FOLDER_NAME


_LOADER_OK: Dict[str, bool] = {}  # this process's verdicts, by marker path
_LOAD_IN_CHILD = "import sys, torch; torch._inductor.aoti_load_package(sys.argv[1])"


def _loader_marker(folder: Path) -> Path:
    tag = "%s-py%s" % (torch.__version__, platform.python_version())
    return folder / ("loader-%s" % "".join(c if c.isalnum() or c in ".-" else "_" for c in tag))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def check_loader(folder: Path, package: Optional[Path] = None) -> None:
    """Raise RuntimeError if this torch's AOTInductor loader is known to crash; with `package` and no verdict yet,
    load it in a child process to find out (once per torch build and cache folder)."""
    marker = _loader_marker(folder)
    if _LOADER_OK.get(str(marker)):
        return
    ok, broken = marker.with_suffix(".ok"), marker.with_suffix(".broken")
    if broken.is_file():
        raise RuntimeError("AOTInductor's package loader crashed in this torch before (%s): %s"
                           % (broken, broken.read_text().strip()))
    if not ok.is_file():
        if package is None:
            return  # nothing to try yet: the caller builds a package, then asks again
        try:
            done = subprocess.run([sys.executable, "-c", _LOAD_IN_CHILD, str(package)], capture_output=True, text=True,
                                  timeout=600)
            rc, tail = done.returncode, (done.stderr or "").strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            rc, tail = None, ["timed out after 600 s"]
        if rc != 0:
            why = "exit %s%s%s" % (rc, " (%s)" % _signal_name(-rc) if rc is not None and rc < 0 else "",
                                   ": " + tail[0] if tail else "")
            broken.write_text(why + "\n")
            raise RuntimeError("AOTInductor's package loader fails in a child process (%s); verdict kept in %s"
                               % (why, broken))
        ok.write_text("loaded %s\n" % package.name)
    _LOADER_OK[str(marker)] = True


def inlined_by_inductor(t: torch.Tensor) -> bool:
    """Inductor's rule for a constant it writes into the code instead of reading (torch/_inductor/graph.py)."""
    return t.dim() == 1 and t.shape[0] <= 8


def _module_tensors(module: torch.nn.Module) -> Dict[str, torch.Tensor]:
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    return tensors


def baked_digest(module: torch.nn.Module) -> str:
    """A digest of the values a package of `module` would carry in its code (`inlined_by_inductor`)."""
    h = hashlib.sha256()
    for name, t in sorted(_module_tensors(module).items()):
        if inlined_by_inductor(t):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _leaf_signature(leaf: object) -> object:
    if isinstance(leaf, torch.Tensor):
        return [list(leaf.shape), str(leaf.dtype), leaf.device.type]
    return repr(leaf)


def package_key(part: str, config: Dict[str, object], args: tuple, kwargs: dict, variant: str = "",
                baked: str = "") -> str:
    """A digest of everything a package's code depends on: the part and its model config, the inputs' structure,
    shapes and dtypes, `variant` (the decoder's patched upsampling), the values inductor inlines (`baked`,
    `baked_digest`), torch, diffusers, the GPU's architecture."""
    import diffusers

    leaves, spec = pytree.tree_flatten((args, kwargs))
    arch = ""
    if any(isinstance(x, torch.Tensor) and x.is_cuda for x in leaves):
        arch = "sm_%d%d" % torch.cuda.get_device_capability(next(x for x in leaves if isinstance(x, torch.Tensor)
                                                                and x.is_cuda).device)
    text = json.dumps({
        "format": PACKAGE_FORMAT, "part": part, "config": config, "spec": str(spec),
        "leaves": [_leaf_signature(x) for x in leaves], "variant": variant, "baked": baked, "torch": torch.__version__,
        "cuda": torch.version.cuda, "diffusers": diffusers.__version__, "arch": arch,
    }, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _contiguous(tree: object) -> object:
    # A package's kernels assume the strides it was compiled with; chunk slices and conv-cache views are not dense.
    return pytree.tree_map(lambda x: x.contiguous() if isinstance(x, torch.Tensor) else x, tree)


def package_events(vae: torch.nn.Module) -> Dict[str, List[str]]:
    """Per VAE part compiled ahead of time: each package "built" or "loaded" by this process, in order."""
    return {name: [event for _, event in part.events] for name, part in
            (("encoder", vae.encoder), ("decoder", vae.decoder)) if isinstance(part, AheadOfTimePart)}


class AheadOfTimePart(torch.nn.Module):
    """Stands in for `vae.encoder` or `vae.decoder` (same call: `(sample, conv_cache=...)`), running each chunk shape
    from its package. `module` stays registered: it owns the weights, and decode.py's patch reaches its modules."""

    def __init__(self, module: torch.nn.Module, part: str, config: Dict[str, object],
                 fallback: Callable[[torch.nn.Module], Callable], folder: Optional[Path] = None) -> None:
        super().__init__()
        self.module = module
        self.part = part
        self.config = dict(config)
        self.folder = folder
        self._fallback_factory = fallback
        self._fallback: Optional[Callable] = None
        self._runners: Dict[Tuple[str, int], object] = {}
        self._bound: Dict[Tuple[str, int], Tuple[int, ...]] = {}
        self._baked: Tuple[Tuple[int, ...], str] = ((), "")  # (the inlined tensors' addresses, their digest)
        # What this process did, per package key: "built" or "loaded" (tests and benches read it).
        self.events: List[Tuple[str, str]] = []
        from diffusers.models.upsampling import CogVideoXUpsample3D

        self._upsamplers = [m for m in module.modules() if isinstance(m, CogVideoXUpsample3D)]

    @property
    def fell_back(self) -> bool:
        return self._fallback is not None

    def _variant(self) -> str:
        # decode.py swaps the time upsampling of a single latent after the first: a different graph, same shapes.
        return "patched-upsampling" if any("forward" in m.__dict__ for m in self._upsamplers) else ""

    def forward(self, sample: torch.Tensor, temb: Optional[torch.Tensor] = None,
                conv_cache: Optional[Dict[str, torch.Tensor]] = None):
        if self._fallback is not None or temb is not None:  # CogVideoX passes no temb; anything else runs as it was
            return (self._fallback or self.module)(sample, temb, conv_cache=conv_cache)
        args, kwargs = (_contiguous(sample),), {"conv_cache": _contiguous(conv_cache)}
        tensors = _module_tensors(self.module)  # once a call: the key's inlined values and the lent weights
        key = package_key(self.part, self.config, args, kwargs, self._variant(), self._baked_digest(tensors))
        try:
            runner = self._runner(key, args, kwargs, tensors)
        except Exception as exc:  # noqa: BLE001 - any export/compile failure: keep working, compiled the other way
            log.warning("VAE %s: ahead-of-time compile failed (%s: %s); torch.compile from here on", self.part,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self._fallback = self._fallback_factory(self.module)
            return self._fallback(sample, conv_cache=conv_cache)
        return runner(*args, **kwargs)

    def _baked_digest(self, tensors: Dict[str, torch.Tensor]) -> str:
        # Recomputed only when those tensors moved (a GPU -> host copy each): weights do not change in place here.
        small = [t for t in tensors.values() if inlined_by_inductor(t)]
        where = tuple(t.data_ptr() for t in small)
        if self._baked[0] != where or not self._baked[1]:
            self._baked = (where, baked_digest(self.module))
        return self._baked[1]

    # -- packages ------------------------------------------------------------------------------------------------

    def _runner(self, key: str, args: tuple, kwargs: dict, tensors: Dict[str, torch.Tensor]):
        device = args[0].device
        slot = (key, device.index if device.index is not None else -1)
        runner = self._runners.get(slot)
        if runner is None:
            folder = self.folder or packages_folder()
            path = folder / ("%s-%s.pt2" % (self.part, key))
            check_loader(folder)  # a known crash: fall back before minutes of building
            if path.is_file():
                check_loader(folder, path)
            runner = self._load(path, device) if path.is_file() else None
            if runner is None:
                self._build(path, args, kwargs)
                check_loader(folder, path)
                runner = self._load(path, device, must=True)
                self.events.append((key, "built"))
            else:
                self.events.append((key, "loaded"))
            self._runners[slot] = runner
        self._bind(slot, runner, tensors)
        return runner

    def _build(self, path: Path, args: tuple, kwargs: dict) -> None:
        log.info("VAE %s: exporting and compiling %s (once per chunk shape; minutes on a GPU)", self.part, path.name)
        with torch.no_grad():
            exported = torch.export.export(self.module, args, kwargs, strict=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name("%s.tmp%d.pt2" % (path.stem, os.getpid()))  # torch wants the suffix
            torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp),
                                                     inductor_configs=dict(INDUCTOR_CONFIGS))
        os.replace(tmp, path)  # whole or absent: another process may be loading the same name

    def _load(self, path: Path, device: torch.device, must: bool = False):
        try:
            return torch._inductor.aoti_load_package(
                str(path), device_index=device.index if device.type == "cuda" and device.index is not None else -1)
        except Exception as exc:  # noqa: BLE001 - a torn or stale file: rebuild it
            if must:
                raise
            log.warning("VAE %s: package %s does not load (%s); rebuilding it", self.part, path.name, exc)
            path.unlink()
            return None

    def _bind(self, slot: Tuple[str, int], runner, tensors: Dict[str, torch.Tensor]) -> None:
        """Lend the module's current weights (`tensors`) to the package, again whenever they have moved."""
        names = runner.get_constant_fqns()
        missing = [n for n in names if n not in tensors]
        if missing:
            raise RuntimeError("VAE %s package wants constants the module lacks: %s" % (self.part, missing[:5]))
        unlent = [n for n, t in tensors.items() if n not in names and not inlined_by_inductor(t)]
        if unlent and slot not in self._bound:
            # Baked into the code with values its key does not cover: it would ignore this module's weights.
            raise RuntimeError("VAE %s package carries weights of its own: %s" % (self.part, unlent[:5]))
        where = tuple(tensors[n].data_ptr() for n in names)
        if self._bound.get(slot) != where:
            runner.load_constants({n: tensors[n] for n in names}, check_full_update=True, user_managed=True)
            self._bound[slot] = where
