"""Validated, immutable settings. Construction does no I/O; :func:`check_environment` does the
checks that touch the machine (cache dir writable) and runs once at startup.

:class:`Config` is one frozen part per component (process, logs, cache, origin, site, sinks);
each component is built from its part alone. Every field has a CLI option of the same name
(``cache_dir`` -> ``--cache-dir``), see :mod:`s3proxy.cli`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from s3proxy.exceptions import ConfigError
from s3proxy.keys import normalize_prefix

AddressingStyle = Literal["auto", "path", "virtual"]
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$", re.IGNORECASE)
_CPU_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/s3proxy``, else ``~/.cache/s3proxy``; a private temp dir as a last
    resort (the original used ``/tmp`` itself, which any local user can write into)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        base = os.path.join(tempfile.gettempdir(), f"s3proxy-{os.getuid()}")
    return os.path.join(base, "s3proxy")


def parse_size(value: str | int) -> int:
    """Parse ``10g``, ``512m``, ``64KiB``, ``1.5g`` or a plain byte count (binary units)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"invalid size {value!r}: use a byte count or e.g. 512m, 10g")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** "bkmgt".index(unit or "b"))


def parse_cpu_list(value: str | None) -> tuple[int, ...]:
    """Parse a CPU list as ``taskset -c`` and cpusets write it: ``3``, ``2-3``, ``0,2-3``
    (sorted, without repeats); empty or ``None`` is no list."""
    if value is None or not value.strip():
        return ()
    cpus: set[int] = set()
    for part in value.split(","):
        match = _CPU_RANGE.match(part)
        if not match:
            raise ConfigError(f"invalid CPU list {value!r}: use e.g. 3, 2-3 or 0,2-3")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first or last >= 4096:
            raise ConfigError(f"invalid CPU range {part.strip()!r} in {value!r}")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def parse_origins(value: str | None) -> tuple[str, ...]:
    """Parse ``ALLOWED_ORIGINS``: a JSON array of origins (``https://example.com``) or ``"*"``."""
    if value is None or not value.strip():
        return ()
    try:
        origins = json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError(
            'ALLOWED_ORIGINS must be a JSON array, e.g. ["https://example.com"]'
        ) from None
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError("ALLOWED_ORIGINS must be a JSON array of strings")
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ConfigError(
                f"ALLOWED_ORIGINS: {origin!r} is not an origin like https://host[:port]"
            )
    return tuple(o.rstrip("/").lower() for o in origins)


