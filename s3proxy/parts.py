"""The parts of :class:`~s3proxy.config.Config`, one per component, each a frozen dataclass
that checks itself (see :func:`~s3proxy.settings.check`) and does no I/O.

Each field is declared once, here: default, help, ``--help`` group, flags, the original
proxy's variable, type and bounds. The command's options are made from these declarations
(:mod:`s3proxy.cli`), so a new field is at once a new option, ``S3PROXY_<NAME>`` variable,
``--help`` line and check. The field declarations keep one setting to a few lines, which
the formatter would spread over ten.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass

from s3proxy.cors import CorsPolicy
from s3proxy.cors import check as check_cors
from s3proxy.keys import normalize_prefix
from s3proxy.params import CORS, CPU_LIST, NETWORKS, ORIGINS, PORT, ROUTING_RULES, SIZE, OneOf
from s3proxy.settings import check, fail, setting
from s3proxy.website import RoutingRule, site_url

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SERVER, MANAGEMENT, S3, CACHE, SITE, LOGS = (
    "Server",
    "Management",
    "S3",
    "Cache",
    "Website",
    "Logging",
)
GEOIP, AKUMULI, MONGO, ILP = "GeoIP", "Akumuli sink", "MongoDB sink", "Line protocol sink"
SINKS = "Metrics sinks"
INSTANCES = "Group of instances"
#: The order of the groups in ``--help``.
GROUPS = (SERVER, S3, CACHE, SITE, MANAGEMENT, INSTANCES, LOGS, SINKS, GEOIP, AKUMULI, MONGO, ILP)


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/s3proxy``, else ``~/.cache/s3proxy``; a private temp dir as a last
    resort (the original used ``/tmp`` itself, which any local user can write into)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        base = os.path.join(tempfile.gettempdir(), f"s3proxy-{os.getuid()}")
    return os.path.join(base, "s3proxy")


def default_workers() -> int:
    """One worker per CPU this process may use (affinity, cgroup quota; see cpus.py)."""
    from s3proxy.cpus import usable_cpus

    return usable_cpus()


# fmt: off
@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessConfig:
    """The server process: where it listens, how many workers, the management token."""

    host: str = setting("0.0.0.0", group=SERVER, help="Address to listen on.")
    port: int = setting(
        8000, group=SERVER, short="-p", env="PORT", type=PORT, between=(0, 65535),
        help="Port to listen on.")
    threads: int = setting(
        factory=default_workers, group=SERVER, short="-n", env="THREADS", between=(1, 256),
        shown="usable CPUs",
        help="Worker processes (they share one cache); default: the CPUs this process may "
        "use (affinity, cgroup quota).")
    max_header_size: int = setting(
        64 * 1024, group=SERVER, type=SIZE, between=(1024, 16 * 1024 * 1024),
        help="Bytes a request line and its headers may take; longer heads get 431.")
    max_header_fields: int = setting(
        100, group=SERVER, between=(1, 10_000),
        help="Header fields a request may have; more get 431.")
    header_timeout: float = setting(
        60.0, group=SERVER, between=(0.1, 3600),
        help="Seconds a request line and its headers may take to arrive; a slower head "
        "gets 408.")
    max_connections: int = setting(
        1024, group=SERVER, between=(1, 1_000_000),
        help="Client connections each worker serves at once; more get 503.")
    auth_key: str | None = setting(
        None, group=MANAGEMENT, short="-a", env="AUTH_KEY", secret=True,
        shown="none: API disabled",
        help="Bearer token for /_proxy/_private/...; without it the API is disabled.")
    fast_path: bool = setting(
        True, group=SERVER,
        help="Answer fresh cache hits in the HTTP protocol itself, before the ASGI app: the "
        "same answers, several times faster (README: Performance).")
    strict_startup: bool = setting(
        False, group=SERVER,
        help="Exit 1 when the startup check finds S3 will not serve the bucket (default: "
        "serve, with /_proxy/ready answering 503).")
    sites_file: str | None = setting(
        None, group=SERVER, flag="config", shown="none: one site",
        help="A TOML file of S3 servers and sites chosen by Host (README: Many sites); the S3 "
        "and website options are then the defaults each server and site inherits. Reloaded "
        "on SIGHUP and when it changes.")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogsConfig:
    """Log settings, shared by the server, its workers and their sink processes."""

    log_level: str = setting(
        "info", group=LOGS, short="-l", env="LOG_LEVEL", type=OneOf(LOG_LEVELS, "log level"),
        help="debug, info, warning, error or critical.")
    log_dir: str | None = setting(
        "logs/", group=LOGS, short="-o", env="LOG_DIR", flag="dir",
        help="Directory for log files, one per UTC day; '' for none.")
    log_format: str = setting(
        "json", group=LOGS, type=OneOf(("json", "console", "combined"), "log format"),
        help="Log line format: json, console, or nginx's combined for tools that read it "
        "(events then go as JSON to s3proxy-events-<date>.log).")
    log_retention: int = setting(
        14, group=LOGS, between=(0, 36500),
        help="Days of daily log files to keep: older ones are deleted; 0 keeps them all.")
    console: bool = setting(
        False, group=LOGS, short="-c", help="Also write logs to stdout (--console true).")

    def __post_init__(self) -> None:
        check(self)
        if not self.log_dir:
            object.__setattr__(self, "log_dir", None)


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheConfig:
    """Where and how much the cache stores (disk and each worker's memory tier)."""

    cache_dir: str = setting(
        factory=default_cache_dir, group=CACHE, short="-d", env="CACHE_DIR",
        shown="~/.cache/s3proxy", help="Where cached bodies live ($XDG_CACHE_HOME/s3proxy if set).")
    memory_cache_size: int = setting(
        64 * 1024 * 1024, group=CACHE, type=SIZE, between=(0, 1 << 40),
        help="Bytes of small objects each worker keeps in memory.")
    memory_object_size: int = setting(
        1024 * 1024, group=CACHE, type=SIZE, between=(0, 1 << 32),
        help="Objects up to this size are kept in the memory tier.")
    cache_max_object_size: int = setting(
        1024**3, group=CACHE, type=SIZE, between=(0, 1 << 50),
        help="Larger objects stream from S3 without being cached.")
    cache_max_size: int = setting(
        10 * 1024**3, group=CACHE, type=SIZE, between=(1, 1 << 60),
        help="Bound on the disk cache; least recently used objects are evicted.")

    def __post_init__(self) -> None:
        check(self)
        if not os.path.isabs(self.cache_dir):
            object.__setattr__(self, "cache_dir", os.path.abspath(self.cache_dir))


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginConfig:
    """The S3 bucket and how to reach it."""

    bucket: str | None = setting(
        None, group=S3, short="-b", env="S3_BUCKET", shown="required",
        help="The S3 bucket to serve (required, unless --config names each site's).")
    region: str | None = setting(
        None, group=S3, short="-r", env="AWS_REGION", shown="AWS's default",
        help="The bucket's region.")
    key: str | None = setting(
        None, group=S3, short="-k", env="AWS_KEY", secret=True, shown="credential chain",
        help="AWS access key id (default: the AWS credential chain).")
    secret: str | None = setting(
        None, group=S3, short="-s", env="AWS_SECRET", secret=True,
        help="AWS secret access key.")
    endpoint_url: str | None = setting(
        None, group=S3, shown="AWS", help="S3-compatible endpoint (MinIO, R2...). Default: "
        "AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS.")
    path_style: bool = setting(
        False, group=S3,
        help="Path-style addressing (http://host/bucket/key) for S3-compatible stores.")
    connect_timeout: float = setting(
        5.0, group=S3, between=(0.001, 86400), help="Seconds to connect to S3.")
    read_timeout: float = setting(
        30.0, group=S3, between=(0.001, 86400), help="Seconds to wait on S3 reads.")
    origin_deadline: float = setting(
        10.0, group=S3, between=(0.001, 86400),
        help="Seconds a request waits for S3 in all, retries included.")
    s3_max_connections: int = setting(
        64, group=S3, between=(1, 100_000),
        help="S3 requests each worker makes at once, at most (its connection pool); more "
        "wait for a free connection.")

    def __post_init__(self) -> None:
        check(self)
        if self.bucket is not None and (not self.bucket or "/" in self.bucket):
            raise fail(self, "bucket", f'"{self.bucket}" is not a bucket name')
        if self.endpoint_url is not None and not re.match(r"^https?://", self.endpoint_url):
            raise fail(self, "endpoint_url", f'"{self.endpoint_url}" is not an http(s):// URL')

    @property
    def addressing_style(self) -> str:
        """botocore's ``addressing_style``: ``path`` or ``auto``."""
        return "path" if self.path_style else "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteConfig:
    """How one site answers: the bucket folder it serves, its documents, freshness, CORS."""

    prefix: str = setting("", group=SITE, help="Serve this folder of the bucket as the site root.")
    ttl: int = setting(
        300, group=CACHE, short="-t", env="TTL", between=(0, 10 * 365 * 86400),
        help="Seconds an object is served from the cache before S3 is asked again.")
    honor_cache_control: bool = setting(
        False, group=CACHE, help="Freshness from each object's own Cache-Control (s-maxage, "
        "max-age, no-cache) or Expires, with --ttl only for objects that have neither.")
    stale_if_error: int = setting(
        3600, group=CACHE, between=(0, 365 * 86400),
        help="Seconds past expiry an object may be served while S3 fails.")
    stale_while_revalidate: int = setting(
        0, group=CACHE, between=(0, 365 * 86400),
        help="Seconds past expiry an object is served at once while S3 is asked again in the "
        "background (RFC 5861); 0: off, requests wait for S3.")
    error_ttl: float = setting(
        5.0, group=CACHE, between=(0, 3600),
        help="Seconds a failure of S3 for a key (5xx, timeout, refused) is remembered: requests "
        "for it get the stale copy, else the same 502/504, without asking S3; 0: off.")
    index_document: str = setting(
        "index.html", group=SITE, help="Served for paths that end in '/'.")
    error_document: str | None = setting(
        None, group=SITE, help="Key (under --prefix) of the page served with 404s, e.g. 404.html.")
    spa: bool = setting(
        False, group=SITE,
        help="Single-page app: unknown paths without an extension serve the index.")
    redirect_folders: bool = setting(
        True, group=SITE, help="Redirect /docs to /docs/ when docs/<index> exists.")
    listing: bool = setting(
        False, group=SITE, help="List a folder whose index document is missing: its objects "
        "and subfolders as HTML, or JSON when Accept prefers it (README: Many sites).")
    compress: bool = setting(
        True, group=SITE,
        help="gzip/brotli for text types of 1 KiB to 8 MiB, made once per object.")
    reject_query_strings: bool = setting(
        False, group=SITE, short="-j", env="REJECT_QUERY_STRINGS",
        help="Answer 400 to requests with a query string (default: ignore it).")
    allowed_origins: tuple[str, ...] = setting(
        (), group=SITE, env="ALLOWED_ORIGINS", type=ORIGINS, shown="none",
        help="CORS origins, a JSON array: '[\"https://example.com\"]' or '[\"*\"]' (--cors's "
        "allow_origins).")
    cors: CorsPolicy = setting(
        CorsPolicy(), group=SITE, type=CORS, shown="none",
        help="CORS in full, a JSON object of allow_origins (else --allowed-origins), "
        "allow_methods, allow_headers, expose_headers, max_age, allow_credentials (README: "
        "Many sites).")
    redirect_all: str | None = setting(
        None, group=SITE, shown="none",
        help="Redirect every request to this site, e.g. https://www.example.com, keeping path "
        "and query (S3's RedirectAllRequestsTo).")
    routing_rules: tuple[RoutingRule, ...] = setting(
        (), group=SITE, type=ROUTING_RULES, shown="none",
        help="S3 website routing rules, the JSON 'aws s3api get-bucket-website' prints; at "
        "most 50, the first match wins.")
    trusted_proxies: tuple[str, ...] = setting(
        (), group=SERVER, env="TRUSTED_PROXIES", type=NETWORKS, shown="all",
        help="Comma-separated addresses/networks whose X-Real-IP/X-Forwarded-For are believed "
        "(default: every peer's, as the original did) and whose X-Request-Id is kept.")

    def __post_init__(self) -> None:
        check(self)
        try:
            object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        except ValueError as exc:
            raise fail(self, "prefix", str(exc)) from None
        try:
            check_cors(self.cors, self.allowed_origins)
        except ValueError as exc:
            raise fail(self, "cors", str(exc)) from None
        if not self.index_document or "/" in self.index_document:
            raise fail(self, "index_document", f'"{self.index_document}" is not a file name')
        if self.redirect_all is not None:
            try:
                site_url(self.redirect_all)
            except ValueError as exc:
                raise fail(self, "redirect_all", str(exc)) from None
        if self.error_document is not None:
            try:
                document = normalize_prefix(self.error_document)[:-1]
            except ValueError as exc:
                raise fail(self, "error_document", str(exc)) from None
            object.__setattr__(self, "error_document", document or None)


@dataclass(frozen=True, slots=True, kw_only=True)
class SinksConfig:
    """Where request records go (each sink is off unless its host, URI or flag is set)."""

    mmdb_host: str | None = setting(
        None, group=GEOIP, short="-m", env="MMDB_HOST", help="mmdb-ws GeoIP service host.")
    mmdb_port: int = setting(
        8010, group=GEOIP, short="-x", env="MMDB_PORT", type=PORT, between=(1, 65535),
        help="mmdb-ws port.")
    mmdb_file: str | None = setting(
        None, group=GEOIP, env="MMDB_FILE", help="A MaxMind DB file for GeoIP, read directly.")
    akumuli_host: str | None = setting(
        None, group=AKUMULI, env="AKUMULI_HOST", help="Akumuli TCP write service host.")
    akumuli_port: int = setting(
        8282, group=AKUMULI, env="AKUMULI_PORT", type=PORT, between=(1, 65535),
        help="Akumuli port.")
    metric_prefix: str = setting(
        "request", group=AKUMULI, env="METRIC_PREFIX", help="Akumuli series prefix.")
    mongo_uri: str | None = setting(
        None, group=MONGO, short="-f", env="MONGO_URI", secret=True,
        help="MongoDB connection string for request metrics.")
    mongo_database: str = setting(
        "metrics", group=MONGO, short="-g", env="MONGO_DATABASE", help="MongoDB database.")
    mongo_collection: str = setting(
        "request", group=MONGO, short="-i", env="MONGO_COLLECTION", help="MongoDB collection.")
    ilp_host: str | None = setting(  # secret: an HTTP URL may hold a password
        None, group=ILP, short="-y", env="ILP_HOST", secret=True,
        help="Line protocol host (TCP), or an http://host:port/db URL.")
    ilp_port: int = setting(
        9009, group=ILP, short="-z", env="ILP_PORT", type=PORT, between=(1, 65535),
        help="Line protocol TCP port (ignored for http:// URLs).")
    ilp_series_name: str = setting(
        "request", group=ILP, short="-e", env="ILP_SERIES_NAME",
        help="Line protocol measurement.")
    prometheus: bool = setting(
        False, group=MANAGEMENT,
        help="Prometheus metrics at /_proxy/_private/metrics (bearer-protected).")
    sink_queue_size: int = setting(
        10_000, group=SINKS, between=(1, 10_000_000),
        help="Records each metrics sink may hold before it drops new ones.")
    sink_cpus: tuple[int, ...] = setting(
        (), group=SINKS, type=CPU_LIST, shown="none",
        help="CPUs to reserve for the metrics sink processes, as taskset writes them (3, 2-3, "
        "0,2-3); the workers then run on the other CPUs (default: all share all).")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupConfig:
    """Instances behind one load balancer that share purges through Redis (s3proxy.group);
    off, and nothing of it imported, without a URL."""

    redis_url: str | None = setting(  # secret: the URL may hold the password
        None, group=INSTANCES, secret=True, shown="none: this instance alone",
        help="Redis that a group of instances shares clears and purges through: "
        "redis://host:6379/0, rediss:// for TLS, unix:///path.sock.")
    redis_password: str | None = setting(
        None, group=INSTANCES, secret=True,
        help="Redis password, when the URL has none (safer in S3PROXY_REDIS_PASSWORD than "
        "on the command line).")

    def __post_init__(self) -> None:
        check(self)
        if self.redis_url is not None:
            scheme = self.redis_url.partition("://")[0]
            if scheme not in ("redis", "rediss", "unix"):
                raise fail(self, "redis_url", "use redis://, rediss:// or unix://")
# fmt: on
