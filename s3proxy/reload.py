"""Live reload of the sites file, in each worker: on SIGHUP (the server forwards its own to
every worker) and when the file changes (watched with :mod:`watchfiles`, the only module that
imports it), and when a site is registered at runtime (:mod:`s3proxy.registry`, whose state
directory is watched too).

The whole file is read and checked first (:func:`s3proxy.sitesfile.load`): a bad file
changes nothing, is logged with its reason (``sites_reload_failed``) and stays the
``last_error`` of :meth:`Reloader.status` until a good one is loaded. A good file that differs
from what is served is swapped in whole (:meth:`s3proxy.hosting.Hosting.swap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

import watchfiles

from s3proxy import logging as log
from s3proxy import sitesfile
from s3proxy.config import Config
from s3proxy.exceptions import ConfigError
from s3proxy.hosting import Hosting
from s3proxy.registry import Registry

#: Milliseconds of quiet after a change before the file is read (an editor's write, rename
#: and chmod come as one reload).
DEBOUNCE_MS = 200

_logger = log.get_logger("s3proxy.sites")


class Reloader:
    """Reloads ``config``'s sites file into ``hosting``. :meth:`start` installs the SIGHUP
    handler and the watcher; ``stack`` undoes both at shutdown."""

    def __init__(self, config: Config, hosting: Hosting, registry: Registry) -> None:
        assert config.process.sites_file is not None
        self.config = config
        self.path = config.process.sites_file
        self._directory = os.path.dirname(os.path.abspath(self.path))
        self.hosting = hosting
        self.registry = registry
        #: The reason the last reload failed, and when; ``None`` since a good one.
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_signal)
        except (ValueError, RuntimeError, NotImplementedError):
            # Not the main thread (an embedded server): the file watcher still reloads.
            _logger.info("sites_sighup_unavailable")
        else:
            stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(stop), name="sites-watcher")
        stack.push_async_callback(_stop, watcher, stop)

    def _on_signal(self) -> None:
        task = asyncio.create_task(self.reload("sighup"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, stop: asyncio.Event) -> None:
        """Reload after any change in the file's directory: editors and config management
        replace a file by renaming another over it, and Kubernetes swaps a symlinked
        directory, so a change may not name the file itself (an unchanged file is read,
        compared and left alone)."""
        async for _changes in watchfiles.awatch(
            self._directory,
            self.registry.directory,
            stop_event=stop,
            debounce=DEBOUNCE_MS,
            step=50,
            recursive=False,
        ):
            await self.reload("file_changed")

    async def reload(self, cause: str) -> bool:
        """Read, check and, if it differs, serve the file now; ``False`` if it was refused.
        One reload at a time."""
        async with self._lock:
            try:
                sites = await asyncio.to_thread(sitesfile.load, self.path, self.config)
            except ConfigError as exc:
                self.last_error, self.last_error_at = str(exc), time.time()
                _logger.error("sites_reload_failed", cause=cause, error=str(exc))
                await self.registry.serve(None)  # registrations still apply, over the last file
                return False
            self.last_error = self.last_error_at = None
            served = await self.registry.serve(sites)
            if served is None:
                _logger.debug("sites_unchanged", cause=cause)
                return True
            _logger.info(
                "sites_reloaded", cause=cause, version=served.version, sites=len(sites.sites)
            )
            return True

    def status(self) -> dict[str, Any]:
        """What ``GET /_proxy/_private/config`` answers: the file, the version served (1 at
        startup, +1 per change), when it was loaded, the last reload error."""
        served = self.hosting.served
        return {
            "file": self.path,
            "version": served.version,
            "loaded_at": _iso(served.loaded_at),
            "sites": sorted(served.sites.sites),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at) if self.last_error_at else None,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _stop(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
