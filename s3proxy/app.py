"""``create_app(config)``: the ASGI application. Nothing happens at import time; live
resources (S3 client, cache, log flusher) open in the lifespan and close at shutdown.

Requests under ``/_proxy/`` go to the management routes (starlette); everything else goes
straight to the raw ASGI :class:`~s3proxy.site.Site` endpoint, the hit path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

from s3proxy import logging as log
from s3proxy.cache import Cache
from s3proxy.cache.budget import TOUCH_INTERVAL
from s3proxy.config import Config
from s3proxy.fastpath import FastPath
from s3proxy.management import management_app
from s3proxy.resources import Resources

#: Worker processes (``--threads N``) read their settings from this variable.
WORKER_CONFIG_ENV = "_S3PROXY_WORKER_CONFIG"
_logger = log.get_logger("s3proxy.app")
#: An ASGI endpoint as this module calls it.
Handler = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


class App:
    """The s3proxy ASGI application for one :class:`Config`: ``/_proxy/`` to the management
    routes, everything else to the site, both made at startup from the :class:`Resources`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._resources: Resources | None = None
        self._site: Handler = _not_started
        self._management: Handler = _not_started
        self._stack = contextlib.AsyncExitStack()
        #: Answers fresh hits in the protocol (``--fast-path``), from startup to shutdown.
        self.fastpath: FastPath | None = None

    @property
    def resources(self) -> Resources:
        """This worker's open resources (for tests and tools); only after startup."""
        if self._resources is None:
            raise RuntimeError("the app has not started")
        return self._resources

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            # /_proxy/auth/ is a site's own (its login flow: s3proxy.access)
            if path.startswith("/_proxy/") and not path.startswith("/_proxy/auth/"):
                await self._management(scope, receive, send)
            else:
                await self._site(scope, receive, send)
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
        resources = await Resources.open(self.config, self._stack)
        flusher = asyncio.create_task(log.flush_periodically())
        self._stack.push_async_callback(_cancel, flusher)
        toucher = asyncio.create_task(_touch_periodically(resources.cache))
        self._stack.push_async_callback(_cancel, toucher)
        self._resources = resources
        # One site and no sites file: straight to it, no routing on the hit path.
        self._site = resources.hosting if self.config.process.sites_file else resources.site
        self._management = management_app(resources)
        if self.config.process.fast_path:
            hosting = resources.hosting if self.config.process.sites_file else None
            self.fastpath = FastPath(None if hosting else resources.site, hosting)
        _logger.info(
            "worker_started",
            pid=os.getpid(),
            bucket=resources.origin.bucket,
            # what botocore took: the flag's, AWS_ENDPOINT_URL_S3's / AWS_ENDPOINT_URL's, AWS's
            endpoint=log.redact_url(resources.origin.endpoint_url),
            sites=len(resources.hosting.served.hosted),
        )

    async def shutdown(self) -> None:
        self._site = self._management = _not_started
        if self.fastpath is not None:
            self.fastpath.close()
        await self._stack.aclose()
        log.flush()


async def _not_started(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """503 before startup and after shutdown (a server that sends requests then is broken)."""
    body = b"Service Unavailable\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"20")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


#: Logging as a process's LogsConfig part says (the sink process does the same).
configure_logging = log.configure_from
