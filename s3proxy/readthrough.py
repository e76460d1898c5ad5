"""The one place that combines the cache and the origin.

:meth:`ReadThrough.lookup` answers from the cache when it can (the hit path: no S3 call, no
thread hop). Otherwise :meth:`ReadThrough.fetch` starts — or joins — the single fill for the
key: one S3 GetObject however many requests want the key at once. A fill streams the body into
a temporary file; every waiting request reads from that file as bytes arrive, so the first
client does not wait for the whole object. The fill runs as its own task: a client that
disconnects does not cancel it for the others. Only a complete, verified body is renamed into
the cache.

When the cache cannot store a body — no file can be created (a full disk, a quota, a
read-only mount), or a write fails part way — the response is not cut off: the body streams
from S3 to the clients as objects over ``--cache-max-object-size`` do, nothing partial is kept,
and the cache decides, by the cause, when to try again (:mod:`s3proxy.cache.faults`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from s3proxy import logging as log
from s3proxy.cache import Cache, Entry, Writer
from s3proxy.exceptions import (
    CacheError,
    ObjectNotFound,
    OriginBodyError,
    OriginError,
)
from s3proxy.freshness import lifetime
from s3proxy.meta import ObjectMeta
from s3proxy.origin import NOT_MODIFIED, Origin, OriginObject

#: Seconds a direct fill's S3 response waits to be claimed before it is closed.
UNCLAIMED_TIMEOUT = 30.0
#: A waiting reader reads at most this much of the fill's file at a time.
READ_CHUNK = 256 * 1024
#: The shortest interval between two ``cache_cannot_store`` warnings, in seconds.
STORE_RETRY = 10.0

_logger = log.get_logger("s3proxy.cache")


@dataclass(eq=False)
class Fill:
    """A GetObject in progress for one key, shared by every request that wants it.

    ``headers`` resolves once S3 has answered: to an :class:`Entry` (a 304 refreshed the stored
    copy, or the key is missing) or to this fill itself: its body is arriving in ``tmp_path``,
    or, if ``direct``, is not stored at all.
    """

    key: str
    headers: asyncio.Future[Entry | Fill]
    #: Where bytes the cache does not hold are asked for (see :meth:`body`).
    origin: Origin | None = None
    meta: ObjectMeta | None = None
    tmp_path: str = ""
    written: int = 0
    error: BaseException | None = None
    entry: Entry | None = None
    #: The S3 response of a direct fill, for one request to claim.
    passthrough: OriginObject | None = None
    #: The body is not stored: the object is larger than the cache takes, or the cache could
    #: not create a file for it. Requests stream it from S3 (:mod:`s3proxy.passthrough`).
    direct: bool = False
    #: The cache gave up storing the body part way (a write or the commit failed): the file
    #: is gone, the first ``written`` bytes stay readable to readers that opened it, and the
    #: rest comes from S3.
    write_failed: bool = False
    #: S3 failed and this expired copy is served instead (stale-if-error).
    stale: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def claim(self) -> OriginObject | None:
        """The S3 response of a direct fill, to the first caller only."""
        obj, self.passthrough = self.passthrough, None
        return obj

    @property
    def done(self) -> bool:
        return self.entry is not None or self.error is not None or self.write_failed

    async def stored(self) -> Entry | None:
        """Wait for the body to be stored and return its entry; ``None`` if it will not be
        (a direct fill, or the cache gave up part way: the body must come from S3). Raises
        :class:`OriginBodyError` if S3's body failed."""
        while self.entry is None and not (self.direct or self.write_failed):
            if self.error is not None:
                raise OriginBodyError(str(self.error))
            await self._changed.wait()
        return self.entry

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def body(self) -> AsyncIterator[bytes]:
        """Yield the whole body as it arrives. Bytes the cache file does not hold — the fill
        is direct, or the cache gave up storing part way — come straight from S3, from this
        reader's offset on (see :meth:`_rest_from_origin`), so a full disk never cuts a
        response short. Raises :class:`OriginBodyError` if the body cannot be completed (the
        caller must abort its client's connection)."""
        assert self.meta is not None
        fd = self._open()
        try:
            offset, size = 0, self.meta.size
            while offset < size:
                if fd is not None and self.written > offset:
                    # Bytes just written sit in the page cache: a short, cheap pread.
                    chunk = os.pread(fd, min(self.written - offset, READ_CHUNK), offset)
                    if not chunk:
                        raise OriginBodyError("cache file shorter than written")
                    offset += len(chunk)
                    yield chunk
                elif self.direct or self.write_failed:
                    obj = await self._rest_from_origin(offset)
                    try:
                        async for chunk in obj.chunks():
                            yield chunk
                    finally:
                        obj.close()
                    return
                elif self.error is not None:
                    raise OriginBodyError(str(self.error))
                else:
                    await self._changed.wait()
        finally:
            if fd is not None:
                os.close(fd)

    def _open(self) -> int | None:
        """The body's file, open for reading; ``None`` if there is none (a direct fill, or the
        partial file was removed before this reader opened it)."""
        if self.entry is not None and self.entry.path is not None:
            path = self.entry.path  # finished and renamed before this reader started
        elif self.direct:
            return None
        else:
            path = self.tmp_path
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if self.write_failed:
                return None
            raise

    async def _rest_from_origin(self, offset: int) -> OriginObject:
        """S3's response for the body from ``offset`` on: the fill's own if nobody has claimed
        it, else a GET of this reader's own, memory-bounded like any stream, with
        ``If-Match`` so the bytes belong to the version whose headers were sent. Raises
        :class:`OriginBodyError`: the response has started, only an abort is left."""
        obj = self.claim() if offset == 0 else None
        if obj is not None:
            return obj
        assert self.meta is not None and self.origin is not None
        byte_range = f"bytes={offset}-" if offset else None
        try:
            result = await self.origin.get(
                self.key, byte_range=byte_range, if_match=self.meta.etag or None
            )
        except OriginError as exc:
            raise OriginBodyError(f"the rest of the body from S3: {exc}") from None
        if not isinstance(result, OriginObject):
            raise OriginBodyError("unexpected 304 from S3")
        return result


