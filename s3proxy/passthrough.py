"""Bodies the cache does not store — objects over ``--cache-max-object-size``, and any object
while the cache cannot write (a full disk) — streamed from S3 as they arrive, in bounded
memory. A single range is asked of S3 itself, with ``If-Match`` so its bytes come from the
version the headers describe; several ranges get the whole 200 (:data:`Ranges.ONE`)."""

from __future__ import annotations

import time

from s3proxy.conditional import ByteRange
from s3proxy.exceptions import ObjectChanged, OriginError
from s3proxy.exchange import Exchange
from s3proxy.fill import Fill
from s3proxy.origin import Origin, OriginObject
from s3proxy.plan import Body, Ranges, plan
from s3proxy.readthrough import ReadThrough
from s3proxy.responses import arriving


async def send_direct(x: Exchange, fill: Fill, readthrough: ReadThrough) -> None:
    """Answer ``x`` for the object ``fill`` found and will not store (``direct``, or its write
    failed): with the fill's own S3 response if this request is the one that claims it, else
    with a GET of its own. Raises :class:`OriginError` subclasses (the caller answers them
    before the response starts; after, the connection is aborted)."""
    obj = fill.claim()
    try:
        meta = fill.meta
        assert meta is not None
        rep = arriving(fill.key, meta, fill.expires_at, readthrough.ttl, False, Ranges.ONE, x.vary)
        x.mime, x.encoding, x.cache = rep.mime, rep.encoding, "pass"
        p = plan(x.method, x.headers, rep, x.now)
        if p.body is not Body.WHOLE and p.body is not Body.RANGES:
            return await x.render(p)
        wanted = p.ranges[0] if p.ranges else None
        if obj is None or wanted is not None:
            if obj is not None:
                obj.close()
            try:
                obj = await direct_get(readthrough.origin, fill.key, wanted, meta.etag)
            except ObjectChanged:
                # Replaced in between: the whole current object, with its own headers.
                obj = await direct_get(readthrough.origin, fill.key, None, None)
                now = time.time()
                expires_at = readthrough.expires_at(obj.meta, now)
                rep = arriving(
                    fill.key, obj.meta, expires_at, readthrough.ttl, False, Ranges.NONE, x.vary
                )
                x.mime, x.encoding = rep.mime, rep.encoding
                p = plan(x.method, {}, rep, now)
        x.origin_bytes += obj.meta.size
        return await x.render(p, obj.chunks())
    finally:
        if obj is not None:
            obj.close()


async def direct_get(
    origin: Origin, key: str, wanted: ByteRange | None, if_match: str | None
) -> OriginObject:
    """GET ``key`` (only ``wanted`` of it, if given) from S3. Raises :class:`OriginError`
    subclasses, :class:`ObjectChanged` if ``if_match`` no longer matches."""
    byte_range = f"bytes={wanted.start}-{wanted.end}" if wanted is not None else None
    result = await origin.get(key, byte_range=byte_range, if_match=if_match)
    if not isinstance(result, OriginObject):
        raise OriginError("unexpected 304 from S3")
    return result
