"""`void-server serve | doctor | download | parity | quality`."""
from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .auth import TokenTable
from .config import CLUSTER_STORAGES, MEMORY_MODES, PIPELINES, ConfigError, ServerConfig, is_loopback, load_config

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MIN_FREE_DISK_GIB = 50.0  # a 4K, 200-frame job with both passes' checkpoints needs tens of GB


def _option(text: str) -> Tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("'%s' is not KEY=VALUE" % text)
    try:
        import json

        return key, json.loads(value)  # numbers and booleans as such; anything else stays a string
    except ValueError:
        return key, value


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML or JSON file with the settings below (default: $VOID_CONFIG)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, help="default 8765")
    p.add_argument("--data-dir", type=Path, help="jobs, uploads, results and the job database (default ~/.void/data)")
    p.add_argument("--model-dir", type=Path, help="VOID weights (default ~/.void/models)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set VOID_TOKEN, which stays out of "
                                   "the process list)")
    p.add_argument("--tokens-file", type=Path, help="one 'USER TOKEN' line per user; each user sees only their jobs")
    p.add_argument("--insecure", action="store_true", default=None,
                   help="allow listening on a non-loopback address without any token (trusted networks only)")
    p.add_argument("--tls-cert", type=Path, help="PEM certificate (chain): serve HTTPS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    p.add_argument("--cluster", metavar="ADDRESS", help="run jobs on a Ray cluster: 'auto' (this machine is in one), "
                   "HOST:PORT or ray://HOST:PORT (docs/cluster.md)")
    p.add_argument("--cluster-storage", choices=CLUSTER_STORAGES,
                   help="how workers get inputs and return results: shared (DATA_DIR on storage every machine "
                   "mounts, default) or object_store (through Ray)")
    p.add_argument("--cluster-resource", help="the Ray resource a worker takes one of (default GPU)")
    p.add_argument("--max-upload-mb", type=float, help="largest uploaded file, MiB (default 4096)")
    p.add_argument("--max-frames", type=int, help="most frames per job (default 1000)")
    p.add_argument("--max-resolution", type=int, help="longest plate side in pixels (default 4096)")
    p.add_argument("--memory-mode", choices=MEMORY_MODES)
    p.add_argument("--concurrency", type=int, help="GPU jobs at once: one per GPU (default 1)")
    p.add_argument("--gpus-per-worker", type=int, help="GPUs each job's denoising is split over (default 1; "
                   "docs/cluster.md, 'One job on several GPUs')")
    p.add_argument("--pipeline", choices=PIPELINES, help="void (default), preview (CPU) or testing")
    p.add_argument("--warm-up", dest="warm_up", action="store_true", default=None,
                   help="load every model and compile its graphs before the server says ready, so the first job "
                   "runs at full speed (default: on when the pipeline runs on a GPU)")
    p.add_argument("--no-warm-up", dest="warm_up", action="store_false", default=None,
                   help="say ready at once; the first job loads and compiles")
    p.add_argument("--allowed-root", dest="allowed_roots", action="append", type=Path, default=[],
                   help="a folder the server may read shared-path inputs from (repeatable)")
    p.add_argument("--result-ttl-hours", type=float, help="delete finished jobs this long after (0 keeps them)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help="default INFO")
    p.add_argument("--pipeline-option", dest="options", action="append", type=_option, default=[],
                   metavar="KEY=VALUE", help="a pipeline-specific setting (repeatable)")


def config_from(args: argparse.Namespace) -> ServerConfig:
    names = ("host", "port", "data_dir", "model_dir", "token", "memory_mode", "concurrency", "pipeline",
             "allowed_roots", "result_ttl_hours", "tokens_file", "insecure", "tls_cert", "tls_key", "max_upload_mb",
             "max_frames", "max_resolution", "cluster", "cluster_storage", "cluster_resource", "gpus_per_worker",
             "warm_up")
    flags: Dict[str, Any] = {n: getattr(args, n) for n in names}
    flags["options"] = dict(args.options)
    return load_config(flags, args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.app import create_app
    from .jobs.pipeline_host import PipelineHost

    config = config_from(args)  # refuses a non-loopback address without a token unless --insecure
    log = logging.getLogger("void_server")
    if not is_loopback(config.host) and not config.auth_enabled:
        log.warning("listening on %s without a token (--insecure): anyone who can reach this port can read and "
                    "run jobs", config.host)
    TokenTable.from_config(config)  # a malformed tokens file stops the server here, with its line number
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(config.data_dir)  # held (open) for the life of the process
    if config.cluster:
        from .cluster.pool import ClusterHost

        host = ClusterHost(config)  # the pipeline lives on the cluster's workers, not here
    else:
        host = PipelineHost(config.pipeline, config)
    if config.pipeline != "testing" and not config.cluster:
        threading.Thread(target=lambda: importlib.import_module("torch"), daemon=True).start()  # GPU info for health
    host.start_loading()
    scheme = "https" if config.tls_cert else "http"
    log.info("VOID server on %s://%s:%d/v1, pipeline '%s', data in %s, %s", scheme, config.host, config.port,
             config.pipeline, config.data_dir, "token auth" if config.auth_enabled else "no auth")
    tls = {"ssl_certfile": str(config.tls_cert), "ssl_keyfile": str(config.tls_key)} if config.tls_cert else {}
    uvicorn.run(create_app(config, host), host=config.host, port=config.port, log_level=args.log_level.lower(), **tls)
    lock.close()
    return 0


def _lock_data_dir(data_dir: Path):
    """One server per data dir: two would run the same queued jobs. The OS drops the lock if the process dies."""
    import fcntl

    f = open(data_dir / "server.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError("another void-server is already using the data dir %s: stop it, or give this one "
                          "another --data-dir" % data_dir)
    return f


def _check(ok: bool, what: str, fix: str = "") -> bool:
    print("  %-8s %s%s" % ("ok" if ok else "PROBLEM", what, "" if ok else "\n           fix: " + fix))
    return ok


def doctor_checks(config: ServerConfig) -> List[bool]:
    from .api.health import gpu_info

    results = []
    for module, why in (("fastapi", "the HTTP server"), ("uvicorn", "the HTTP server"), ("OpenEXR", "EXR in and out"),
                        ("cv2", "PNG and video"), ("torch", "the GPU pipelines"), ("diffusers", "the VOID pipeline")):
        try:
            importlib.import_module(module)
            results.append(_check(True, "%s importable (%s)" % (module, why)))
        except ImportError as e:
            results.append(_check(False, "%s missing (%s): %s" % (module, why, e), "./install.sh (server extras)"))
    gpus = gpu_info()
    results.append(_check(bool(gpus), "CUDA GPUs: %s" % (", ".join("%s (%.1f of %.1f GiB free)" % (
        g["name"], g["free_vram_gib"], g["total_vram_gib"]) for g in gpus) or "none"),
        "install the NVIDIA driver and the CUDA build of torch; without a GPU only --pipeline preview runs"))
    try:
        from .pipelines.void.weights import check_model_dir
    except ImportError as e:
        results.append(_check(False, "cannot check the weights: %s" % e, "reinstall the server package"))
    else:
        problems = check_model_dir(config.model_dir)
        results.append(_check(not problems, "VOID weights in %s%s" % (config.model_dir, "".join(
            "\n             - %s" % p for p in problems)), "void-server download --model-dir %s" % config.model_dir))
    from .reasoning.remote_vlm import RemoteVLMConfig
    from .reasoning.weights import check_reasoning_models

    try:
        remote = RemoteVLMConfig.from_options(config.options)
    except ValueError as e:
        results.append(_check(False, "remote VLM: pipeline option %s" % e, "fix the vlm_* pipeline options"))
        remote = None
    else:
        if remote is not None:  # asked for its model list only: doctor sends no frames anywhere
            from .reasoning.remote_vlm import probe

            problem = probe(remote)
            results.append(_check(problem is None, "auto mask mode asks %s at %s%s" % (
                remote.model, remote.url, "" if problem is None else ": " + problem),
                "start the VLM server, or fix vlm_url / vlm_model / the key's variable"))
    problems = check_reasoning_models(config.model_dir, remote_vlm=remote is not None)
    # Optional: without them the auto mask mode falls back to the target alone, and says so in the job.
    print("  %-8s auto mask mode models (%sSAM2) in %s%s" % (
        "ok" if not problems else "optional", "" if remote is not None else "VLM + ", config.model_dir,
        "".join("\n             - %s" % p for p in problems)
        + ("\n           fix: void-server download --reasoning --model-dir %s" % config.model_dir if problems else "")))
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=str(config.data_dir)):
            pass
        results.append(_check(True, "data dir %s writable" % config.data_dir))
    except OSError as e:
        results.append(_check(False, "data dir %s not writable: %s" % (config.data_dir, e),
                              "choose another with --data-dir or fix its permissions"))
    if config.data_dir.exists():
        free = shutil.disk_usage(str(config.data_dir)).free / 2**30
        results.append(_check(free >= MIN_FREE_DISK_GIB, "%.0f GiB free under %s" % (free, config.data_dir),
                              "free space or move --data-dir: a 4K job needs about %.0f GiB" % MIN_FREE_DISK_GIB))
    print("  %-8s %s" % ("info", compile_cache_state(_compile_cache_folder(config.data_dir / "compile-cache"))))
    print("  %-8s %s" % ("info", attention_state()))
    print("  %-8s %s" % ("info", speed_state(config.memory_mode)))
    return results


def speed_state(memory_mode: str) -> str:
    """Which Speed settings this GPU runs in the memory mode a job would get here (the node's lossless, fast and
    fastest): fastest's float8 needs compute capability 8.9+ and each transformer whole on the GPU."""
    try:
        import torch

        from .pipelines.void.fp8_linear import Fp8Unsupported, require
        from .pipelines.void.loading import choose_memory_mode
    except ImportError as e:
        return "speeds: unknown (%s)" % e
    if not torch.cuda.is_available():
        return ("speeds: no CUDA GPU here: lossless and fast run on the CPU (for tests: far too slow for shots); "
                "fastest does not")
    gpu = torch.device("cuda")
    mode = choose_memory_mode(gpu, memory_mode)
    free = torch.cuda.mem_get_info(gpu)[0] / 2**30
    try:
        require(gpu, mode)
        fastest = "fastest too"
    except Fp8Unsupported as e:
        fastest = "not fastest: %s" % e
    return "speeds: %s, %.0f GiB free, memory mode %s%s: lossless, fast, %s" % (
        torch.cuda.get_device_name(gpu), free, mode, " (auto's choice)" if memory_mode == "auto" else "", fastest)


def attention_state() -> str:
    """Which attention the transformers will run (the `attention` option's auto choice), and how to get the faster."""
    try:
        import torch

        from .pipelines.void.accel import FA4_INSTALL, FA4_NOT_INSTALLED, fa4_unusable_reason
    except ImportError as e:
        return "attention: unknown (%s)" % e
    why = fa4_unusable_reason(torch.device("cuda"))
    if why is None:
        return "attention: FlashAttention-4 (its self-check against SDPA passed on this GPU)"
    if why == FA4_NOT_INSTALLED:
        return ("attention: SDPA. FlashAttention-4 (about 10%% faster end to end on Hopper and Blackwell GPUs, same "
                "output to bf16 rounding) is not installed: %s" % FA4_INSTALL)
    return "attention: SDPA (FlashAttention-4 is installed but not used: %s)" % why


def _compile_cache_folder(default: Path) -> Path:
    """Where the pipeline keeps its compiled graphs: `default`, or a TORCHINDUCTOR_CACHE_DIR of this environment."""
    try:
        from .pipelines.void.accel import compile_cache_folder
    except ImportError:  # no torch: the package check above says so; the folder is the default one
        return default
    return compile_cache_folder(default)


def compile_cache_state(cache: Path) -> str:
    """What the next start's warm-up will cost: the compiled graphs (transformer blocks, VAE) are kept here."""
    size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) if cache.is_dir() else 0
    if size == 0:
        return ("compile cache %s is empty: the next GPU start compiles for a few minutes before it says ready "
                "(later starts reuse it)" % cache)
    # pipelines/void/precompiled.py's files: the VAE's graphs a start loads instead of tracing (literal: no torch here)
    precompiled = len(list((cache / "void-precompiled").glob("*.bin")))
    return "compile cache %s holds %.0f MiB (%d precompiled VAE graphs): a GPU start warms up much faster" % (
        cache, size / 2**20, precompiled)


