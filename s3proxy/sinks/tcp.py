"""A TCP connection to a metrics server that only speaks to complain (Akumuli's error line,
a line-protocol listener's hang-up): the complaint fails the next send, so the runner
reconnects (see :mod:`s3proxy.sinks.base`)."""

from __future__ import annotations

import asyncio
import contextlib

#: Seconds to connect, and to hand a batch to the kernel, before the write counts as failed.
CONNECT_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0


class TcpStream:
    """One connection to ``host:port``; ``server`` names it in errors, which are raised as
    ``error`` (a :class:`ConnectionError` subclass of the sink's)."""

    def __init__(self, host: str, port: int, server: str, error: type[ConnectionError]) -> None:
        self.host, self.port, self.server, self.error = host, port, server, error
        self._writer: asyncio.StreamWriter | None = None
        self._listener: asyncio.Task[None] | None = None
        self._problem: str | None = None

    async def open(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._problem = None
        self._listener = asyncio.create_task(self._listen(reader), name=f"{self.server}:listen")

    async def send(self, data: bytes) -> None:
        """Write ``data``; raise ``error`` if the server complained or hung up since the last
        send (it then dropped whatever followed)."""
        if self._problem is not None:
            raise self.error(self._problem)
        assert self._writer is not None, "open() first"
        self._writer.write(data)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await self._writer.drain()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        """Wait for the server's one complaint (or its hang-up) and keep it for ``send``."""
        try:
            line = await reader.readline()
        except (OSError, ValueError) as exc:  # ValueError: a line over 64 KiB
            self._problem = f"connection lost: {exc}"
            return
        text = line.decode("utf-8", "replace").strip()[:300]
        self._problem = (
            f"{self.server} answered {text}" if text else f"{self.server} closed the connection"
        )
