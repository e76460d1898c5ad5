"""The GET/HEAD endpoint, as a raw ASGI app (the hit path; see :mod:`s3proxy.responses` for
why it bypasses starlette's Request/Response).

request -> key (:mod:`keys`) -> cache or single fill (:mod:`readthrough`) -> preconditions and
range (:mod:`conditional`) -> render (:mod:`responses`). Errors become responses here, in one
place, before the response starts; after it has started they abort the connection.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from s3proxy import logging as log
from s3proxy.cache import Entry
from s3proxy.conditional import (
    ByteRange,
    Outcome,
    RangeKind,
    evaluate_preconditions,
    if_range_allows,
    parse_range,
)
from s3proxy.config import Config
from s3proxy.exceptions import CacheError, OriginError, OriginTimeout
from s3proxy.keys import Key, Rejected, path_to_key
from s3proxy.readthrough import Fill, ReadThrough
from s3proxy.record import Recorder, RequestRecord, client_ip, parse_networks
from s3proxy.responses import (
    INLINE_READ_MAX,
    BodyGone,
    Headers,
    body_chunks,
    content_type,
    multipart_parts,
    open_checked,
    range_headers,
    representation_headers,
    send_body,
    send_empty,
    send_stream,
    send_text,
)

_WANTED = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
        b"origin",
        b"x-real-ip",
        b"x-forwarded-for",
        b"access-control-request-headers",
    }
)
_CONDITIONAL = (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since")
_VALIDATOR_HEADERS = frozenset({b"etag", b"last-modified", b"expires", b"cache-control"})
ALLOW = b"GET, HEAD, OPTIONS"
#: Paths whose key mapping is remembered; the memo is emptied when full (random paths from
#: a scanner must not grow memory).
KEY_MEMO_SIZE = 16_384

_logger = log.get_logger("s3proxy.site")


def pick_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request headers the endpoint reads; repeated ones joined with ``, `` (RFC 9110
    §5.3)."""
    picked: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _WANTED:
            previous = picked.get(name)
            picked[name] = value if previous is None else previous + b", " + value
    return picked


