"""Server configuration: defaults < config file < environment (VOID_*) < command-line flags.

The same `ServerConfig` object is what `load_pipeline(name, config)` hands to every pipeline, so a pipeline reads
its model directory, memory mode and extra options from here (`options` holds pipeline-specific settings such
as the testing pipeline's `step_delay`).
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
PIPELINES = ("void", "preview", "testing")
CLUSTER_STORAGES = ("shared", "object_store")
MEMORY_MODES = ("auto", "gpu", "model_offload", "sequential_offload", "fp8")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting and where it came from."""


@dataclasses.dataclass
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path = Path("~/.void/data")
    model_dir: Path = Path("~/.void/models")
    token: Optional[str] = None
    memory_mode: str = "auto"
    concurrency: int = 1  # GPU jobs at once: one per GPU
    pipeline: str = "void"
    allowed_roots: List[Path] = dataclasses.field(default_factory=list)
    result_ttl_hours: float = 7 * 24.0  # finished jobs are deleted this long after they finish; 0 keeps them
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    tokens_file: Optional[Path] = None  # lines "USER TOKEN": one token per user; jobs belong to their user
    insecure: bool = False  # allow a non-loopback bind without any token (a trusted, isolated network only)
    tls_cert: Optional[Path] = None  # PEM certificate (chain) and key: the server speaks HTTPS
    tls_key: Optional[Path] = None
    max_upload_mb: float = 4096.0  # one uploaded file (a long 8-bit video or one big EXR frame)
    max_frames: int = 1000
    max_resolution: int = 4096  # longest side of the plate, in pixels (DCI 4K)
    cluster: Optional[str] = None  # Ray address ("auto", "HOST:PORT", "ray://HOST:PORT"): run jobs on the cluster
    cluster_storage: str = "shared"  # "shared" (DATA_DIR mounted on every worker) or "object_store"
    cluster_resource: str = "GPU"  # the Ray resource one worker takes a unit of (a custom one for CPU tests)
    gpus_per_worker: int = 1  # GPUs one job spreads its transformer work over (>1: one urgent shot on several GPUs)
    # Load every model and compile every graph before the server says ready (None: where the pipeline runs on a GPU).
    warm_up: Optional[bool] = None

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        self.model_dir = Path(self.model_dir).expanduser()
        self.allowed_roots = [Path(p).expanduser() for p in self.allowed_roots]
        for name in ("tokens_file", "tls_cert", "tls_key"):
            value = getattr(self, name)
            setattr(self, name, Path(value).expanduser() if value else None)
        self.validate()

    def validate(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ConfigError("pipeline '%s' is not one of %s" % (self.pipeline, ", ".join(PIPELINES)))
        if self.memory_mode not in MEMORY_MODES:
            raise ConfigError("memory_mode '%s' is not one of %s" % (self.memory_mode, ", ".join(MEMORY_MODES)))
        if not 0 < int(self.port) < 65536:
            raise ConfigError("port %s is not a TCP port (1-65535)" % self.port)
        if int(self.concurrency) < 1:
            raise ConfigError("concurrency must be at least 1, not %s" % self.concurrency)
        if int(self.gpus_per_worker) < 1:
            raise ConfigError("gpus_per_worker must be at least 1, not %s" % self.gpus_per_worker)
        if float(self.result_ttl_hours) < 0:
            raise ConfigError("result_ttl_hours must be 0 (keep) or more, not %s" % self.result_ttl_hours)
        for name in ("max_upload_mb", "max_frames", "max_resolution"):
            if float(getattr(self, name)) <= 0:
                raise ConfigError("%s must be more than 0, not %s" % (name, getattr(self, name)))
        if self.cluster_storage not in CLUSTER_STORAGES:
            raise ConfigError("cluster_storage '%s' is not one of %s" % (self.cluster_storage, ", ".join(CLUSTER_STORAGES)))
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both tls_cert and tls_key (PEM files), not only one")
        for name in ("tokens_file", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError("%s %s does not exist or is not a file" % (name, path))
        if not is_loopback(self.host) and not self.token and not self.tokens_file and not self.insecure:
            raise ConfigError("refusing to listen on %s without a token: anyone who can reach the port could read "
                              "and run jobs; set --token / VOID_TOKEN or --tokens-file, or pass --insecure on a "
                              "trusted network" % self.host)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.token or self.tokens_file)

    @property
    def max_upload_bytes(self) -> int:
        return int(float(self.max_upload_mb) * 2**20)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "void.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def is_loopback(host: str) -> bool:
    """Only this machine can reach the address (a host name other than localhost counts as reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


FIELDS = {f.name for f in dataclasses.fields(ServerConfig)}
# Environment variables: VOID_HOST, VOID_PORT, ..., VOID_ALLOWED_ROOTS (os.pathsep-separated).
ENV_PREFIX = "VOID_"
_INT = {"port", "concurrency", "max_frames", "max_resolution", "gpus_per_worker"}
_FLOAT = {"result_ttl_hours", "max_upload_mb"}
_BOOL = {"insecure", "warm_up"}


def _coerce(name: str, value: Any, where: str) -> Any:
    try:
        if name in _INT:
            return int(value)
        if name in _FLOAT:
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError("%s: %s must be a number, not %r" % (where, name, value))
    if name in _BOOL and isinstance(value, str):
        if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError("%s: %s must be true or false, not %r" % (where, name, value))
        return value.lower() in ("1", "true", "yes")
    if name == "allowed_roots":
        if isinstance(value, str):
            return [p for p in value.split(os.pathsep) if p]
        return list(value)
    if name == "options" and not isinstance(value, Mapping):
        raise ConfigError("%s: options must be a mapping of option names to values" % where)
    return value


def read_config_file(path: Path) -> Dict[str, Any]:
    """A YAML (or JSON) mapping of the same names as the flags, e.g. `port: 8765`."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError("config file %s cannot be read: %s" % (path, e.strerror))
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("config file %s must hold a mapping of settings" % path)
    unknown = sorted(set(k.replace("-", "_") for k in data) - FIELDS)
    if unknown:
        raise ConfigError("config file %s: unknown setting(s) %s; known: %s" % (path, ", ".join(unknown), ", ".join(sorted(FIELDS))))
    return {k.replace("-", "_"): _coerce(k.replace("-", "_"), v, "config file %s" % path) for k, v in data.items()}


def read_environment(environ: Mapping[str, str]) -> Dict[str, Any]:
    out = {}
    for name in FIELDS - {"options"}:
        key = ENV_PREFIX + name.upper()
        if environ.get(key):
            out[name] = _coerce(name, environ[key], "environment %s" % key)
    return out


def load_config(
    flags: Optional[Mapping[str, Any]] = None,
    config_file: Optional[Path] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> ServerConfig:
    """Merge the sources; `flags` holds only what was given on the command line (None values are ignored)."""
    environ = os.environ if environ is None else environ
    merged: Dict[str, Any] = {}
    config_file = config_file or (Path(environ["VOID_CONFIG"]) if environ.get("VOID_CONFIG") else None)
    if config_file:
        merged.update(read_config_file(Path(config_file)))
    merged.update(read_environment(environ))
    options = dict(merged.get("options") or {})
    for name, value in (flags or {}).items():
        if value is None or (name == "allowed_roots" and not value):
            continue
        if name == "options":
            options.update(value)
            continue
        merged[name] = _coerce(name, value, "flag --%s" % name.replace("_", "-"))
    merged["options"] = options
    return ServerConfig(**merged)
