"""``s3proxy check``: everything a start needs, checked without serving, as a checklist.

Each :class:`Item` is one thing an operator can fix: the S3 endpoint, the credentials, the
bucket (the startup check of :mod:`s3proxy.startup`), the cache directory (writable, room for
``--cache-max-size``) and each configured metrics sink and GeoIP service (reachable: opened and
closed as a worker would). :func:`run_checks` does the I/O; :func:`render` is pure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass

from s3proxy.config import Config, SinksConfig
from s3proxy.environment import check_environment
from s3proxy.exceptions import ConfigError, S3ProxyError
from s3proxy.resources import load_sites
from s3proxy.sinks.base import Sink
from s3proxy.sinks.factory import build_enricher, build_sinks
from s3proxy.startup import Part, Verdict, check_bucket, check_sites

#: Seconds a sink or GeoIP service has to accept a connection.
SINK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Item:
    ok: bool
    name: str
    reason: str


def render(items: list[Item]) -> str:
    """One ``✓ name: reason`` / ``✗ name: reason`` line per item, then a summary line."""
    lines = [f"{'✓' if item.ok else '✗'} {item.name}: {item.reason}" for item in items]
    failed = sum(not item.ok for item in items)
    lines.append(f"{failed} of {len(items)} checks failed" if failed else "all checks passed")
    return "\n".join(lines)


def run_checks(config: Config) -> list[Item]:
    """Check ``config`` against the world (S3, the disk, the sinks); blocking."""
    return [Item(True, "configuration", "valid"), *asyncio.run(_checks(config))]


async def _checks(config: Config) -> list[Item]:
    s3, sinks = await asyncio.gather(_s3_items(config), _sink_items(config.sinks))
    return [*s3, *await asyncio.to_thread(cache_items, config), *sinks]


async def _s3_items(config: Config) -> list[Item]:
    """Endpoint, credentials, bucket of the command line's site, or of each site of the
    sites file (``site NAME:`` before each item)."""
    if not config.process.sites_file:
        endpoint, verdict = await check_bucket(config)
        return _verdict_items(endpoint, verdict, config.origin.bucket or "", "")
    try:
        sites = load_sites(config)
    except ConfigError as exc:
        return [Item(False, "sites file", str(exc))]
    return [
        item
        for site, endpoint, verdict in await check_sites(sites)
        for item in _verdict_items(endpoint, verdict, site.bucket, f"site {site.name}: ")
    ]


def _verdict_items(endpoint: str, verdict: Verdict, bucket: str, label: str) -> list[Item]:
    """The part that failed gets the reason, the parts before it passed, the parts after it
    could not be checked."""
    passed = {
        Part.ENDPOINT: f"{endpoint} answers",
        Part.CREDENTIALS: "accepted" if verdict.ok else "not refused",
        Part.BUCKET: verdict.reason,
    }
    names = {Part.ENDPOINT: "endpoint", Part.CREDENTIALS: "credentials"}
    items = []
    for part in Part:
        name = label + names.get(part, f"bucket {bucket}")
        if verdict.failed is None or part < verdict.failed:
            items.append(Item(True, name, passed[part]))
        elif part == verdict.failed:
            items.append(Item(False, name, verdict.reason))
        else:
            fix = verdict.failed.name.lower()
            items.append(Item(False, name, f"not checked: fix the {fix} first"))
    return items


def cache_items(config: Config) -> list[Item]:
    """The cache dir is writable (as startup checks it), and its disk has room for
    ``--cache-max-size`` beside what is cached already (else the disk fills first: misses
    then pass through uncached, see the README's cache section)."""
    part = config.cache
    name = f"cache dir {part.cache_dir}"
    try:
        check_environment(config)
    except S3ProxyError as exc:
        return [Item(False, name, str(exc))]
    room = shutil.disk_usage(part.cache_dir).free + _bytes_under(part.cache_dir)
    if room < part.cache_max_size:
        return [
            Item(
                False,
                name,
                f"the disk has room for {_gib(room)} of cache, less than --cache-max-size "
                f"{_gib(part.cache_max_size)}: lower it, or the disk fills first",
            )
        ]
    return [Item(True, name, f"writable; room for {_gib(room)}, bound {_gib(part.cache_max_size)}")]


def _bytes_under(directory: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass  # removed meanwhile
    return total


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"


async def _sink_items(config: SinksConfig) -> list[Item]:
    """Open and close each configured sink (a TCP or HTTP connection, MongoDB's indexes), and
    connect to the mmdb-ws GeoIP service; a GeoIP file is opened when the sinks are built."""
    try:
        sinks = build_sinks(config)
        enricher = build_enricher(config)
    except (S3ProxyError, ValueError) as exc:
        return [Item(False, "sinks", str(exc))]
    checks = [_open_sink(runner.sink) for runner in (sinks.runners if sinks else [])]
    items = []
    if config.mmdb_file:  # build_enricher opened it
        items.append(Item(True, f"geoip file {config.mmdb_file}", "a readable MaxMind DB"))
    elif config.mmdb_host:
        checks.append(_connect("geoip (mmdb-ws)", config.mmdb_host, config.mmdb_port))
    if enricher is not None:
        await enricher.close()
    return [*await asyncio.gather(*checks), *items]


async def _open_sink(sink: Sink) -> Item:
    name = f"sink {sink.name}"
    try:
        async with asyncio.timeout(SINK_TIMEOUT):
            await sink.open()
    except Exception as exc:
        return Item(False, name, _failure(exc))
    await sink.close()
    return Item(True, name, "reachable")


async def _connect(name: str, host: str, port: int) -> Item:
    try:
        async with asyncio.timeout(SINK_TIMEOUT):
            _reader, writer = await asyncio.open_connection(host, port)
    except Exception as exc:
        return Item(False, name, f"{host}:{port}: {_failure(exc)}")
    writer.close()
    return Item(True, name, f"{host}:{port} reachable")


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no connection within {SINK_TIMEOUT:g} s"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