def cmd_doctor(args: argparse.Namespace) -> int:
    config = config_from(args)
    print("VOID server %s, Python %s" % (_version(), sys.version.split()[0]))
    results = doctor_checks(config)
    bad = results.count(False)
    print("\n%s" % ("all good" if not bad else "%d problem%s to fix (see above)" % (bad, "s" if bad > 1 else "")))
    return 1 if bad else 0


def _version() -> str:
    from .api.health import server_version

    return server_version()


def cmd_download(args: argparse.Namespace) -> int:
    from .pipelines.void.download import run_download

    model_dir = Path(args.model_dir or load_config({}, args.config).model_dir).expanduser()
    kwargs = {"parts": args.parts} if args.parts else {}
    problems = [] if args.reasoning_only else (run_download(model_dir, **kwargs) or [])
    if args.reasoning or args.reasoning_only:
        from .reasoning.weights import check_reasoning_models, download_reasoning_models

        download_reasoning_models(model_dir)
        problems += check_reasoning_models(model_dir)
    for p in problems:
        print("void-server download: still missing: %s" % p, file=sys.stderr)
    return 1 if problems else 0


def cmd_parity(args: argparse.Namespace) -> int:
    from .pipelines.void.parity import run_parity

    run_parity(args.case_dir, args.out)
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """Lossless, then each speed option, on the samples; 0 when every option reaches the bar, 1 when one does not."""
    from nuke_void.jobspec import SpecError

    from .pipelines import load_pipeline
    from .pipelines.base import PipelineUnavailable
    from .quality.check import SampleError, Sample, check_quality, format_report, variants, write_report

    try:
        samples = [Sample.from_folder(f) for f in args.samples]
        options = variants([s for s in args.speeds.split(",") if s], args.step_cache or (), args.steps or ())
    except (SampleError, SpecError) as e:
        print("void-server quality: %s" % e, file=sys.stderr)
        return 2
    if len({s.name for s in samples}) != len(samples):
        print("void-server quality: two samples share a folder name; give each sample once", file=sys.stderr)
        return 2
    config = load_config({"model_dir": args.model_dir, "data_dir": args.data_dir, "memory_mode": args.memory_mode,
                          "options": dict(args.options)}, args.config)
    try:
        pipeline = load_pipeline("void", config)
    except PipelineUnavailable as e:
        print("void-server quality: %s" % e, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".frames-", dir=str(args.out)))  # the jobs' frames while they are compared
    try:
        warm_up = getattr(pipeline, "warm_up", None)
        if warm_up is not None and getattr(pipeline, "warm_up_by_default", False):
            # As a server start does, so the lossless job's time is a warm one (lossy options may compile once more).
            print("warming up: loading every model and compiling its graphs ...", flush=True)
            warm_up()
        report = check_quality(pipeline, samples, options, work, bar_db=args.bar, preset=args.preset, seed=args.seed,
                               memory_mode=config.memory_mode)
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
        close = getattr(pipeline, "close", None)
        if close is not None:
            close()
    print("\n" + format_report(report))
    for path in write_report(report, args.out):
        print("wrote %s" % path)
    return 0 if report.passed else 1


