"""Render decisions as raw ASGI messages. No decisions are made here.

The hit path sends a precomputed header list and the body in one message: measured on these
machines, starlette's ``Response`` costs about half the throughput of a raw ASGI send for a
3 KB body, and ``FileResponse`` (a thread hop per chunk and per stat) 25 times more.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from collections.abc import AsyncIterator
from typing import Any

from s3proxy.cache import Entry
from s3proxy.conditional import ByteRange, content_range, format_http_date
from s3proxy.encoding import compressible, variant_etag
from s3proxy.meta import ObjectMeta
from s3proxy.plan import Headers, Ranges, Representation

Send = Any  # the ASGI send callable
#: Set on compressible objects when compression is on (RFC 9110 §12.5.5).
VARY_ENCODING = (b"vary", b"Accept-Encoding")


def vary_encoding(vary: bytes) -> tuple[bytes, bytes]:
    """The ``Vary`` of a compressible object on a site whose answers also vary on ``vary``
    (``Origin``; b"" for nothing more): one field, not two (RFC 9110 §12.5.5)."""
    return (b"vary", b"Accept-Encoding, " + vary) if vary else VARY_ENCODING


#: Chunk size when a body is read from disk in a worker thread.
DISK_CHUNK = 256 * 1024
#: Bodies up to this size are read from disk on the event loop (a page-cache read of 64 KiB
#: measured ~10 µs here, cheaper than the ~60 µs thread hop).
INLINE_READ_MAX = 64 * 1024
_GENERIC_TYPES = frozenset({"", "binary/octet-stream", "application/octet-stream"})
_TEXT_PLAIN = (b"content-type", b"text/plain; charset=utf-8")


def content_type(key: str, meta: ObjectMeta) -> str:
    """S3's Content-Type, unless it is missing or generic: then a guess from the extension."""
    stored = meta.content_type or ""
    if stored.lower() not in _GENERIC_TYPES:
        return stored
    guessed, _ = mimetypes.guess_type(key, strict=False)
    if guessed is None:
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed in ("application/javascript", "application/json"):
        return guessed + "; charset=utf-8"
    return guessed


def representation(
    entry: Entry, ttl: int, compress: bool = False, coding: str | None = None, vary: bytes = b""
) -> Representation:
    """The stored copy ``entry`` as :func:`s3proxy.plan.plan` sees it: the identity body, or
    the ``coding`` variant (its size known only once it is made). Memoised on the entry per
    coding (the hit path builds no headers); rebuilt when a revalidation moved
    ``expires_at``, or the site's ``vary`` changed (a reload)."""
    memo: dict[str | None, tuple[float, bytes, Representation]] = entry.rendered
    cached = memo.get(coding)
    if cached is not None and cached[0] == entry.expires_at and cached[1] == vary:
        return cached[2]
    meta = entry.meta
    assert meta is not None
    headers = describe(entry.key, meta, entry.expires_at, ttl, compress, coding, vary)
    rep = Representation(
        headers,
        None if coding else meta.size,
        variant_etag(meta.etag, coding) if coding else meta.etag,
        meta.last_modified,
        entry.stored_at,
        Ranges.NONE if coding else Ranges.ANY,
    )
    memo[coding] = (entry.expires_at, vary, rep)
    return rep


def arriving(
    key: str,
    meta: ObjectMeta,
    expires_at: float,
    ttl: int,
    compress: bool,
    ranges: Ranges,
    vary: bytes = b"",
) -> Representation:
    """A body S3 is sending (no Age: it is as fresh as can be); ``ranges`` says whether a
    range of it can be asked of S3 (a pass-through) or not (a body being stored)."""
    headers = describe(key, meta, expires_at, ttl, compress, None, vary)
    return Representation(headers, meta.size, meta.etag, meta.last_modified, None, ranges)


