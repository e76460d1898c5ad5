"""Bodies the cache does not store — objects over ``--cache-max-object-size``, and any object
while the cache cannot write (a full disk) — streamed from S3 as they arrive, in bounded
memory. A single range is asked of S3 itself, with ``If-Match`` so its bytes come from the
version the headers describe."""

from __future__ import annotations

import time

from s3proxy.cache import Entry
from s3proxy.conditional import ByteRange, RangeKind, if_range_allows, parse_range
from s3proxy.exceptions import ObjectChanged, OriginError
from s3proxy.exchange import Exchange, text
from s3proxy.fill import Fill
from s3proxy.meta import ObjectMeta
from s3proxy.origin import Origin, OriginObject
from s3proxy.readthrough import ReadThrough
from s3proxy.responses import range_headers, representation_headers


async def send_direct(x: Exchange, fill: Fill, readthrough: ReadThrough) -> None:
    """Answer ``x`` for the object ``fill`` found and will not store (``direct``, or its write
    failed): with the fill's own S3 response if this request is the one that claims it, else
    with a GET of its own. Raises :class:`OriginError` subclasses (the caller answers them
    before the response starts; after, the connection is aborted)."""
    origin, ttl = readthrough.origin, readthrough.ttl
    obj = fill.claim()
    try:
        meta = fill.meta
        assert meta is not None
        rep = representation_headers(Entry(fill.key, meta, x.now, x.now + ttl), ttl)
        x.mime, x.cache = rep[0][1], "pass"
        decided = x.preconditions(meta, rep)
        if decided is not None:
            return await x.respond_empty(*decided)
        if x.method == "HEAD":
            length = (b"content-length", str(meta.size).encode())
            return await x.respond_empty(200, [*rep, length, *x.cors])
        wanted = single_range(meta, x.headers)
        if isinstance(wanted, int):
            unsatisfied = [(b"content-range", f"bytes */{meta.size}".encode())]
            return await x.respond_text(416, "Range Not Satisfiable", unsatisfied)
        if obj is None or wanted is not None:
            if obj is not None:
                obj.close()
            try:
                obj = await direct_get(origin, fill.key, wanted, meta.etag)
            except ObjectChanged:
                # Replaced in between: the whole current object, with its own headers.
                obj, wanted = await direct_get(origin, fill.key, None, None), None
                now = time.time()
                rep = representation_headers(Entry(fill.key, obj.meta, now, now + ttl), ttl)
        status, extra = 200, [(b"content-length", str(obj.meta.size).encode())]
        if wanted is not None:
            status, extra = 206, range_headers(wanted, meta.size)
        x.origin_bytes += obj.meta.size
        return await x.respond_stream(status, rep + extra + x.cors, obj.chunks())
    finally:
        if obj is not None:
            obj.close()


def single_range(meta: ObjectMeta, headers: dict[bytes, bytes]) -> ByteRange | int | None:
    """The one range to ask S3 for, 416 if unsatisfiable, or ``None`` for the whole body
    (no Range, If-Range failed, or several ranges: those get a 200 when passing through)."""
    header = headers.get(b"range")
    if header is None or not if_range_allows(
        text(headers.get(b"if-range")), meta.etag, meta.last_modified
    ):
        return None
    decision = parse_range(header.decode("latin-1"), meta.size)
    if decision.kind is RangeKind.UNSATISFIABLE:
        return 416
    if decision.kind is RangeKind.SATISFIABLE and len(decision.ranges) == 1:
        return decision.ranges[0]
    return None


async def direct_get(
    origin: Origin, key: str, wanted: ByteRange | None, if_match: str | None
) -> OriginObject:
    byte_range = f"bytes={wanted.start}-{wanted.end}" if wanted is not None else None
    result = await origin.get(key, byte_range=byte_range, if_match=if_match)
    if not isinstance(result, OriginObject):
        raise OriginError("unexpected 304 from S3")
    return result
