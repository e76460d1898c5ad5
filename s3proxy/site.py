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
from functools import partial
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
from s3proxy.encoding import compress, compressible, negotiate, variant_etag
from s3proxy.exceptions import (
    CacheError,
    ObjectChanged,
    OriginBodyError,
    OriginError,
    OriginTimeout,
)
from s3proxy.keys import (
    Key,
    Rejected,
    folder_index,
    has_extension,
    path_to_key,
    trailing_slash_location,
)
from s3proxy.meta import ObjectMeta
from s3proxy.origin import OriginObject
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
        b"accept-encoding",
    }
)
_CONDITIONAL = (b"if-match", b"if-none-match", b"if-modified-since", b"if-unmodified-since")
_VALIDATOR_HEADERS = frozenset(
    {b"etag", b"last-modified", b"expires", b"cache-control", b"vary", b"content-encoding"}
)
_VARY_ENCODING = (b"vary", b"Accept-Encoding")
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
    compressed: bool = False
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
        self.compress = config.compress
        self._codings: dict[bytes, str | None] = {}
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
            log.request(
                scope["method"], path, out.status, out.sent, round(elapsed * 1000, 3), out.cache, ip
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
                        compressed=out.compressed,
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
        await self._serve(key, method, headers, cors, send, out, scope)
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
        scope: dict[str, Any],
        retried: bool = False,
    ) -> None:
        now = time.time()
        try:
            found = await self._find(key.key, now, out)
            status = 200
            if found.meta is None:
                fallback = await self._fallback(key, scope, now, out)
                if isinstance(fallback, bytes):
                    out.status = 301
                    redirect = [(b"location", fallback), (b"content-length", b"0"), *cors]
                    return await send_empty(send, 301, redirect)
                found, status = fallback if fallback is not None else (found, 404)
            elif found.meta.size == 0 and not key.index:
                # A zero-byte "folder marker" must not hide its folder's index.
                redirect_to = await self._folder_redirect(key, scope, now)
                if redirect_to is not None:
                    out.status = 301
                    redirect = [(b"location", redirect_to), (b"content-length", b"0"), *cors]
                    return await send_empty(send, 301, redirect)
        except OriginTimeout as exc:
            return await self._fail(send, out, 504, "Gateway Timeout", exc, key)
        except OriginError as exc:
            return await self._fail(send, out, 502, "Bad Gateway", exc, key)
        except CacheError as exc:
            return await self._fail(send, out, 503, "Service Unavailable", exc, key)
        if found.meta is None:
            out.status = 404
            out.sent = await send_text(send, 404, "Not Found", cors)
            return None
        if isinstance(found, Fill) and found.oversized:
            return await self._send_direct(found, key, method, headers, cors, send, out)
        if isinstance(found, Fill) and (
            status != 200 or b"range" in headers or self._wants_variant(found, headers)
        ):
            # A body still arriving: stream all of it, or wait for it if a range is asked.
            try:
                found = await _wait_for(found)
            except OriginError as exc:
                return await self._fail(send, out, 502, "Bad Gateway", exc, key)
        if status != 200:
            return await self._send_error_document(found, status, method, cors, send, out)
        if isinstance(found, Fill) and found.entry is None:
            return await self._send_fill(found, method, headers, cors, send, out)
        entry = found.entry if isinstance(found, Fill) else found
        assert entry is not None
        try:
            return await self._send_entry(entry, method, headers, cors, send, out, now)
        except BodyGone:
            if retried:
                return await self._fail(send, out, 503, "Service Unavailable", None, key)
        # The cached body vanished before we started answering: forget it, fetch it again.
        self.readthrough.cache.discard(entry.key)
        return await self._serve(key, method, headers, cors, send, out, scope, retried=True)

    async def _find(self, key: str, now: float, out: Outcome_) -> Entry | Fill:
        """The cached entry, or the fill that fetches it (raises the origin's errors)."""
        found = self.readthrough.lookup(key, now)
        if found is not None:
            if out.cache == "-":
                out.cache = "hit"
            return found
        out.cache = "miss"
        leader = not self.readthrough.in_flight(key)
        fetched = await self.readthrough.fetch(key)
        if isinstance(fetched, Entry) and fetched.meta is not None:
            # An entry, not a fill: S3 answered 304 (the copy was refreshed), or S3 failed
            # and the expired copy stands in (stale-if-error).
            out.cache = "revalidated" if fetched.stored_at >= now else "stale"
            return fetched
        if leader and fetched.meta is not None:
            out.origin_bytes += fetched.meta.size
        if isinstance(fetched, Fill) and fetched.entry is not None:
            return fetched.entry
        return fetched

    async def _fallback(
        self, key: Key, scope: dict[str, Any], now: float, out: Outcome_
    ) -> bytes | tuple[Entry | Fill, int] | None:
        """For a missing key, in order: a redirect to the folder (``/docs`` -> ``/docs/``),
        the SPA's index (200), the error document (404); ``None`` for a plain 404."""
        redirect_to = await self._folder_redirect(key, scope, now)
        if redirect_to is not None:
            return redirect_to
        config = self.config
        if config.spa and not has_extension(key.key):
            index = await self._find(config.prefix + config.index_document, now, out)
            if index.meta is not None:
                return index, 200
        if config.error_document is not None:
            page = await self._find(config.prefix + config.error_document, now, out)
            if page.meta is not None:
                return page, 404
        return None

    async def _folder_redirect(self, key: Key, scope: dict[str, Any], now: float) -> bytes | None:
        # Only extension-less names look like folders: a 404 for "style.css" should not cost
        # a second S3 request for "style.css/index.html".
        if not self.config.redirect_folders or key.index or has_extension(key.key):
            return None
        index_key = folder_index(key.key, self.config.index_document)
        if index_key is None:
            return None
        index = await self._find(index_key, now, Outcome_(cache="-"))
        if index.meta is None:
            return None
        return trailing_slash_location(scope["raw_path"], scope["query_string"])

    async def _send_error_document(
        self, page: Entry | Fill, status: int, method: str, cors: Headers, send: Any, out: Outcome_
    ) -> None:
        """The error page's body with ``status``: no validators, no ranges (it describes the
        error, not the object asked for)."""
        assert isinstance(page, Entry)
        meta = page.meta
        assert meta is not None
        ctype = content_type(page.key, meta).encode("latin-1")
        headers = [
            (b"content-type", ctype),
            (b"content-length", str(meta.size).encode()),
            (b"cache-control", b"no-cache"),
            *cors,
        ]
        out.status, out.mime = status, ctype
        if method == "HEAD":
            return await send_empty(send, status, headers)
        source = await self._open_body(page)
        out.sent = await send_stream(send, status, headers, body_chunks(source, 0, meta.size))
        return None

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
        rep = representation_headers(entry, self.ttl, self.compress)
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
        etag: str | None = None,
    ) -> tuple[int, Headers] | None:
        """(status, headers) of a 304 or 412, or ``None`` to go on (RFC 9110 §13.2.2)."""
        if not any(name in headers for name in _CONDITIONAL):
            return None
        meta = entry.meta
        assert meta is not None
        outcome = evaluate_preconditions(
            method,
            etag or meta.etag,
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
        rep = representation_headers(entry, self.ttl, self.compress)
        out.mime = rep[0][1]
        accept = headers.get(b"accept-encoding")
        if accept is not None and b"range" not in headers and _VARY_ENCODING in rep:
            coding = self._negotiate(accept)
            if coding is not None:
                return await self._send_variant(
                    entry, coding, method, headers, cors, send, out, now
                )
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

    def _wants_variant(self, fill: Fill, headers: dict[bytes, bytes]) -> bool:
        """Whether a body still arriving will be sent compressed (so wait for all of it)."""
        meta = fill.meta
        if not self.compress or meta is None or b"accept-encoding" not in headers:
            return False
        if not compressible(content_type(fill.key, meta), meta.size, meta.content_encoding):
            return False
        return self._negotiate(headers[b"accept-encoding"]) is not None

    def _negotiate(self, accept_encoding: bytes) -> str | None:
        coding = self._codings.get(accept_encoding, "")
        if coding == "":
            coding = negotiate(accept_encoding.decode("latin-1"))
            if len(self._codings) < 1024:  # a handful of values in practice
                self._codings[accept_encoding] = coding
        return coding

    async def _send_variant(
        self,
        entry: Entry,
        coding: str,
        method: str,
        headers: dict[bytes, bytes],
        cors: Headers,
        send: Any,
        out: Outcome_,
        now: float,
    ) -> None:
        """The compressed variant: its own ETag for preconditions, made once and cached."""
        meta = entry.meta
        assert meta is not None
        rep = representation_headers(entry, self.ttl, True, coding)
        etag = variant_etag(meta.etag, coding)
        decided = self._preconditions(entry, method, headers, rep, cors, etag)
        if decided is None and b"if-none-match" in headers:
            # The client holds another coding of the same version (its first answer may have
            # been the identity body): still valid, so 304 with that representation's headers.
            identity = representation_headers(entry, self.ttl, True)
            alternative = self._preconditions(entry, method, headers, identity, cors)
            if alternative is not None and alternative[0] == 304:
                decided = alternative
        if decided is not None:
            out.status = decided[0]
            return await send_empty(send, decided[0], decided[1])
        variants = entry.variants
        body = variants.get(coding) if variants is not None else None
        if body is None:
            try:
                body = await asyncio.to_thread(
                    self.readthrough.cache.variant, entry, coding, partial(compress, coding=coding)
                )
            except (OSError, CacheError):
                raise BodyGone(entry.key) from None
            self.readthrough.cache.keep_variant(entry, coding, body)
        age = [(b"age", str(max(0, int(now - entry.stored_at))).encode())]
        full = rep + [(b"content-length", str(len(body)).encode())] + age + cors
        out.compressed = True
        if method == "HEAD":
            return await send_empty(send, 200, full)
        await send_body(send, 200, full, body)
        out.sent = len(body)
        return None

    async def _send_direct(
        self,
        fill: Fill,
        key: Key,
        method: str,
        headers: dict[bytes, bytes],
        cors: Headers,
        send: Any,
        out: Outcome_,
    ) -> None:
        """An object over ``--cache-max-object-size``: streamed from S3 as it arrives, never
        stored, in bounded memory. A single range is asked of S3 itself."""
        obj = fill.claim()
        try:
            meta = fill.meta
            assert meta is not None
            entry = Entry(fill.key, meta, time.time(), time.time() + self.ttl)
            rep = representation_headers(entry, self.ttl)
            out.mime, out.cache = rep[0][1], "pass"
            decided = self._preconditions(entry, method, headers, rep, cors)
            if decided is not None:
                out.status = decided[0]
                return await send_empty(send, decided[0], decided[1])
            if method == "HEAD":
                length = (b"content-length", str(meta.size).encode())
                return await send_empty(send, 200, [*rep, length, *cors])
            wanted = self._single_range(meta, headers)
            if isinstance(wanted, int):  # 416
                out.status = 416
                unsatisfied = [(b"content-range", f"bytes */{meta.size}".encode())]
                out.sent = await send_text(send, 416, "Range Not Satisfiable", unsatisfied)
                return None
            if obj is None or wanted is not None:
                if obj is not None:
                    obj.close()
                try:
                    # If-Match: the bytes must come from the version the headers describe.
                    obj = await self._direct_get(fill.key, wanted, meta.etag)
                except ObjectChanged:
                    # Replaced in between: the whole current object, with its own headers.
                    obj, wanted = await self._direct_get(fill.key, None, None), None
                    entry = Entry(fill.key, obj.meta, time.time(), time.time() + self.ttl)
                    rep = representation_headers(entry, self.ttl)
            status, extra = 200, [(b"content-length", str(obj.meta.size).encode())]
            if wanted is not None:
                status, extra = 206, range_headers(wanted, meta.size)
            out.origin_bytes += obj.meta.size
            out.status = status
            out.sent = await send_stream(send, status, rep + extra + cors, obj.chunks())
            return None
        except OriginTimeout as exc:
            return await self._fail(send, out, 504, "Gateway Timeout", exc, key)
        except OriginError as exc:
            if isinstance(exc, OriginBodyError):
                raise  # the body broke off after the response started: abort the connection
            return await self._fail(send, out, 502, "Bad Gateway", exc, key)
        finally:
            if obj is not None:
                obj.close()

    def _single_range(
        self, meta: ObjectMeta, headers: dict[bytes, bytes]
    ) -> ByteRange | int | None:
        """The one range to ask S3 for, 416 if unsatisfiable, or ``None`` for the whole body
        (no Range, If-Range failed, or several ranges: those get a 200 when passing through)."""
        header = headers.get(b"range")
        if header is None or not if_range_allows(
            _text(headers.get(b"if-range")), meta.etag, meta.last_modified
        ):
            return None
        decision = parse_range(header.decode("latin-1"), meta.size)
        if decision.kind is RangeKind.UNSATISFIABLE:
            return 416
        if decision.kind is RangeKind.SATISFIABLE and len(decision.ranges) == 1:
            return decision.ranges[0]
        return None

    async def _direct_get(
        self, key: str, wanted: ByteRange | None, if_match: str | None
    ) -> OriginObject:
        byte_range = f"bytes={wanted.start}-{wanted.end}" if wanted is not None else None
        result = await self.readthrough.origin.get(key, byte_range=byte_range, if_match=if_match)
        if not isinstance(result, OriginObject):
            raise OriginError("unexpected 304 from S3")
        return result

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
    if fill.entry is None:  # fetched and verified, but not stored (e.g. a full disk)
        raise OriginBodyError(f"the body of {fill.key!r} could not be kept")
    return fill.entry


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