def _tuples(part: Any) -> None:
    """Lists (from JSON) become tuples, so every part stays hashable and immutable."""
    for f in fields(part):
        value = getattr(part, f.name)
        if isinstance(value, list):
            object.__setattr__(part, f.name, tuple(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessConfig:
    """The server process: where it listens, how many workers, the management token."""

    host: str = "0.0.0.0"
    port: int = 8000
    threads: int = 1
    max_header_size: int = 64 * 1024
    auth_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_range("port", self.port, 0, 65535)
        _check_range("threads", self.threads, 1, 256)
        _check_range("max_header_size", self.max_header_size, 1024, 16 * 1024 * 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsConfig:
    """Log settings, shared by the server, its workers and their sink processes."""

    log_level: str = "info"
    log_dir: str | None = "logs/"
    log_format: Literal["json", "console"] = "json"
    console: bool = False

    def __post_init__(self) -> None:
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        object.__setattr__(self, "log_level", self.log_level.lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Where and how much the cache stores (disk and each worker's memory tier)."""

    cache_dir: str = field(default_factory=default_cache_dir)
    memory_cache_size: int = 64 * 1024 * 1024
    memory_object_size: int = 1024 * 1024
    cache_max_object_size: int = 1024**3
    cache_max_size: int = 10 * 1024**3

    def __post_init__(self) -> None:
        _check_range("memory_cache_size", self.memory_cache_size, 0, 1 << 40)
        _check_range("memory_object_size", self.memory_object_size, 0, 1 << 32)
        _check_range("cache_max_object_size", self.cache_max_object_size, 0, 1 << 50)
        _check_range("cache_max_size", self.cache_max_size, 1, 1 << 60)
        if not os.path.isabs(self.cache_dir):
            object.__setattr__(self, "cache_dir", os.path.abspath(self.cache_dir))


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginConfig:
    """The S3 bucket and how to reach it."""

    bucket: str
    region: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    addressing_style: AddressingStyle = "auto"
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise ConfigError(f"invalid bucket name {self.bucket!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError("timeouts must be positive numbers of seconds")
        if self.addressing_style not in ("auto", "path", "virtual"):
            raise ConfigError("addressing style must be auto, path or virtual")
        if self.endpoint_url is not None and not re.match(r"^https?://", self.endpoint_url):
            raise ConfigError(
                f"endpoint URL must start with http:// or https://: {self.endpoint_url!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    """How one site answers: the bucket folder it serves, its documents, freshness, CORS."""

    prefix: str = ""
    ttl: int = 300
    honor_cache_control: bool = False
    stale_if_error: int = 3600
    index_document: str = "index.html"
    error_document: str | None = None
    spa: bool = False
    redirect_folders: bool = True
    compress: bool = True
    reject_query_strings: bool = False
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _tuples(self)
        try:
            object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        _check_range("ttl", self.ttl, 0, 10 * 365 * 86400)
        _check_range("stale_if_error", self.stale_if_error, 0, 365 * 86400)
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(
                    f"--trusted-proxies: {network!r} is not an IP address or network"
                ) from None
        if not self.index_document or "/" in self.index_document:
            raise ConfigError("the index document must be a file name, e.g. index.html")
        if self.error_document is not None:
            try:
                object.__setattr__(
                    self, "error_document", normalize_prefix(self.error_document)[:-1]
                )
            except ValueError as exc:
                raise ConfigError(f"--error-document: {exc}") from None
            if not self.error_document:
                object.__setattr__(self, "error_document", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinksConfig:
    """Where request records go (each sink is off unless its host, URI or flag is set)."""

    mmdb_host: str | None = None
    mmdb_port: int = 8010
    mmdb_file: str | None = None
    akumuli_host: str | None = None
    akumuli_port: int = 8282
    metric_prefix: str = "request"
    mongo_uri: str | None = field(default=None, repr=False)
    mongo_database: str = "metrics"
    mongo_collection: str = "request"
    ilp_host: str | None = field(default=None, repr=False)  # an HTTP URL may hold a password
    ilp_port: int = 9009
    ilp_series_name: str = "request"
    prometheus: bool = False
    sink_queue_size: int = 10_000
    #: CPUs reserved for the sink processes; the workers then run on the others.
    sink_cpus: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _tuples(self)
        _check_range("mmdb_port", self.mmdb_port, 1, 65535)
        _check_range("akumuli_port", self.akumuli_port, 1, 65535)
        _check_range("ilp_port", self.ilp_port, 1, 65535)
        _check_range("sink_queue_size", self.sink_queue_size, 1, 10_000_000)

    @property
    def wanted(self) -> bool:
        """Whether any sink is configured (then each worker starts a sink process)."""
        return bool(self.akumuli_host or self.ilp_host or self.mongo_uri or self.prometheus)


Part = ProcessConfig | LogsConfig | CacheConfig | OriginConfig | SiteConfig | SinksConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything s3proxy needs to run, as one frozen part per component: each component is
    built from its own part only. Invalid values raise :class:`ConfigError`.

    :meth:`build` and :meth:`replace` take settings by their flat names (``cache_dir``,
    ``port``), which are also the CLI's option names; each name belongs to exactly one part."""

    origin: OriginConfig
    process: ProcessConfig = field(default_factory=ProcessConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)

    @classmethod
    def build(cls, **values: Any) -> Config:
        """A Config from flat settings (``bucket=..., port=...``); the rest take defaults."""
        parts = {name: PARTS[name](**part) for name, part in _split(values).items()}
        return cls(**parts)  # type: ignore[arg-type]

    def replace(self, **values: Any) -> Config:
        """A copy with some flat settings changed (each part revalidated)."""
        changed: dict[str, Part] = {
            name: dataclasses.replace(getattr(self, name), **part_values)
            for name, part_values in _split(values).items()
        }
        return dataclasses.replace(self, **changed)  # type: ignore[arg-type]

    def to_json(self) -> str:
        """Serialise for worker processes (they rebuild the Config from the environment)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        data: dict[str, dict[str, Any]] = json.loads(text)
        parts = {name: PARTS[name](**values) for name, values in data.items()}
        return cls(**parts)  # type: ignore[arg-type]


#: Config's parts by attribute name.
PARTS: dict[str, type[Part]] = {
    "origin": OriginConfig,
    "process": ProcessConfig,
    "logs": LogsConfig,
    "cache": CacheConfig,
    "site": SiteConfig,
    "sinks": SinksConfig,
}
#: Each flat setting's part.
PART_OF: dict[str, str] = {f.name: name for name, part in PARTS.items() for f in fields(part)}


def _split(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat settings grouped by part; raises TypeError for a name no part has."""
    parts: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if key not in PART_OF:
            raise TypeError(f"no setting named {key!r}")
        parts.setdefault(PART_OF[key], {})[key] = value
    return parts


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        option = "--" + name.replace("_", "-")
        raise ConfigError(f"{option} must be between {low} and {high}, got {value}")


def check_environment(config: Config) -> None:
    """Checks that need the machine: the cache dir must exist (it is created) and be writable."""
    path = Path(config.cache.cache_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cache dir {config.cache.cache_dir} is not writable: {exc.strerror}"
        ) from None
    if config.sinks.sink_cpus:
        usable = os.sched_getaffinity(0)
        missing = sorted(set(config.sinks.sink_cpus) - usable)
        if missing:
            raise ConfigError(
                f"--sink-cpus: CPU {missing[0]} is not one this process may use "
                f"({', '.join(map(str, sorted(usable)))})"
            )
