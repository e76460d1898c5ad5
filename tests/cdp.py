"""A small Chrome DevTools Protocol client for the browser test: launch headless Chromium, talk
to its page over a WebSocket, collect its events.

No selenium or playwright: the protocol is JSON over one WebSocket. A command carries an ``id``
and its answer carries the same ``id``; everything else is an event (``method`` + ``params``),
kept in order in :attr:`CdpSession.events` so a test can read what the browser did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = "/usr/bin/chromium"

# Headless, nothing fetched behind the test's back (component updates, sync, QUIC probes), and
# the debugging port picked by Chromium and written to DevToolsActivePort.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)

Event = dict[str, Any]


class CdpError(Exception):
    """A command answered with an error, or the browser went away."""


class Chromium:
    """Headless Chromium in its own process group, with a throwaway profile."""

    def __init__(self, user_data_dir: Path, executable: str = CHROMIUM) -> None:
        self.user_data_dir = user_data_dir
        self.log_path = user_data_dir.parent / f"{user_data_dir.name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches every child
        )
        self.port = 0

    def wait_ready(self, timeout: float = 15) -> int:
        """The DevTools port, once Chromium has written it; raises CdpError on exit or timeout."""
        active = self.user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                # Two lines: the port, then the browser target's path. Wait for both: the
                # file may be caught half written.
                lines = active.read_text().splitlines()
                if len(lines) >= 2:
                    self.port = int(lines[0])
                    return self.port
            time.sleep(0.05)
        raise CdpError(f"chromium wrote no DevToolsActivePort in {timeout}s: {self.output()}")

    def page_websocket_url(self, timeout: float = 10) -> str:
        """The WebSocket URL of the first page target (the ``about:blank`` tab)."""
        deadline = time.monotonic() + timeout
        while True:
            url = f"http://127.0.0.1:{self.port}/json"
            with urllib.request.urlopen(url, timeout=5) as response:
                targets: list[dict[str, Any]] = json.load(response)
            for target in targets:
                if target.get("type") == "page" and "webSocketDebuggerUrl" in target:
                    ws_url: str = target["webSocketDebuggerUrl"]
                    return ws_url
            if time.monotonic() > deadline:
                raise CdpError(f"no page target among {targets}")
            time.sleep(0.05)

    def output(self) -> str:
        """What Chromium printed so far (its last 4 KB)."""
        self._log.flush()
        return self.log_path.read_bytes()[-4096:].decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (renderers, GPU and network services included)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._log.close()


@dataclass
class CdpSession:
    """One WebSocket to one target: commands by id, events collected in arrival order."""

    ws: ClientConnection
    events: list[Event] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _closed: BaseException | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, ws_url: str) -> AsyncIterator[CdpSession]:
        """Connect to ``ws_url`` and read its messages until the block ends."""
        # Screenshots arrive as one base64 message: lift websockets' 1 MiB default.
        async with connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=10) as ws:
            session = cls(ws)
            reader = asyncio.create_task(session._read())
            try:
                yield session
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def send(
        self, method: str, params: dict[str, Any] | None = None, within: float = 10
    ) -> dict[str, Any]:
        """Send a command and return its ``result``; raise CdpError if it answers an error."""
        if self._closed is not None:
            raise CdpError(f"connection closed: {self._closed!r}")
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        message = {"id": command_id, "method": method, "params": params or {}}
        try:
            await self.ws.send(json.dumps(message))
            async with asyncio.timeout(within):
                return await future
        finally:
            self._pending.pop(command_id, None)

    def since(self, mark: int, method: str | None = None) -> list[Event]:
        """Events after position ``mark`` of :attr:`events`, of ``method`` if given."""
        return [e for e in self.events[mark:] if method is None or e["method"] == method]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda params: True,
        *,
        after: int = 0,
        within: float = 10,
    ) -> Event:
        """The first event ``method`` at or after position ``after`` whose params satisfy
        ``predicate``, waiting for it if it has not arrived yet."""
        position = after
        async with asyncio.timeout(within):
            while True:
                for event in self.events[position:]:
                    if event["method"] == method and predicate(event["params"]):
                        return event
                position = len(self.events)
                if self._closed is not None:
                    raise CdpError(f"connection closed waiting for {method}: {self._closed!r}")
                await self._next_event()

    async def wait_until(self, check: Callable[[], bool], *, within: float = 10) -> None:
        """Wait until ``check()`` holds, re-checking after each event."""
        async with asyncio.timeout(within):
            while not check():
                await self._next_event()

    async def _next_event(self, poll: float = 0.1) -> None:
        # Bounded: a check() that depends on time (a quiet period) still gets re-run.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(poll):
                await self._arrived.wait()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message: dict[str, Any] = json.loads(raw)
                if "id" in message:
                    future = self._pending.get(message["id"])
                    if future is None or future.done():
                        continue
                    if "error" in message:
                        future.set_exception(CdpError(f"{message['error']}"))
                    else:
                        future.set_result(message.get("result", {}))
                else:
                    message["time"] = time.monotonic()
                    self.events.append(message)
                    arrived, self._arrived = self._arrived, asyncio.Event()
                    arrived.set()
        except Exception as exc:  # the browser went away: fail the waiters, not this task
            self._closed = exc
        finally:
            if self._closed is None:
                self._closed = CdpError("the WebSocket closed")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError(f"connection closed: {self._closed!r}"))
            self._arrived.set()
