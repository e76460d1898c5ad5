"""The ``s3proxy`` command: click options -> :class:`Config` -> :func:`s3proxy.server.run`.

Every option keeps the original proxy's name, short flag and default, and can come from the
environment: the original Docker image's variable (``S3_BUCKET``, ``TTL``...) or
``S3PROXY_<OPTION>`` (``S3PROXY_CACHE_DIR``). A bad value ends startup with one line on stderr
and exit code 2.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import click

from s3proxy import __version__
from s3proxy.config import (
    Config,
    default_cache_dir,
    parse_cpu_list,
    parse_origins,
    parse_size,
)
from s3proxy.exceptions import ConfigError


def _boolean(default: bool, help: str) -> dict[str, Any]:
    """A true/false option that also stands alone: ``--console true``, ``--console``."""
    return {
        "type": click.BOOL,
        "is_flag": False,
        "flag_value": True,
        "default": default,
        "help": help,
    }


# (option, short flag, original env var, click settings). The Config field is the option name
# with '-' as '_', except where noted in _FIELD.
_OPTIONS: list[tuple[str, str | None, str | None, dict[str, Any]]] = [
    ("bucket", "-b", "S3_BUCKET", {"help": "The S3 bucket to serve (required)."}),
    ("region", "-r", "AWS_REGION", {"help": "The bucket's region."}),
    ("key", "-k", "AWS_KEY", {"help": "AWS access key id (default: the AWS credential chain)."}),
    ("secret", "-s", "AWS_SECRET", {"help": "AWS secret access key."}),
    (
        "auth-key",
        "-a",
        "AUTH_KEY",
        {"help": "Bearer token for /_proxy/_private/...; without it the API is disabled."},
    ),
    (
        "endpoint-url",
        None,
        None,
        {
            "help": "S3-compatible endpoint (MinIO, R2...). Default: AWS_ENDPOINT_URL_S3, "
            "AWS_ENDPOINT_URL, else AWS."
        },
    ),
    (
        "path-style",
        None,
        None,
        _boolean(False, "Path-style addressing (http://host/bucket/key) for S3-compatible stores."),
    ),
    (
        "prefix",
        None,
        None,
        {"default": "", "help": "Serve this folder of the bucket as the site root."},
    ),
    ("host", None, None, {"default": "0.0.0.0", "show_default": True, "help": "Address to bind."}),
    (
        "port",
        "-p",
        "PORT",
        {
            "type": click.IntRange(0, 65535),
            "default": 8000,
            "show_default": True,
            "help": "Port to listen on.",
        },
    ),
    (
        "threads",
        "-n",
        "THREADS",
        {
            "type": int,
            "default": os.cpu_count() or 1,
            "show_default": True,
            "help": "Worker processes (they share one cache).",
        },
    ),
    (
        "ttl",
        "-t",
        "TTL",
        {
            "type": int,
            "default": 300,
            "show_default": True,
            "help": "Seconds an object is served from the cache before S3 is asked again.",
        },
    ),
    (
        "honor-cache-control",
        None,
        None,
        _boolean(
            False,
            "Freshness from each object's own Cache-Control (s-maxage, max-age, no-cache) "
            "or Expires, with --ttl only for objects that have neither.",
        ),
    ),
    (
        "cache-dir",
        "-d",
        "CACHE_DIR",
        {"default": default_cache_dir(), "show_default": True, "help": "Where cached bodies live."},
    ),
    (
        "memory-cache-size",
        None,
        None,
        {
            "default": "64m",
            "show_default": True,
            "help": "Bytes of small objects each worker keeps in memory (e.g. 64m).",
        },
    ),
    (
        "memory-object-size",
        None,
        None,
        {
            "default": "1m",
            "show_default": True,
            "help": "Objects up to this size are kept in the memory tier.",
        },
    ),
    (
        "cache-max-size",
        None,
        None,
        {
            "default": "10g",
            "show_default": True,
            "help": "Bound on the disk cache; least recently used objects are evicted.",
        },
    ),
    (
        "cache-max-object-size",
        None,
        None,
        {
            "default": "1g",
            "show_default": True,
            "help": "Larger objects stream from S3 without being cached.",
        },
    ),
    (
        "stale-if-error",
        None,
        None,
        {
            "type": int,
            "default": 3600,
            "show_default": True,
            "help": "Seconds past expiry an object may be served while S3 fails.",
        },
    ),
    (
        "index-document",
        None,
        None,
        {
            "default": "index.html",
            "show_default": True,
            "help": "Served for paths that end in '/'.",
        },
    ),
    (
        "error-document",
        None,
        None,
        {"help": "Key (under --prefix) of the page served with 404s, e.g. 404.html."},
    ),
    (
        "spa",
        None,
        None,
        _boolean(False, "Single-page app: unknown paths without an extension serve the index."),
    ),
    (
        "redirect-folders",
        None,
        None,
        _boolean(True, "Redirect /docs to /docs/ when docs/<index> exists."),
    ),
    (
        "compress",
        None,
        None,
        _boolean(True, "gzip/brotli for text types of 1 KiB to 8 MiB, made once per object."),
    ),
    (
        "reject-query-strings",
        "-j",
        "REJECT_QUERY_STRINGS",
        _boolean(False, "Answer 400 to requests with a query string (default: ignore it)."),
    ),
    (
        "allowed-origins",
        None,
        "ALLOWED_ORIGINS",
        {"help": "CORS origins, a JSON array: '[\"https://example.com\"]' or '[\"*\"]'."},
    ),
    (
        "connect-timeout",
        None,
        None,
        {"type": float, "default": 5.0, "show_default": True, "help": "Seconds to connect to S3."},
    ),
    (
        "read-timeout",
        None,
        None,
        {
            "type": float,
            "default": 30.0,
            "show_default": True,
            "help": "Seconds to wait on S3 reads.",
        },
    ),
    (
        "console",
        "-c",
        None,
        _boolean(False, "Also write logs to stdout (--console true)."),
    ),
    (
        "log-level",
        "-l",
        "LOG_LEVEL",
        {"default": "info", "show_default": True, "help": "debug, info, warning, error, critical."},
    ),
    (
        "dir",
        "-o",
        "LOG_DIR",
        {
            "default": "logs/",
            "show_default": True,
            "help": "Directory for log files, one per day; '' for none.",
        },
    ),
    (
        "log-format",
        None,
        None,
        {
            "type": click.Choice(["json", "console"]),
            "default": "json",
            "show_default": True,
            "help": "Log line format.",
        },
    ),
    ("mmdb-host", "-m", "MMDB_HOST", {"help": "mmdb-ws GeoIP service host."}),
    (
        "mmdb-port",
        "-x",
        "MMDB_PORT",
        {"type": int, "default": 8010, "show_default": True, "help": "mmdb-ws port."},
    ),
    ("akumuli-host", None, "AKUMULI_HOST", {"help": "Akumuli TCP write service host."}),
    (
        "akumuli-port",
        None,
        "AKUMULI_PORT",
        {"type": int, "default": 8282, "show_default": True, "help": "Akumuli port."},
    ),
    ("mongo-uri", "-f", "MONGO_URI", {"help": "MongoDB connection string for request metrics."}),
    (
        "mongo-database",
        "-g",
        "MONGO_DATABASE",
        {"default": "metrics", "show_default": True, "help": "MongoDB database."},
    ),
    (
        "mongo-collection",
        "-i",
        "MONGO_COLLECTION",
        {"default": "request", "show_default": True, "help": "MongoDB collection."},
    ),
    (
        "metric-prefix",
        None,
        "METRIC_PREFIX",
        {"default": "request", "show_default": True, "help": "Akumuli series prefix."},
    ),
    (
        "ilp-host",
        "-y",
        "ILP_HOST",
        {"help": "Line protocol host (TCP), or an http://host:port/db URL."},
    ),
    (
        "ilp-port",
        "-z",
        "ILP_PORT",
        {
            "type": int,
            "default": 9009,
            "show_default": True,
            "help": "Line protocol TCP port (ignored for http:// URLs).",
        },
    ),
    (
        "ilp-series-name",
        "-e",
        "ILP_SERIES_NAME",
        {"default": "request", "show_default": True, "help": "Line protocol measurement."},
    ),
    ("mmdb-file", None, "MMDB_FILE", {"help": "A MaxMind DB file for GeoIP, read directly."}),
    (
        "trusted-proxies",
        None,
        "TRUSTED_PROXIES",
        {
            "default": "",
            "help": "Comma-separated addresses/networks whose X-Real-IP/X-Forwarded-For are "
            "believed (default: every peer's, as the original did).",
        },
    ),
    (
        "prometheus",
        None,
        None,
        _boolean(False, "Prometheus metrics at /_proxy/_private/metrics (bearer-protected)."),
    ),
    (
        "sink-queue-size",
        None,
        None,
        {
            "type": int,
            "default": 10_000,
            "show_default": True,
            "help": "Records each metrics sink may hold before it drops new ones.",
        },
    ),
    (
        "max-header-size",
        None,
        None,
        {
            "default": "64k",
            "show_default": True,
            "help": "Bytes a request line and its headers may take; longer heads get 431.",
        },
    ),
    (
        "sink-cpus",
        None,
        None,
        {
            "default": "",
            "help": "CPUs to reserve for the metrics sink processes, as taskset writes them "
            "(3, 2-3, 0,2-3); the workers then run on the other CPUs (default: all share all).",
        },
    ),
]
_FIELD = {"dir": "log_dir", "path-style": "addressing_style"}


def _options(func: Any) -> Any:
    for name, short, original_env, settings in reversed(_OPTIONS):
        env = [original_env] if original_env else []
        env.append("S3PROXY_" + name.upper().replace("-", "_"))
        flags = [f"--{name}", *([short] if short else [])]
        func = click.option(*flags, envvar=env, show_envvar=True, **settings)(func)
    return func


def build_config(params: dict[str, Any]) -> Config:
    """Turn click's parameters into a :class:`Config`; raises :class:`ConfigError`."""
    values = {_FIELD.get(k.replace("_", "-"), k): v for k, v in params.items()}
    values["addressing_style"] = "path" if values["addressing_style"] else "auto"
    values["allowed_origins"] = parse_origins(values["allowed_origins"])
    values["memory_cache_size"] = parse_size(values["memory_cache_size"])
    values["memory_object_size"] = parse_size(values["memory_object_size"])
    values["cache_max_object_size"] = parse_size(values["cache_max_object_size"])
    values["cache_max_size"] = parse_size(values["cache_max_size"])
    values["max_header_size"] = parse_size(values["max_header_size"])
    values["log_dir"] = values["log_dir"] or None
    values["sink_cpus"] = parse_cpu_list(values["sink_cpus"])
    values["trusted_proxies"] = tuple(
        p.strip() for p in (values["trusted_proxies"] or "").split(",") if p.strip()
    )
    if not values["bucket"]:
        raise ConfigError("--bucket (or S3_BUCKET) is required; try --demo for a local sample")
    return Config.build(**values)


