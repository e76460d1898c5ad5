"""The machinery every sink shares: a bounded queue, a writer task, backoff, drop counts, and
warnings at most once per interval."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Callable
from typing import Protocol

from s3proxy import logging as log
from s3proxy.record import RequestRecord

#: Records written to a sink in one call, at most.
BATCH = 500
#: Reconnect delays grow from the first to the last value, doubling.
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
#: Drops and failures are logged at most once per this many seconds, per sink.
REPORT_INTERVAL = 10.0


class Backoff:
    """Delays between attempts after failures: :data:`BACKOFF_FIRST` seconds, doubling up
    to :data:`BACKOFF_MAX`; :meth:`reset` after a success starts over."""

    def __init__(self) -> None:
        self.delay = BACKOFF_FIRST

    def next(self) -> float:
        """The delay before the next attempt; the one after it doubles."""
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class Throttled:
    """Warns at most once per :data:`REPORT_INTERVAL` seconds: a dead server fails every
    batch or lookup, and a line for each would flood the log. The warnings between two
    lines are not logged; their counts travel in the fields of the next one."""

    def __init__(self, logger_name: str) -> None:
        self._logger = log.get_logger(logger_name)
        self._last = -math.inf

    def warning(self, event: str, **fields: object) -> None:
        now = time.monotonic()
        if now - self._last >= REPORT_INTERVAL:
            self._last = now
            self._logger.warning(event, **fields)


def describe(exc: BaseException) -> str:
    """``Type: message``, as failures are logged."""
    return f"{type(exc).__name__}: {exc}"


class Sink(Protocol):
    """One destination. ``write`` raises on any failure; the runner then closes, backs off
    and reopens. Implementations keep no state the runner does not reset by ``open``."""

    name: str

    async def open(self) -> None: ...

    async def write(self, records: list[RequestRecord]) -> None: ...

    async def close(self) -> None: ...


#: What GeoIP knows of an address: flat string fields (see :mod:`s3proxy.sinks.geoip`).
#: Shared between the records of one address: sinks must not change it.
Location = dict[str, str]


class Enricher(Protocol):
    """Adds fields to a record before the sinks see it (GeoIP). Must not raise: a failed
    lookup leaves the record as it is."""

    def cached(self, ip: str) -> tuple[bool, Location | None]:
        """``(True, location or None)`` when the answer for ``ip`` is known without a
        lookup; ``(False, None)`` when :meth:`enrich` has to look it up. Synchronous, cheap."""
        ...

    async def enrich(self, record: RequestRecord) -> None: ...

    async def close(self) -> None: ...


class SinkRunner:
    """Feeds one sink from a bounded queue; new records are dropped when it is full."""

    def __init__(
        self, sink: Sink, queue_size: int, on_drop: Callable[[str, int], None] | None = None
    ) -> None:
        self.sink = sink
        self.on_drop = on_drop
        self.queue: collections.deque[RequestRecord] = collections.deque()
        self.queue_size = queue_size
        self.sent = self.dropped = self.failures = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warnings = Throttled("s3proxy.sinks")

    def offer(self, record: RequestRecord) -> None:
        self.offer_many([record])

    def offer_many(self, records: list[RequestRecord]) -> None:
        """Queue as many of ``records`` as there is room for; drop (and count) the rest."""
        room = max(self.queue_size - len(self.queue), 0)
        if len(records) > room:
            self._drop(len(records) - room)
            self._report("sink_dropping", queue_size=self.queue_size)
            records = records[:room]
        if records:
            self.queue.extend(records)
            self._drained.clear()
            self._ready.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"sink:{self.sink.name}")

    async def close(self, grace: float = 2.0) -> None:
        """Give a working sink ``grace`` seconds to drain its queue, then stop."""
        if self.queue and self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._drained.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.sink.close()

    async def _run(self) -> None:
        backoff = Backoff()
        connected = False
        while True:
            if not self.queue:
                self._ready.clear()
                await self._ready.wait()
            try:
                if not connected:
                    await self.sink.open()
                    connected = True
                batch = [self.queue.popleft() for _ in range(min(BATCH, len(self.queue)))]
                try:
                    await self.sink.write(batch)
                except BaseException:
                    self._drop(len(batch))
                    raise
                self.sent += len(batch)
                backoff.reset()
                if not self.queue:
                    self._drained.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self._report("sink_failed", error=describe(exc))
                if connected:
                    with contextlib.suppress(Exception):
                        await self.sink.close()
                connected = False
                await asyncio.sleep(backoff.next())

    def _drop(self, n: int) -> None:
        self.dropped += n
        if self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop(self.sink.name, n)

    def _report(self, event: str, **fields: object) -> None:
        self._warnings.warning(event, sink=self.sink.name, dropped=self.dropped, **fields)

    def stats(self) -> dict[str, int]:
        return {
            "queued": len(self.queue),
            "sent": self.sent,
            "dropped": self.dropped,
            "failures": self.failures,
        }


class Sinks:
    """Fan records out to every sink, through the enricher if there is one."""

    def __init__(
        self,
        sinks: list[Sink],
        queue_size: int = 10_000,
        enricher: Enricher | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        self.runners = [SinkRunner(sink, queue_size, on_drop) for sink in sinks]
        self.enricher = enricher
        self._pending: collections.deque[RequestRecord] = collections.deque()
        self._pending_size = queue_size
        self._pending_ready = asyncio.Event()
        self._enrich_task: asyncio.Task[None] | None = None
        self.enrich_skipped = 0

    def emit(self, record: RequestRecord) -> None:
        """Queue ``record``: never blocks, never raises."""
        self.emit_many([record])

    def emit_many(self, records: list[RequestRecord]) -> None:
        """Queue ``records`` for every sink: never blocks, never raises.

        With an enricher, a record whose client address it knows already (from its cache,
        or not a public address) gets its location here, at the cost of a dict lookup per
        address and batch; the others wait for a lookup and reach the sinks after it, so
        the first records of a new address may arrive after later ones. When too many wait,
        records go on without a location rather than be lost."""
        if self.enricher is not None:
            records = self._locate(self.enricher, records)
        for runner in self.runners:
            runner.offer_many(records)

    def _locate(self, enricher: Enricher, records: list[RequestRecord]) -> list[RequestRecord]:
        """Set the locations the enricher knows now; queue the rest for :meth:`_enrich`.
        Returns the records that can go on at once."""
        ready: list[RequestRecord] = []
        known: dict[str, tuple[bool, Location | None]] = {}
        for record in records:
            answer = known.get(record.ip)
            if answer is None:
                answer = known[record.ip] = enricher.cached(record.ip)
            if answer[0]:
                record.location = answer[1]
                ready.append(record)
            elif len(self._pending) < self._pending_size:
                self._pending.append(record)
                self._pending_ready.set()
            else:
                self.enrich_skipped += 1
                ready.append(record)
        return ready

    async def start(self) -> None:
        for runner in self.runners:
            runner.start()
        if self.enricher is not None:
            self._enrich_task = asyncio.create_task(self._enrich(), name="sink:enrich")

    async def _enrich(self) -> None:
        assert self.enricher is not None
        while True:
            if not self._pending:
                self._pending_ready.clear()
                await self._pending_ready.wait()
            record = self._pending.popleft()
            # A slow enricher must not cost whole records: past half the queue, records go
            # on without a location until it catches up.
            if len(self._pending) < self._pending_size // 2:
                with contextlib.suppress(Exception):
                    await self.enricher.enrich(record)
            else:
                self.enrich_skipped += 1
            for runner in self.runners:
                runner.offer(record)

    async def close(self) -> None:
        if self._enrich_task is not None:
            self._enrich_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._enrich_task
        if self.enricher is not None:
            with contextlib.suppress(Exception):
                await self.enricher.close()
        await asyncio.gather(*(runner.close() for runner in self.runners))

    def stats(self) -> dict[str, dict[str, int]]:
        stats = {runner.sink.name: runner.stats() for runner in self.runners}
        if self.enricher is not None:
            stats["geoip"] = {
                "queued": len(self._pending),
                "skipped": self.enrich_skipped,
            }
        return stats
