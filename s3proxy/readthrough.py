"""The one place that combines the cache and the origin.

:meth:`ReadThrough.read` answers what happened for a key as an :data:`~s3proxy.outcome.Outcome`
value (hit, revalidated, stale, missing, filling, pass-through). :meth:`ReadThrough.lookup`
answers from the cache when it can (the hit path: no S3 call, no thread hop). Otherwise
:meth:`ReadThrough.fetch` starts — or joins — the single fill for the key
(:class:`~s3proxy.fill.Fill`): one S3 GetObject however many requests want the key at once.
A fill streams the body into a temporary file; every waiting request reads from that file as
bytes arrive, so the first client does not wait for the whole object. The fill runs as its
own task: a client that disconnects does not cancel it for the others. Only a complete,
verified body is renamed into the cache.

When the cache cannot store a body — no file can be created (a full disk, a quota, a
read-only mount), or a write fails part way — the response is not cut off: the body streams
from S3 to the clients as objects over ``--cache-max-object-size`` do, nothing partial is kept,
and the cache decides, by the cause, when to try again (:mod:`s3proxy.cache.faults`).

While S3 fails, a key costs it one GET per ``--error-ttl`` at most: concurrent requests share
the key's fill (misses, revalidations and retries alike), and its failure (5xx, timeout,
refused connection; a 404 is an answer, remembered as one) is remembered
(:mod:`s3proxy.failures`), so requests meanwhile get the expired copy within its
stale-if-error window (RFC 5861 §4), else the same 502/504, without asking S3. An expired copy
within its stale-while-revalidate window (§3) is served at once while the key's one fill
revalidates it in the background. :func:`s3proxy.freshness.stale_windows` sets both windows.
"""

from __future__ import annotations

import asyncio
import time

from s3proxy import logging as log
from s3proxy.breaker import is_failure
from s3proxy.cache import Cache, Entry, Writer
from s3proxy.exceptions import CacheError, ObjectNotFound, OriginError
from s3proxy.failures import FailureMemory
from s3proxy.fill import Fill, pass_through
from s3proxy.freshness import StaleWindows, lifetime, stale_windows
from s3proxy.meta import ObjectMeta
from s3proxy.origin import NOT_MODIFIED, Origin, OriginObject
from s3proxy.outcome import Filling, Hit, Missing, Outcome, PassThrough, Revalidated, Stale

#: The shortest interval between two ``cache_cannot_store`` warnings, in seconds.
STORE_RETRY = 10.0
#: Bodies up to this many bytes are answered from memory before their file exists (see
#: :meth:`ReadThrough._store`).
SMALL_BODY = 64 * 1024

_logger = log.get_logger("s3proxy.cache")