class Cors:
    """``ALLOWED_ORIGINS``: an origin is allowed if listed, or if the list holds ``*``."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.enabled = bool(origins)
        self.any = "*" in origins
        self.origins = frozenset(o.encode() for o in origins)

    def headers(self, origin: bytes | None) -> Headers:
        if not self.enabled:
            return []
        if origin and (self.any or origin.lower() in self.origins):
            return [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        return [(b"vary", b"Origin")]


@dataclass(slots=True)
class Outcome_:
    """What the access log and the metrics record need to know about an answer."""

    status: int = 200
    sent: int = 0
    cache: str = "-"
    mime: bytes = b""
    origin_bytes: int = 0


class Site:
    """Serve objects of the configured bucket (and prefix) for GET and HEAD."""

    def __init__(
        self, config: Config, readthrough: ReadThrough, recorder: Recorder | None = None
    ) -> None:
        self.config = config
        self.readthrough = readthrough
        self.recorder = recorder
        self.trusted = parse_networks(config.trusted_proxies)
        #: Requests by cache outcome (hit, miss, ...) in this worker.
        self.counts: collections.Counter[str] = collections.Counter()
        self.cors = Cors(config.allowed_origins)
        self.ttl = config.ttl
        # raw path -> Key: mapping is pure, and a memo hit costs 0.1 µs against ~3 µs.
        self._keys: dict[bytes, Key] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        headers = pick_headers(scope["headers"])
        out = Outcome_()
        try:
            await self._dispatch(scope, headers, send, out)
        finally:
            elapsed = time.perf_counter() - started
            self.counts[out.cache] += 1
            client = scope.get("client")
            ip = client_ip(
                headers.get(b"x-real-ip"),
                headers.get(b"x-forwarded-for"),
                client[0] if client else None,
                self.trusted,
            )
            path = scope["raw_path"].decode("latin-1")[:1024]
            log.access(
                {
                    "method": scope["method"],
                    "path": path,
                    "status": out.status,
                    "bytes": out.sent,
                    "duration_ms": round(elapsed * 1000, 3),
                    "cache": out.cache,
                    "client_ip": ip,
                }
            )
            if self.recorder is not None:
                self.recorder.emit(
                    RequestRecord(
                        timestamp=time.time() - elapsed,
                        method=scope["method"],
                        resource=path,
                        mime_type=out.mime.decode("latin-1"),
                        ip=ip,
                        size=out.sent,
                        duration_us=int(elapsed * 1_000_000),
                        status=out.status,
                        cache=out.cache,
                        origin_bytes=out.origin_bytes,
                    )
                )

    async def _dispatch(
        self, scope: dict[str, Any], headers: dict[bytes, bytes], send: Any, out: Outcome_
    ) -> None:
        method = scope["method"]
        cors = self.cors.headers(headers.get(b"origin"))
        if method == "OPTIONS":
            out.status = 204
            return await send_empty(send, 204, self._preflight(headers, cors))
        if method not in ("GET", "HEAD"):
            out.status = 405
            out.sent = await send_text(send, 405, "Method Not Allowed", [(b"allow", ALLOW)])
            return None
        if self.config.reject_query_strings and scope["query_string"]:
            out.status = 400
            out.sent = await send_text(send, 400, "Query strings are not accepted")
            return None
        raw_path = scope["raw_path"]
        key: Key | Rejected | None = self._keys.get(raw_path)
        if key is None:
            key = path_to_key(
                raw_path, prefix=self.config.prefix, index_document=self.config.index_document
            )
            if isinstance(key, Key):
                if len(self._keys) >= KEY_MEMO_SIZE:
                    self._keys.clear()
                self._keys[raw_path] = key
        if isinstance(key, Rejected):
            out.status = key.status
            out.sent = await send_text(send, key.status, key.reason)
            return None
        await self._serve(key, method, headers, cors, send, out)
        return None

    def _preflight(self, headers: dict[bytes, bytes], cors: Headers) -> Headers:
        requested = headers.get(b"access-control-request-headers", b"*, authorization")
        return [
            (b"access-control-allow-methods", ALLOW),
            (b"access-control-allow-headers", requested),
            (b"access-control-max-age", b"86400"),
            (b"content-length", b"0"),
            *cors,
        ]

    async def _serve(
        self,
        key: Key,
        method: str,
        headers: dict[bytes, bytes],
        cors: Headers,
        send: Any,
        out: Outcome_,
        retried: bool = False,
    ) -> None:
        now = time.time()
        found: Entry | Fill | None = self.readthrough.lookup(key.key, now)
        out.cache = "hit"
        if found is None:
            out.cache = "miss"
            leader = not self.readthrough.in_flight(key.key)
            try:
                found = await self.readthrough.fetch(key.key)
            except OriginTimeout as exc:
                return await self._fail(send, out, 504, "Gateway Timeout", exc, key)
            except OriginError as exc:
                return await self._fail(send, out, 502, "Bad Gateway", exc, key)
            except CacheError as exc:
                return await self._fail(send, out, 503, "Service Unavailable", exc, key)
            if leader and found.meta is not None:
                out.origin_bytes = found.meta.size
            if isinstance(found, Fill) and found.entry is not None:
                found = found.entry
        meta = found.meta
        if meta is None:
            out.status = 404
            out.sent = await send_text(send, 404, "Not Found", cors)
            return None
        entry = found.entry if isinstance(found, Fill) else found
        if isinstance(found, Fill) and (b"range" in headers or entry is None):
            # A range of a body still arriving: stream the whole body if no range is asked.
            if b"range" not in headers:
                return await self._send_fill(found, method, headers, cors, send, out)
            found = await _wait_for(found)
        assert isinstance(found, Entry)
        try:
            return await self._send_entry(found, method, headers, cors, send, out, now)
        except BodyGone:
            if retried:
                return await self._fail(send, out, 503, "Service Unavailable", None, key)
        # The cached body vanished before we started answering: forget it, fetch it again.
        self.readthrough.cache.discard(key.key)
        return await self._serve(key, method, headers, cors, send, out, retried=True)

    async def _send_fill(
        self,
        fill: Fill,
        method: str,
        headers: dict[bytes, bytes],
        cors: Headers,
        send: Any,
        out: Outcome_,
    ) -> None:
        assert fill.meta is not None
        entry = Entry(fill.key, fill.meta, time.time(), time.time() + self.ttl)
        rep = representation_headers(entry, self.ttl)
        out.mime = rep[0][1]
        decided = self._preconditions(entry, method, headers, rep, cors)
        if decided is not None:
            out.status = decided[0]
            return await send_empty(send, decided[0], decided[1])
        length = [(b"content-length", str(fill.meta.size).encode())]
        if method == "HEAD":
            return await send_empty(send, 200, [*rep, *length, *cors])
        out.sent = await send_stream(send, 200, [*rep, *length, *cors], fill.body())
        return None

    def _preconditions(
        self,
        entry: Entry,
        method: str,
        headers: dict[bytes, bytes],
        rep: Headers,
        cors: Headers,
    ) -> tuple[int, Headers] | None:
        """(status, headers) of a 304 or 412, or ``None`` to go on (RFC 9110 §13.2.2)."""
        if not any(name in headers for name in _CONDITIONAL):
            return None
        meta = entry.meta
        assert meta is not None
        outcome = evaluate_preconditions(
            method,
            meta.etag,
            meta.last_modified,
            if_match=_text(headers.get(b"if-match")),
            if_none_match=_text(headers.get(b"if-none-match")),
            if_modified_since=_text(headers.get(b"if-modified-since")),
            if_unmodified_since=_text(headers.get(b"if-unmodified-since")),
        )
        if outcome is Outcome.NOT_MODIFIED:
            return 304, [h for h in rep if h[0] in _VALIDATOR_HEADERS] + cors
        if outcome is Outcome.PRECONDITION_FAILED:
            return 412, [(b"content-length", b"0"), *cors]
        return None

    async def _send_entry(
        self,
        entry: Entry,
        method: str,
        headers: dict[bytes, bytes],
        cors: Headers,
        send: Any,
        out: Outcome_,
        now: float,
    ) -> None:
        meta = entry.meta
        assert meta is not None
        rep = representation_headers(entry, self.ttl)
        out.mime = rep[0][1]
        decided = self._preconditions(entry, method, headers, rep, cors)
        if decided is not None:
            out.status = decided[0]
            return await send_empty(send, decided[0], decided[1])
        age = [(b"age", str(max(0, int(now - entry.stored_at))).encode())]
        range_header = headers.get(b"range")
        if range_header is not None and method == "GET":
            if_range = _text(headers.get(b"if-range"))
            if if_range_allows(if_range, meta.etag, meta.last_modified):
                decision = parse_range(range_header.decode("latin-1"), meta.size)
                if decision.kind is RangeKind.UNSATISFIABLE:
                    out.status = 416
                    unsatisfied = [(b"content-range", f"bytes */{meta.size}".encode())]
                    out.sent = await send_text(send, 416, "Range Not Satisfiable", unsatisfied)
                    return None
                if decision.kind is RangeKind.SATISFIABLE:
                    out.status = 206
                    out.sent = await self._send_ranges(
                        entry, decision.ranges, rep, age + cors, send
                    )
                    return None
        full = rep + [(b"content-length", str(meta.size).encode())] + age + cors
        if method == "HEAD":
            return await send_empty(send, 200, full)
        source = await self._open_body(entry)
        if type(source) is bytes:
            await send_body(send, 200, full, source)
            out.sent = len(source)
            return None
        out.sent = await send_stream(send, 200, full, body_chunks(source, 0, meta.size))
        return None

    async def _open_body(self, entry: Entry) -> bytes | int:
        """The entry's bytes (memory tier) or an open file descriptor of its body, obtained
        before the response starts. Raises :class:`BodyGone` if the file was removed or
        truncated behind our back (a cron job, eviction by another worker)."""
        if entry.body is not None:
            return entry.body
        meta = entry.meta
        assert meta is not None
        cache = self.readthrough.cache
        try:
            if entry.path is None:
                raise FileNotFoundError(entry.key)
            if meta.size <= cache.memory_object_size:
                if meta.size <= INLINE_READ_MAX:
                    return cache.read_small(entry)
                return await asyncio.to_thread(cache.read_small, entry)
            return open_checked(entry.path, meta.size)
        except (OSError, CacheError):
            raise BodyGone(entry.key) from None

    async def _send_ranges(
        self, entry: Entry, ranges: tuple[ByteRange, ...], rep: Headers, extra: Headers, send: Any
    ) -> int:
        meta = entry.meta
        assert meta is not None
        source = await self._open_body(entry)
        if len(ranges) == 1:
            (r,) = ranges
            headers = rep + range_headers(r, meta.size) + extra
            return await send_stream(send, 206, headers, body_chunks(source, r.start, r.length))
        boundary = os.urandom(12).hex()
        ctype = content_type(entry.key, meta)
        parts, total = multipart_parts(ranges, meta.size, ctype, boundary)
        headers = [h for h in rep if h[0] != b"content-type"] + [
            (b"content-type", f"multipart/byteranges; boundary={boundary}".encode()),
            (b"content-length", str(total).encode()),
            *extra,
        ]

        async def body() -> AsyncIterator[bytes]:
            try:
                for head, r in zip(parts, ranges, strict=False):
                    yield head
                    async for chunk in body_chunks(source, r.start, r.length, close=False):
                        yield chunk
                yield parts[-1]
            finally:
                if type(source) is int:
                    os.close(source)

        return await send_stream(send, 206, headers, body())

    async def _fail(
        self, send: Any, out: Outcome_, status: int, message: str, exc: Exception | None, key: Key
    ) -> None:
        _logger.warning("request_failed", key=key.key, status=status, error=str(exc))
        out.status = status
        out.sent = await send_text(send, status, message)


async def _wait_for(fill: Fill) -> Entry:
    """Wait until ``fill`` has stored its body (or failed: then raise)."""
    async for _ in fill.body():
        pass
    if fill.entry is None:
        raise CacheError("the fill did not store its body")
    return fill.entry


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