def _thresholds(text: str) -> List[float]:
    from nuke_void.jobspec import MAX_STEP_CACHE

    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("'%s' is not a comma-separated list of thresholds, e.g. 0.05,0.1" % text)
    if not values or not all(0 < v <= MAX_STEP_CACHE for v in values):
        raise argparse.ArgumentTypeError("step-cache thresholds lie in (0, %g]; 0.05-0.2 is the useful range"
                                         % MAX_STEP_CACHE)
    return values


def _step_counts(text: str) -> List[Tuple[int, int]]:
    pairs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        p1, sep, p2 = item.partition("+")
        if not (sep and p1.isdigit() and p2.isdigit() and int(p1) > 0 and int(p2) > 0):
            raise argparse.ArgumentTypeError("'%s' is not PASS1+PASS2 denoising steps, e.g. 30+50,20+25" % item)
        pairs.append((int(p1), int(p2)))
    if not pairs:
        raise argparse.ArgumentTypeError("give at least one PASS1+PASS2, e.g. 30+50")
    return pairs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="void-server", description="The VOID for Nuke inference server.")
    p.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server")
    _config_flags(serve)
    serve.set_defaults(func=cmd_serve)
    doctor = sub.add_parser("doctor", help="check the install and say what to fix")
    _config_flags(doctor)
    doctor.set_defaults(func=cmd_doctor)
    download = sub.add_parser("download", help="fetch the VOID weights into the model directory")
    download.add_argument("--config", type=Path)
    download.add_argument("--model-dir", type=Path)
    download.add_argument("--parts", nargs="+", choices=("base", "void", "raft"),
                          help="only these parts (default: all)")
    download.add_argument("--reasoning", action="store_true",
                          help="also the auto mask mode's models (Qwen3-VL-8B-Instruct, SAM 2.1 hiera-large)")
    download.add_argument("--reasoning-only", action="store_true", help="only the auto mask mode's models")
    download.set_defaults(func=cmd_download)
    parity = sub.add_parser("parity", help="compare this implementation with the reference on a fixture case")
    parity.add_argument("case_dir", type=Path)
    parity.add_argument("--out", type=Path, default=Path("parity-out"))
    parity.set_defaults(func=cmd_parity)
    quality = sub.add_parser("quality", help="judge the lossy speed options against lossless on sample shots, with "
                             "this server's weights")
    quality.add_argument("samples", nargs="+", type=Path, metavar="SAMPLE",
                         help="a folder in VOID's sample layout: input_video.mp4, one *quadmask*.mp4, prompt.json")
    quality.add_argument("--config", type=Path)
    quality.add_argument("--model-dir", type=Path)
    quality.add_argument("--data-dir", type=Path, help="the server's data dir, whose compile cache the jobs share "
                         "(default ~/.void/data)")
    quality.add_argument("--memory-mode", choices=MEMORY_MODES)
    quality.add_argument("--pipeline-option", dest="options", action="append", type=_option, default=[],
                         metavar="KEY=VALUE", help="a pipeline-specific setting (repeatable), as for serve")
    quality.add_argument("--speeds", default="fast,fastest", help="the speed options to judge (default fast,fastest)")
    quality.add_argument("--step-cache", type=_thresholds, metavar="T[,T...]",
                         help="judge each step-cache option at these thresholds instead of its own")
    quality.add_argument("--steps", type=_step_counts, metavar="P1+P2[,P1+P2...]",
                         help="judge each option at these denoising steps instead of its own, as the node's Advanced "
                         "tab overrides them (with --speeds lossless: fewer steps alone)")
    quality.add_argument("--preset", default="reference", choices=("draft", "reference"), help="the quality preset")
    quality.add_argument("--seed", type=int, default=42)
    quality.add_argument("--bar", type=float, default=35.0, help="edit-region PSNR (dB) an option must reach")
    quality.add_argument("--out", type=Path, default=Path("quality-out"), help="where quality.json and quality.md go")
    quality.set_defaults(func=cmd_quality)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ConfigError as e:
        print("void-server: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