def describe(
    key: str,
    meta: ObjectMeta,
    expires_at: float,
    ttl: int,
    compress: bool = False,
    coding: str | None = None,
    vary: bytes = b"",
) -> Headers:
    """Headers describing the object (everything but length, range and per-request ones),
    for the identity body or for the ``coding`` variant; Content-Type first. With
    ``compress``, compressible objects carry ``Vary: Accept-Encoding`` in every variant;
    ``vary`` is what the site's every answer varies on besides (``Origin``), in the same
    field."""
    ctype = content_type(key, meta)
    etag = variant_etag(meta.etag, coding) if coding else meta.etag
    headers = [(b"content-type", ctype.encode("latin-1"))]
    if etag:
        headers.append((b"etag", etag.encode("latin-1")))
    if meta.last_modified is not None:
        headers.append((b"last-modified", format_http_date(meta.last_modified).encode()))
    expires = meta.expires or format_http_date(expires_at)
    headers.append((b"expires", expires.encode("latin-1")))
    cache_control = meta.cache_control or f"max-age={ttl}"
    headers.append((b"cache-control", cache_control.encode("latin-1")))
    for name, value in (
        (b"content-encoding", coding or meta.content_encoding),
        (b"content-disposition", meta.content_disposition),
        (b"content-language", meta.content_language),
    ):
        if value:
            headers.append((name, value.encode("latin-1")))
    if compress and compressible(ctype, meta.size, meta.content_encoding):
        headers.append(vary_encoding(vary))
    elif vary:
        headers.append((b"vary", vary))
    headers.append((b"accept-ranges", b"bytes"))
    return headers


async def send_body(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_text(send: Send, status: int, message: str, headers: Headers | None = None) -> int:
    """Our own short plain-text answer (never S3's XML). Returns the body length."""
    body = f"{message}\n".encode()
    out = [_TEXT_PLAIN, (b"content-length", str(len(body)).encode())]
    if headers:
        out.extend(headers)
    await send_body(send, status, out, body)
    return len(body)


async def send_empty(send: Send, status: int, headers: Headers) -> None:
    """A response without a body (304, HEAD, 204). ``headers`` may carry content-length."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def send_stream(
    send: Send, status: int, headers: Headers, chunks: AsyncIterator[bytes]
) -> int:
    """Send ``chunks`` as the body. If the iterator raises part way, the exception propagates
    after the response has started: the server then aborts the connection, so the client sees
    a broken transfer, never a clean short one."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    sent = 0
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        sent += len(chunk)
    await send({"type": "http.response.body", "body": b""})
    return sent


def open_checked(path: str, size: int) -> int:
    """Open ``path`` for reading if it holds exactly ``size`` bytes (an open + fstat, ~5 µs on
    the event loop); raises ``OSError`` otherwise. The caller owns the descriptor."""
    fd = os.open(path, os.O_RDONLY)
    if os.fstat(fd).st_size != size:
        os.close(fd)
        raise OSError(f"{path} does not have its recorded size")
    return fd


async def body_chunks(
    source: bytes | int, start: int, length: int, *, close: bool = True
) -> AsyncIterator[bytes]:
    """``length`` bytes from ``start`` of an in-memory body, or of an open file read in
    256 KiB chunks with one thread hop each. Closes the descriptor at the end if ``close``."""
    if type(source) is bytes:
        yield source[start : start + length]
        return
    assert isinstance(source, int)
    try:
        offset, end = start, start + length
        while offset < end:
            chunk = await asyncio.to_thread(os.pread, source, min(DISK_CHUNK, end - offset), offset)
            if not chunk:
                raise OSError("cached body is shorter than its recorded size")
            offset += len(chunk)
            yield chunk
    finally:
        if close:
            os.close(source)


def multipart(
    source: bytes | int, ranges: tuple[ByteRange, ...], size: int, ctype: str
) -> tuple[Headers, AsyncIterator[bytes]]:
    """A ``multipart/byteranges`` body of ``ranges`` of ``source`` (RFC 9110 §14.6): its
    Content-Type (with a fresh random boundary) and Content-Length, and its chunks. The
    chunks close a descriptor ``source`` at the end."""
    boundary = os.urandom(12).hex()
    heads = [
        f"\r\n--{boundary}\r\ncontent-type: {ctype}\r\n"
        f"content-range: {content_range(r, size)}\r\n\r\n".encode()
        for r in ranges
    ]
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = sum(len(h) for h in heads) + sum(r.length for r in ranges) + len(tail)
    headers = [
        (b"content-type", f"multipart/byteranges; boundary={boundary}".encode()),
        (b"content-length", str(total).encode()),
    ]

    async def chunks() -> AsyncIterator[bytes]:
        try:
            for head, r in zip(heads, ranges, strict=True):
                yield head
                async for chunk in body_chunks(source, r.start, r.length, close=False):
                    yield chunk
            yield tail
        finally:
            if type(source) is int:
                os.close(source)

    return headers, chunks()