class ReadThrough:
    """Serve keys from ``cache``, filling from ``origin`` once per key on a miss."""

    def __init__(
        self,
        cache: Cache,
        origin: Origin,
        *,
        ttl: int,
        honor_cache_control: bool = False,
        max_object_size: int | None = None,
        stale_if_error: int = 0,
    ) -> None:
        self.cache = cache
        self.origin = origin
        self.ttl = ttl
        self.honor_cache_control = honor_cache_control
        self.max_object_size = max_object_size
        self.stale_if_error = stale_if_error
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = -STORE_RETRY
        #: Bodies not stored since the last warning.
        self._unstored = 0

    def lookup(self, key: str, now: float) -> Entry | None:
        """The fresh cached entry for ``key``, or ``None``. Never blocks on I/O beyond the
        first index read of a key in this process."""
        entry = self.cache.get(key)
        if entry is not None and entry.fresh(now):
            return entry
        return None

    def expires_at(self, meta: ObjectMeta, now: float) -> float:
        """When a copy of the object described by ``meta``, fetched ``now``, goes stale:
        ``--ttl`` from now, or what the object's own headers say (:mod:`s3proxy.freshness`).
        Remembered 404s always keep ``--ttl``."""
        return now + lifetime(meta, self.ttl, now, honor=self.honor_cache_control)

    def in_flight(self, key: str) -> bool:
        """Whether a fill for ``key`` is running (a request joining it fetches nothing)."""
        return key in self._fills

    async def fetch(self, key: str) -> Entry | Fill:
        """Start or join the fill for ``key`` and wait for S3's headers. Raises
        :class:`OriginError` subclasses (not found is an :class:`Entry` with ``missing``)."""
        fill = self._fills.get(key)
        if fill is None:
            fill = Fill(key, asyncio.get_running_loop().create_future(), self.origin)
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
            assert stale.meta is not None
            expires_at = self.expires_at(stale.meta, now)
            entry = await asyncio.to_thread(self.cache.refresh, stale, now, expires_at)
            fill.headers.set_result(entry)
            return
        assert isinstance(result, OriginObject)
        if self.max_object_size is not None and result.meta.size > self.max_object_size:
            return _pass_through(fill, result)
        await self._store(fill, result, generation)

    def _usable_when_failing(self, stale: Entry) -> bool:
        """stale-if-error (RFC 5861): an expired object may stand in for a failing S3 for
        ``stale_if_error`` seconds past its expiry. Remembered 404s never do."""
        if stale.meta is None:
            return False
        return time.time() - stale.expires_at <= self.stale_if_error

    async def _store(self, fill: Fill, obj: OriginObject, generation: int) -> None:
        """Stream ``obj`` into the cache while the fill's readers follow it, then commit it.
        If no cache file can be created, the fill becomes direct. If a write or the commit
        fails (the disk filled meanwhile), the partial file is removed, nothing is recorded,
        the fill's S3 response is closed and its readers take the rest from S3 themselves
        (:meth:`Fill.body`): one extra ranged GET per reader past that point, instead of
        relaying one response to readers of different speeds, which would need unbounded
        memory or would let the slowest reader hold up the others."""
        writer = self._begin_write(fill.key, obj.meta.size)
        if writer is None:
            return _pass_through(fill, obj)
        fill.meta, fill.tmp_path = obj.meta, writer.tmp_path
        fill.headers.set_result(fill)
        try:
            body = await self._write_body(fill, obj, writer)
            if self.cache.over_budget(obj.meta.size):  # --cache-max-size holds at each commit
                await asyncio.to_thread(self.cache.make_room, obj.meta.size)
            now = time.time()
            fill.entry = self.cache.commit(
                writer, fill.key, obj.meta, now, self.expires_at(obj.meta, now), generation, body
            )
        except CacheError as exc:
            writer.abort()
            obj.close()
            self._cannot_store(exc)
            fill.write_failed = True
        except BaseException:
            writer.abort()
            raise
        fill._notify()

    async def _write_body(self, fill: Fill, obj: OriginObject, writer: Writer) -> bytes | None:
        """Write ``obj``'s body as it arrives, waking the fill's readers after each chunk;
        return it whole if it is small enough for the memory tier. Raises
        :class:`CacheError` if the disk refuses a write, :class:`OriginBodyError` if the
        body from S3 fails."""
        keep = obj.meta.size <= self.cache.memory_object_size
        parts: list[bytes] = []
        async for chunk in obj.chunks():
            if len(chunk) > 65536:
                await asyncio.to_thread(writer.write, chunk)
            else:
                writer.write(chunk)
            if keep:
                parts.append(chunk)
            fill.written += len(chunk)
            fill._notify()
        return b"".join(parts) if keep else None

    def _begin_write(self, key: str, size: int) -> Writer | None:
        """A writer for ``key``'s body of ``size`` bytes; ``None`` if the cache cannot store
        it now (the cache says why)."""
        try:
            return self.cache.begin_write(key, size)
        except CacheError as exc:
            self._cannot_store(exc)
            return None

    def _cannot_store(self, exc: CacheError) -> None:
        """The cache failed, or refused, to store a body: warn at most once in
        :data:`STORE_RETRY` seconds, with the cache's message: what failed and the OS's
        reason (``strerror``), never a path or credential."""
        now = time.monotonic()
        self._unstored += 1
        if now - self._warned_at >= STORE_RETRY:
            _logger.warning(
                "cache_cannot_store",
                error=str(exc),
                unstored=self._unstored,
            )
            self._warned_at, self._unstored = now, 0


def _pass_through(fill: Fill, obj: OriginObject) -> None:
    """Make ``fill`` direct: its requests stream the body from S3, the first with ``obj``."""
    fill.meta, fill.direct, fill.passthrough = obj.meta, True, obj
    fill.headers.set_result(fill)
    # If the request that asked went away before claiming it, free the connection.
    asyncio.get_running_loop().call_later(UNCLAIMED_TIMEOUT, _release, fill)


def _release(fill: Fill) -> None:
    obj = fill.claim()
    if obj is not None:
        obj.close()


__all__ = ["Fill", "OriginError", "ReadThrough", "Writer"]
