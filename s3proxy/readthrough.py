"""The one place that combines the cache and the origin.

:meth:`ReadThrough.lookup` answers from the cache when it can (the hit path: no S3 call, no
thread hop). Otherwise :meth:`ReadThrough.fetch` starts — or joins — the single fill for the
key: one S3 GetObject however many requests want the key at once. A fill streams the body into
a temporary file; every waiting request reads from that file as bytes arrive, so the first
client does not wait for the whole object. The fill runs as its own task: a client that
disconnects does not cancel it for the others. Only a complete, verified body is renamed into
the cache.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from s3proxy.cache import Cache, Entry, Writer
from s3proxy.exceptions import (
    CacheError,
    ObjectNotFound,
    OriginBodyError,
    OriginError,
)
from s3proxy.meta import ObjectMeta
from s3proxy.origin import NOT_MODIFIED, Origin, OriginObject

#: Seconds an oversized object's S3 response waits to be claimed before it is closed.
UNCLAIMED_TIMEOUT = 30.0
#: A waiting reader reads at most this much of the fill's file at a time.
READ_CHUNK = 256 * 1024


@dataclass(eq=False)
class Fill:
    """A GetObject in progress for one key, shared by every request that wants it.

    ``headers`` resolves once S3 has answered: to an :class:`Entry` (a 304 refreshed the stored
    copy, or the key is missing) or to this fill itself, whose body is arriving in ``tmp_path``.
    """

    key: str
    headers: asyncio.Future[Entry | Fill]
    meta: ObjectMeta | None = None
    tmp_path: str = ""
    written: int = 0
    error: BaseException | None = None
    entry: Entry | None = None
    #: The object is larger than the cache takes: the S3 response, for one request to claim.
    passthrough: OriginObject | None = None
    oversized: bool = False
    #: S3 failed and this expired copy is served instead (stale-if-error).
    stale: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def claim(self) -> OriginObject | None:
        """The S3 response of an oversized object, to the first caller only."""
        obj, self.passthrough = self.passthrough, None
        return obj

    @property
    def done(self) -> bool:
        return self.entry is not None or self.error is not None

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def body(self) -> AsyncIterator[bytes]:
        """Yield the whole body as it arrives. Raises :class:`OriginBodyError` if the fill
        fails part way (the caller must abort its client's connection)."""
        assert self.meta is not None
        if self.entry is not None and self.entry.path is not None:
            path = self.entry.path  # finished and renamed before this reader started
        else:
            path = self.tmp_path
        fd = os.open(path, os.O_RDONLY)
        try:
            offset, size = 0, self.meta.size
            while offset < size:
                if self.written > offset:
                    # Bytes just written sit in the page cache: a short, cheap pread.
                    chunk = os.pread(fd, min(self.written - offset, READ_CHUNK), offset)
                    if not chunk:
                        raise OriginBodyError("cache file shorter than written")
                    offset += len(chunk)
                    yield chunk
                elif self.error is not None:
                    raise OriginBodyError(str(self.error))
                else:
                    await self._changed.wait()
        finally:
            os.close(fd)


class ReadThrough:
    """Serve keys from ``cache``, filling from ``origin`` once per key on a miss."""

    def __init__(
        self,
        cache: Cache,
        origin: Origin,
        *,
        ttl: int,
        max_object_size: int | None = None,
        stale_if_error: int = 0,
    ) -> None:
        self.cache = cache
        self.origin = origin
        self.ttl = ttl
        self.max_object_size = max_object_size
        self.stale_if_error = stale_if_error
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._evicting: asyncio.Task[list[str]] | None = None

    def lookup(self, key: str, now: float) -> Entry | None:
        """The fresh cached entry for ``key``, or ``None``. Never blocks on I/O beyond the
        first index read of a key in this process."""
        entry = self.cache.get(key)
        if entry is not None and entry.fresh(now):
            return entry
        return None

    def in_flight(self, key: str) -> bool:
        """Whether a fill for ``key`` is running (a request joining it fetches nothing)."""
        return key in self._fills

    async def fetch(self, key: str) -> Entry | Fill:
        """Start or join the fill for ``key`` and wait for S3's headers. Raises
        :class:`OriginError` subclasses (not found is an :class:`Entry` with ``missing``)."""
        fill = self._fills.get(key)
        if fill is None:
            fill = Fill(key, asyncio.get_running_loop().create_future())
            self._fills[key] = fill
            task = asyncio.create_task(self._run(fill), name=f"fill:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # shield: a waiter being cancelled must not cancel the shared future.
        return await asyncio.shield(fill.headers)

    async def close(self) -> None:
        """Cancel fills still running (at shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._evicting is not None:  # a thread cannot be cancelled: let it finish
            await asyncio.gather(self._evicting, return_exceptions=True)

    async def _run(self, fill: Fill) -> None:
        try:
            await self._fill(fill)
        except BaseException as exc:
            fill.error = exc
            if not fill.headers.done():
                fill.headers.set_exception(exc)
                fill.headers.exception()  # mark retrieved: waiters may all have gone
            fill._notify()
            if not isinstance(exc, Exception):
                raise
        finally:
            self._fills.pop(fill.key, None)

    async def _fill(self, fill: Fill) -> None:
        stale = self.cache.get(fill.key)
        etag = stale.meta.etag if stale is not None and stale.meta is not None else None
        generation = self.cache.generation
        try:
            # With a stale copy to fall back on, fail fast rather than retry with backoff.
            fallback = stale is not None and self._usable_when_failing(stale)
            result = await self.origin.get(fill.key, if_none_match=etag, retry=not fallback)
        except ObjectNotFound:
            now = time.time()
            fill.headers.set_result(self.cache.put_missing(fill.key, now, now + self.ttl))
            return
        except OriginError:
            if stale is None or not self._usable_when_failing(stale):
                raise
            fill.stale = True
            fill.headers.set_result(stale)
            return
        if result is NOT_MODIFIED:
            assert stale is not None
            now = time.time()
            entry = await asyncio.to_thread(self.cache.refresh, stale, now, now + self.ttl)
            fill.headers.set_result(entry)
            return
        assert isinstance(result, OriginObject)
        if self.max_object_size is not None and result.meta.size > self.max_object_size:
            fill.meta, fill.oversized, fill.passthrough = result.meta, True, result
            fill.headers.set_result(fill)
            # If the request that asked went away before claiming it, free the connection.
            asyncio.get_running_loop().call_later(UNCLAIMED_TIMEOUT, _release, fill)
            return
        await self._store(fill, result, generation)

    def _start_eviction(self) -> None:
        """Evict in a thread, in the background; one batch at a time per process."""
        if self._evicting is not None and not self._evicting.done():
            return
        self._evicting = asyncio.create_task(asyncio.to_thread(self.cache.evict), name="evict")

    def _usable_when_failing(self, stale: Entry) -> bool:
        """stale-if-error (RFC 5861): an expired object may stand in for a failing S3 for
        ``stale_if_error`` seconds past its expiry. Remembered 404s never do."""
        if stale.meta is None:
            return False
        return time.time() - stale.expires_at <= self.stale_if_error

    async def _store(self, fill: Fill, obj: OriginObject, generation: int) -> None:
        try:
            writer = self.cache.begin_write(fill.key)
        except CacheError:
            obj.close()
            raise
        fill.meta, fill.tmp_path = obj.meta, writer.tmp_path
        fill.headers.set_result(fill)
        keep = obj.meta.size <= self.cache.memory_object_size
        parts: list[bytes] = []
        try:
            async for chunk in obj.chunks():
                if len(chunk) > 65536:
                    await asyncio.to_thread(writer.write, chunk)
                else:
                    writer.write(chunk)
                if keep:
                    parts.append(chunk)
                fill.written += len(chunk)
                fill._notify()
            now = time.time()
            body = b"".join(parts) if keep else None
            fill.entry = self.cache.commit(
                writer, fill.key, obj.meta, now, now + self.ttl, generation, body
            )
            if self.cache.over_budget():
                self._start_eviction()
        except BaseException:
            writer.abort()
            raise
        fill._notify()


def _release(fill: Fill) -> None:
    obj = fill.claim()
    if obj is not None:
        obj.close()


__all__ = ["Fill", "OriginError", "ReadThrough", "Writer"]
