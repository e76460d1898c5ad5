"""``create_app(config)``: the ASGI application. Nothing happens at import time; live
resources (S3 client, cache, log flusher) open in the lifespan and close at shutdown.

Requests under ``/_proxy/`` go to the management routes (starlette); everything else goes
straight to the raw ASGI :class:`~s3proxy.site.Site` endpoint, the hit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from s3proxy import logging as log
from s3proxy.cache import Cache
from s3proxy.cache.budget import TOUCH_INTERVAL
from s3proxy.config import CacheConfig, Config, LogsConfig
from s3proxy.exceptions import S3ProxyError
from s3proxy.management import management_app
from s3proxy.origin import Origin
from s3proxy.readthrough import ReadThrough
from s3proxy.sinks.factory import wanted as sinks_wanted
from s3proxy.sinks.process import SinkClient
from s3proxy.site import Site

#: Worker processes (``--threads N``) read their settings from this variable.
WORKER_CONFIG_ENV = "_S3PROXY_WORKER_CONFIG"
#: Seconds the readiness probe waits for S3.
READY_TIMEOUT = 2.0
_logger = log.get_logger("s3proxy.app")


def open_cache(part: CacheConfig, bucket: str) -> Cache:
    cache = Cache(
        part.cache_dir,
        bucket,
        memory_budget=part.memory_cache_size,
        memory_object_size=part.memory_object_size,
        max_size=part.cache_max_size,
    )
    cache.open()
    return cache


class App:
    """The s3proxy ASGI application for one :class:`Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache: Cache | None = None
        self.site: Site | None = None
        self.sinks: SinkClient | None = None
        self.origin: Origin | None = None
        self.management = management_app(self)
        self._stack = contextlib.AsyncExitStack()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith("/_proxy/"):
                await self.management(scope, receive, send)
            else:
                assert self.site is not None, "requests arrive after startup"
                await self.site(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        config = self.config
        self.cache = open_cache(config.cache, config.origin.bucket)
        self._stack.callback(self.cache.close)
        origin = await self._stack.enter_async_context(Origin(config.origin))
        readthrough = ReadThrough(
            self.cache,
            origin,
            ttl=config.site.ttl,
            honor_cache_control=config.site.honor_cache_control,
            max_object_size=config.cache.cache_max_object_size,
            stale_if_error=config.site.stale_if_error,
        )
        self._stack.push_async_callback(readthrough.close)
        if sinks_wanted(config.sinks):
            timings = None
            if config.sinks.prometheus:  # the S3 latency histogram
                origin.keep_timings()
                timings = origin.take_timings
            self.sinks = SinkClient(config.sinks, config.logs, config.cache.cache_dir, timings)
            self.sinks.start()
            self._stack.push_async_callback(self.sinks.close)
        self.origin = origin
        self.site = Site(config.site, readthrough, recorder=self.sinks)
        flusher = asyncio.create_task(log.flush_periodically())
        self._stack.push_async_callback(_cancel, flusher)
        toucher = asyncio.create_task(_touch_periodically(self.cache))
        self._stack.push_async_callback(_cancel, toucher)
        _logger.info("worker_started", pid=os.getpid(), bucket=config.origin.bucket)

    def stats(self) -> dict[str, Any]:
        """This worker's view of the cache and its sinks (blocking: reads the index)."""
        assert self.cache is not None and self.site is not None
        return {
            "worker": os.getpid(),
            "cache": self.cache.stats(),
            "requests": dict(self.site.counts),
            "sinks": self.sinks.stats() if self.sinks is not None else {},
        }

    def metrics_exposition(self) -> tuple[bytes, str]:
        """Prometheus text: every sink process's metric files, plus the cache's size."""
        from s3proxy.sinks import prometheus

        assert self.cache is not None
        stats = self.cache.stats()
        directory = prometheus.multiprocess_dir(self.config.cache.cache_dir)
        return prometheus.scrape(directory, stats["disk_entries"], stats["disk_bytes"])

    async def readiness(self) -> list[str]:
        """What keeps this worker from serving: S3 unreachable, cache not writable."""
        problems = []
        assert self.origin is not None and self.cache is not None
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await self.origin.check()
        except TimeoutError:
            problems.append("s3: no answer within 2 s")
        except S3ProxyError as exc:
            problems.append(f"s3: {exc}")
        try:
            await asyncio.to_thread(self.cache.probe)
        except S3ProxyError as exc:
            problems.append(f"cache: {exc}")
        return problems

    async def shutdown(self) -> None:
        await self._stack.aclose()
        log.flush()


async def _touch_periodically(cache: Cache) -> None:
    """Write access times for LRU eviction, off the hit path (see cache/budget.py)."""
    try:
        while True:
            await asyncio.sleep(TOUCH_INTERVAL)
            await asyncio.to_thread(cache.flush_access_times)
    finally:
        with contextlib.suppress(Exception):
            cache.flush_access_times()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(config: Config) -> App:
    return App(config)


def create_app_from_environ() -> App:
    """Factory for worker processes: settings come from :data:`WORKER_CONFIG_ENV`."""
    config = Config.from_json(os.environ[WORKER_CONFIG_ENV])
    configure_logging(config.logs)
    return App(config)


def configure_logging(part: LogsConfig) -> None:
    log.configure(
        level=part.log_level,
        log_dir=part.log_dir,
        console=part.console,
        json_format=part.log_format == "json",
    )
