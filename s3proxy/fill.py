"""One GetObject in progress for a key, shared by every request that wants it (see
:mod:`s3proxy.readthrough`, which starts fills and stores their bodies).

A fill's body is written to a temporary file as it arrives; each reader follows the file with
its own descriptor, so the first client does not wait for the whole object and a slow reader
holds up nobody. Bytes the file does not hold — the body is not stored (``direct``) or the
cache gave up part way (``write_failed``) — come straight from S3, from the reader's offset.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from s3proxy.cache import Entry
from s3proxy.exceptions import OriginBodyError, OriginError
from s3proxy.meta import ObjectMeta
from s3proxy.origin import Origin, OriginObject
from s3proxy.outcome import Outcome, PassThrough

#: Seconds a direct fill's S3 response waits to be claimed before it is closed.
UNCLAIMED_TIMEOUT = 30.0
#: A waiting reader reads at most this much of the fill's file at a time.
READ_CHUNK = 256 * 1024


@dataclass(eq=False)
class Fill:
    """A GetObject in progress for one key, shared by every request that wants it.

    ``headers`` resolves once S3 has answered, to the :data:`~s3proxy.outcome.Outcome` every
    waiter shares: :class:`~s3proxy.outcome.Filling` (the body is arriving in ``tmp_path``)
    or :class:`~s3proxy.outcome.PassThrough` (``direct``: it is not stored) for this fill, or
    an outcome without a body from S3 (a 304, a missing key, a stale copy on failure).
    """

    key: str
    headers: asyncio.Future[Outcome]
    #: Where bytes the cache does not hold are asked for (see :meth:`body`).
    origin: Origin | None = None
    #: The expired copy (or remembered 404) this fill revalidates; ``None`` for a cold miss.
    stale: Entry | None = None
    meta: ObjectMeta | None = None
    #: When a copy of the body S3 is sending goes stale: counted from S3's answer, so the
    #: headers sent while it arrives and those of the stored copy agree.
    expires_at: float = 0.0
    tmp_path: str = ""
    #: The whole body, verified, when it was read before the fill answered (a small one):
    #: readers send it from memory (see :meth:`ReadThrough._store`).
    whole: bytes | None = None
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
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def claim(self) -> OriginObject | None:
        """The S3 response of a direct fill, to the first caller only."""
        obj, self.passthrough = self.passthrough, None
        return obj

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
        if self.whole is not None:
            if self.whole:  # as from a file: no chunk for an empty body
                yield self.whole
            return
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


def pass_through(fill: Fill, obj: OriginObject, expires_at: float) -> None:
    """Make ``fill`` direct: its requests stream the body from S3, the first with ``obj``."""
    fill.meta, fill.expires_at, fill.direct, fill.passthrough = obj.meta, expires_at, True, obj
    fill.headers.set_result(PassThrough(fill))
    # If the request that asked went away before claiming it, free the connection.
    asyncio.get_running_loop().call_later(UNCLAIMED_TIMEOUT, _release, fill)


def _release(fill: Fill) -> None:
    obj = fill.claim()
    if obj is not None:
        obj.close()