class ReadThrough:
    """Serve keys from ``cache``, filling from ``origin`` once per key on a miss.

    ``stale_if_error`` and ``stale_while_revalidate`` are the stale windows' seconds (objects'
    own directives replace them under ``honor_cache_control``); ``error_ttl`` is how long a
    key's failure is remembered (0: not at all)."""

    def __init__(
        self,
        cache: Cache,
        origin: Origin,
        *,
        ttl: int,
        honor_cache_control: bool = False,
        max_object_size: int | None = None,
        stale_if_error: int = 0,
        stale_while_revalidate: int = 0,
        error_ttl: float = 0.0,
        namespace: str = "",
    ) -> None:
        self.cache = cache
        #: Put before each key in the cache (the site's: see SiteSpec.namespace); S3 is
        #: asked for the key itself.
        self.namespace = namespace
        self.origin = origin
        self.ttl = ttl
        self.honor_cache_control = honor_cache_control
        self.max_object_size = max_object_size
        self.stale_if_error = stale_if_error
        self.stale_while_revalidate = stale_while_revalidate
        self.failures = FailureMemory(error_ttl)
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_at = -STORE_RETRY
        #: Bodies not stored since the last warning.
        self._unstored = 0

    async def read(self, key: str, now: float) -> Outcome:
        """What serving ``key`` at ``now`` takes: the fresh stored answer, or S3's through the
        key's single fill. Raises :class:`OriginError` subclasses when S3 fails and no stale
        copy may stand in, :class:`CacheError` when the cache cannot record an answer."""
        found = self.lookup(key, now)
        if found is not None:
            return found
        return await self.fetch(key)

    def lookup(self, key: str, now: float) -> Hit | Missing | None:
        """The fresh stored answer for ``key`` (an object, or a remembered 404), or ``None``.
        Never blocks on I/O beyond the first index read of a key in this process."""
        entry = self.cache.get(self.namespace + key)
        if entry is None or not entry.fresh(now):
            return None
        if entry.meta is None:
            return Missing(key, "hit")
        return Hit(entry)

    def expires_at(self, meta: ObjectMeta, now: float) -> float:
        """When a copy of the object described by ``meta``, fetched ``now``, goes stale:
        ``--ttl`` from now, or what the object's own headers say (:mod:`s3proxy.freshness`).
        Remembered 404s always keep ``--ttl``."""
        return now + lifetime(meta, self.ttl, now, honor=self.honor_cache_control)

    async def fetch(self, key: str) -> Outcome:
        """What serving ``key`` takes when :meth:`lookup` found no fresh answer: join the
        key's fill, else start one, and wait for S3's headers. Without waiting for S3: an
        expired copy within its stale-while-revalidate window (the fill, started if none runs,
        revalidates it in the background), and, while S3's failure for the key is
        remembered, the expired copy within its stale-if-error window or the failure raised
        again. Raises :class:`OriginError` subclasses (not found is :class:`Missing`). The
        request that starts a fill that stores a body is charged its size
        (``origin_bytes``)."""
        fill = self._fills.get(key)
        leader = fill is None
        if fill is None:
            stale = self.cache.get(self.namespace + key)
            error = self.failures.recall(key, time.monotonic())
            if error is not None:  # S3 failed for this key moments ago: do not ask again yet
                return self._instead_of_failing(stale, error)
            fill = self._start(key, stale)
            if stale is not None and self._while_revalidating(stale):
                fill.headers.add_done_callback(_close_unclaimed)
                return Stale(stale)
        elif fill.stale is not None and self._while_revalidating(fill.stale):
            return Stale(fill.stale)  # the copy this fill revalidates: joiners read no index
        # shield: a waiter being cancelled must not cancel the shared future.
        outcome = await asyncio.shield(fill.headers)
        if leader and type(outcome) is Filling and fill.meta is not None:
            return Filling(fill, fill.meta.size)
        return outcome

    def _start(self, key: str, stale: Entry | None) -> Fill:
        """Start the fill of ``key`` as a task of its own, tracked for :meth:`close`;
        ``stale`` is the expired copy (or remembered 404) it revalidates, if any."""
        fill = Fill(key, asyncio.get_running_loop().create_future(), self.origin, stale)
        self._fills[key] = fill
        task = asyncio.create_task(self._run(fill), name=f"fill:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    def _windows(self, meta: ObjectMeta) -> StaleWindows:
        return stale_windows(
            meta,
            while_revalidate=self.stale_while_revalidate,
            if_error=self.stale_if_error,
            honor=self.honor_cache_control,
        )

    def _while_revalidating(self, stale: Entry) -> bool:
        """stale-while-revalidate (RFC 5861 §3): whether the expired ``stale`` may be served
        at once while S3 is asked in the background. Remembered 404s never are."""
        if stale.meta is None or not (self.stale_while_revalidate or self.honor_cache_control):
            return False  # no window can be open: parse no Cache-Control
        return time.time() - stale.expires_at < self._windows(stale.meta).while_revalidate

    def _instead_of_failing(self, stale: Entry | None, error: OriginError) -> Stale:
        """``stale`` standing in for S3's ``error`` (stale-if-error, RFC 5861 §4); raises
        ``error`` if it may not."""
        if stale is None or not self._usable_when_failing(stale):
            raise error
        return Stale(stale, error)

    @property
    def busy(self) -> bool:
        """Whether a fill is running (a reload waits for none before closing its client)."""
        return bool(self._fills)

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
        stale = fill.stale
        etag = stale.meta.etag if stale is not None and stale.meta is not None else None
        generation = self.cache.generation
        try:
            # With a stale copy to fall back on, fail fast rather than retry with backoff.
            fallback = stale is not None and self._usable_when_failing(stale)
            result = await self.origin.get(fill.key, if_none_match=etag, retry=not fallback)
        except ObjectNotFound:
            now = time.time()
            self.cache.put_missing(self.namespace + fill.key, now, now + self.ttl)
            fill.headers.set_result(Missing(fill.key, "miss"))
            return
        except OriginError as exc:
            if is_failure(exc):  # remembered before the fill ends: no request slips between
                self.failures.remember(fill.key, exc, time.monotonic())
            fill.headers.set_result(self._instead_of_failing(stale, exc))
            return
        if result is NOT_MODIFIED:
            assert stale is not None
            now = time.time()
            assert stale.meta is not None
            expires_at = self.expires_at(stale.meta, now)
            entry = await asyncio.to_thread(self.cache.refresh, stale, now, expires_at)
            fill.headers.set_result(Revalidated(entry))
            return
        assert isinstance(result, OriginObject)
        if self.max_object_size is not None and result.meta.size > self.max_object_size:
            return pass_through(fill, result, self.expires_at(result.meta, time.time()))
        await self._store(fill, result, generation)

    def _usable_when_failing(self, stale: Entry) -> bool:
        """stale-if-error (RFC 5861 §4): an expired object may stand in for a failing S3
        within its stale-if-error window past its expiry. Remembered 404s never do."""
        if stale.meta is None:
            return False
        return time.time() - stale.expires_at <= self._windows(stale.meta).if_error

    async def _store(self, fill: Fill, obj: OriginObject, generation: int) -> None:
        """Stream ``obj`` into the cache while the fill's readers follow it, then commit it.
        If no cache file can be created, the fill becomes direct. If a write or the commit
        fails (the disk filled meanwhile), the partial file is removed, nothing is recorded,
        the fill's S3 response is closed and its readers take the rest from S3 themselves
        (:meth:`Fill.body`): one extra ranged GET per reader past that point, instead of
        relaying one response to readers of different speeds, which would need unbounded
        memory or would let the slowest reader hold up the others.

        A body of at most :data:`SMALL_BODY` bytes is read whole and verified first: its
        readers send it from memory right behind its head, and its file is created, written
        and committed after they have (creating a file took 0.05–0.3 ms of a miss here). A
        failed one then fails before any response starts (a 502, not a cut-off 200); one
        the cache cannot store leaves the fill's ``write_failed``, its readers served."""
        meta = obj.meta
        fill.meta, fill.expires_at = meta, self.expires_at(meta, time.time())
        small = meta.size <= SMALL_BODY
        if small:
            fill.whole = b"".join([chunk async for chunk in obj.chunks()])
            fill.written = len(fill.whole)
            fill.headers.set_result(Filling(fill))
            await _readers_first()
        writer = self._begin_write(self.namespace + fill.key, meta.size)
        if writer is None and small:
            fill.write_failed = True
            return fill._notify()
        if writer is None:
            return pass_through(fill, obj, fill.expires_at)
        try:
            if fill.whole is not None:
                writer.write(fill.whole)
                body = fill.whole if meta.size <= self.cache.memory_object_size else None
            else:
                fill.tmp_path = writer.tmp_path
                fill.headers.set_result(Filling(fill))
                body = await self._write_body(fill, obj, writer)
                await _readers_first()
            if self.cache.over_budget(obj.meta.size):  # --cache-max-size holds at each commit
                await asyncio.to_thread(self.cache.make_room, obj.meta.size)
            fill.entry = self.cache.commit(
                writer,
                self.namespace + fill.key,
                obj.meta,
                time.time(),
                fill.expires_at,
                generation,
                body,
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


async def _readers_first() -> None:
    """Let the requests following a fill send the body it has just completed before the
    fill commits it (an index write and a rename: half a millisecond off a miss's response).
    A request that started the fill, or joined it, waits on ``asyncio.shield(fill.headers)``:
    it runs two turns of the loop after the headers' result is set (the shield's callback,
    then its task's wake-up); one already reading waits one turn after each chunk. Two
    turns here put the commit behind both. Only the order depends on this, never the
    result: a reader holds the file open, and the rename does not disturb it."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _close_unclaimed(headers: asyncio.Future[Outcome]) -> None:
    """A background revalidation found a new version too large to store: nobody will read
    S3's response, so free its connection now rather than after ``UNCLAIMED_TIMEOUT``."""
    if headers.cancelled() or headers.exception() is not None:
        return
    outcome = headers.result()
    if isinstance(outcome, PassThrough):
        obj = outcome.fill.claim()
        if obj is not None:
            obj.close()


__all__ = ["Fill", "OriginError", "ReadThrough", "Writer"]