# click shows an option's env var list as "(env var: '['PORT', 'S3PROXY_PORT']')".
_ENV_LIST = re.compile(r"\(env var: '\[(.*?)\]'\)")


def _env_names(match: re.Match[str]) -> str:
    names = [name.strip(" '") for name in match.group(1).split(",")]
    return f"(env var: {' or '.join(names)})"


class _Command(click.Command):
    """Usage errors (a non-number for --port...) as one line and exit code 2, like every
    other bad setting, instead of click's three-line usage block."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.ClickException as exc:
            message = _ENV_LIST.sub(_env_names, exc.format_message())
            click.echo(f"s3proxy: error: {message}", err=True)
            sys.exit(2)
        except click.Abort:
            sys.exit(1)


@click.command(
    cls=_Command,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@_options
@click.option(
    "--demo",
    is_flag=True,
    help="Serve a sample site from a local S3 emulator (moto): no AWS account needed.",
)
@click.version_option(__version__, "-V", "--version")
def main(demo: bool, **params: Any) -> None:
    """Serve a private S3 bucket as a static website through a local disk cache."""
    from s3proxy import server

    try:
        if demo:
            return server.run_demo(params)
        config = build_config(params)
        server.run(config)
    except ConfigError as exc:
        click.echo(f"s3proxy: error: {exc}", err=True)
        sys.exit(2)
    return None
