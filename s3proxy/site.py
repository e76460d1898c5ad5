"""The GET/HEAD endpoint, as a raw ASGI app (the hit path; see :mod:`s3proxy.responses` for
why it bypasses starlette's Request/Response).

request -> key (:mod:`keys`) -> cache or single fill (:mod:`readthrough`) -> preconditions and
range (:mod:`conditional`) -> render (:mod:`responses`), the state of each request in an
:class:`~s3proxy.exchange.Exchange`. Bodies the cache does not store (too large, or the cache
cannot write: a full disk) go to :mod:`passthrough`.
Errors become responses here, in one place, before the response starts; after it has started
they abort the connection.
"""

from __future__ import annotations

import asyncio
import collections
import time
from functools import partial
from typing import Any

from s3proxy.access.guard import Guard
from s3proxy.access.signed import strip
from s3proxy.cache import Entry
from s3proxy.config import SiteConfig
from s3proxy.cors import ALLOW, Cors, options
from s3proxy.encoding import compress, compressible, negotiate
from s3proxy.exceptions import BodyGone, CacheError, S3ProxyError, http_status
from s3proxy.exchange import Exchange
from s3proxy.fill import Fill
from s3proxy.folders import Folders
from s3proxy.keys import (
    Key,
    Rejected,
    folder_index,
    has_extension,
    path_to_key,
    trailing_slash_location,
)
from s3proxy.outcome import Filling, Found, Hit, Missing, Outcome, PassThrough, Revalidated, Stale
from s3proxy.passthrough import send_direct
from s3proxy.plan import Body, Plan, Ranges, Representation, plan
from s3proxy.readthrough import ReadThrough
from s3proxy.record import Recorder, parse_networks
from s3proxy.responses import (
    INLINE_READ_MAX,
    arriving,
    body_chunks,
    content_type,
    multipart,
    open_checked,
    representation,
    vary_encoding,
)
from s3proxy.website import Redirect, Website, object_redirect

#: Paths whose key mapping is remembered; the memo is emptied when full (random paths from
#: a scanner must not grow memory).
KEY_MEMO_SIZE = 16_384


class Site:
    """Serve objects of the configured bucket (and prefix) for GET and HEAD."""

    def __init__(
        self,
        config: SiteConfig,
        readthrough: ReadThrough,
        recorder: Recorder | None = None,
        name: str = "",
        guard: Guard | None = None,
    ) -> None:
        self.config = config
        #: The site's name in a sites file (``default`` without one), in logs and records.
        self.name = name
        self.guard = guard  # the site's access rules (None: everything is public)
        self.readthrough = readthrough
        self.recorder = recorder
        self.trusted = parse_networks(config.trusted_proxies)
        #: Requests by cache outcome (hit, miss, ...) in this worker.
        self.counts: collections.Counter[str] = collections.Counter()
        self.cors = Cors.of(config.cors, config.allowed_origins)  # None: no CORS
        #: What every answer varies on besides Accept-Encoding (``Origin`` with CORS).
        self.vary = self.cors.vary if self.cors is not None else b""
        self._vary_encoding = vary_encoding(self.vary)
        self.ttl = config.ttl
        self.compress = config.compress
        self.website = Website.of(config.redirect_all, config.routing_rules)
        self.folders = Folders(config, readthrough, guard) if config.listing else None
        self._codings: dict[bytes, str | None] = {}
        # raw path -> Key (or its redirect): mapping is pure, a memo hit costs 0.1 µs, not ~3.
        self._keys: dict[bytes, Key | Redirect] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        x = Exchange.begin(scope, send, self.trusted)
        try:
            await self._dispatch(x)
        except Exception as exc:
            if x.started:
                raise  # the body broke off: the server aborts the connection
            await x.crashed(exc)  # a bug: our 500, with the request's id and CORS headers
        except BaseException:
            if not x.started:
                x.status = 500  # what the server answers for us
            raise
        finally:
            self._account(x, time.perf_counter() - started)

    def _account(self, x: Exchange, elapsed: float) -> None:
        """The request's log line and metrics record."""
        self.counts[x.cache] += 1
        x.account(elapsed, self.trusted, self.name, self.recorder)

    async def _dispatch(self, x: Exchange) -> None:
        if x.method == "OPTIONS":
            return await options(x, self.cors)
        cors = self.cors
        if cors is not None:  # one dict lookup: the answer to this Origin, made once
            origin = x.headers.get(b"origin")
            found = cors.answers.get(origin)
            x.common += found if found is not None else cors.learn(origin)
            x.vary = cors.vary
        if x.method not in ("GET", "HEAD"):
            return await x.respond_text(405, "Method Not Allowed", [(b"allow", ALLOW)])
        guard, query, raw_path = self.guard, x.scope["query_string"], x.scope["raw_path"]
        if guard is not None and raw_path.startswith(b"/_proxy/auth/"):
            return await guard.page(x)
        # A signed link's parameters are not the site's query.
        if self.config.reject_query_strings and query and (guard is None or strip(query)):
            return await x.respond_text(400, "Query strings are not accepted")
        key: Key | Rejected | Redirect | None = self._keys.get(raw_path)
        if key is None:
            key = self.website.before(raw_path) or path_to_key(
                raw_path, prefix=self.config.prefix, index_document=self.config.index_document
            )
            if not isinstance(key, Rejected):
                if len(self._keys) >= KEY_MEMO_SIZE:
                    self._keys.clear()
                self._keys[raw_path] = key
        if not isinstance(key, Key):
            if isinstance(key, Redirect):
                return await self._redirect(x, key.location_in(x.scope), key.code)
            return await x.respond_text(key.status, key.reason)
        x.now = time.time()
        if guard is not None:  # checked before the cache is read
            rule = guard.rule(key.key)
            if rule is not None and not await guard.admit(x, key, rule):
                return None
        return await self._serve(x, key)

    async def _serve(self, x: Exchange, key: Key, retried: bool = False) -> None:
        """Answer ``key``; the one place where our errors become responses (by the table in
        :mod:`s3proxy.exceptions`), as long as the response has not started."""
        try:
            return await self._answer(x, key)
        except S3ProxyError as exc:
            if x.started:
                raise  # the body broke off: the server aborts the connection
            if isinstance(exc, BodyGone) and not retried:
                # The cached body vanished before we started answering: forget it, ask again.
                self.readthrough.cache.discard(exc.key)
                return await self._serve(x, key, retried=True)
            return await x.fail(*http_status(exc), exc, key.key)

    async def _answer(self, x: Exchange, key: Key) -> None:
        outcome = await self._read(key.key, x)
        guard = self.guard
        if guard is not None and x.presign_over is not None:  # a rule's presign_over
            if await guard.offload(x, self.readthrough.origin, outcome, key.key):
                return None
        if type(outcome) is Hit:  # the hit path, unless a zero-byte folder marker or a redirect
            entry = outcome.entry
            meta = entry.meta
            assert meta is not None
            if (meta.size or key.index) and meta.website_redirect_location is None:
                return await self._send_entry(x, entry)
        status = 200
        if isinstance(outcome, Missing):
            if key.index and self.folders is not None:  # a folder's listing, if it has one
                if (listing := await self.folders.entry(x, key)) is not None:
                    return await self._send_entry(x, listing)
            fallback = await self._fallback(key, x)
            if isinstance(fallback, bytes):
                return await self._redirect(x, fallback)
            if to := self.website.after(x.scope["raw_path"], fallback[1] if fallback else 404):
                return await self._redirect(x, to.location_in(x.scope), to.code)
            if fallback is None:
                return await x.respond_text(404, "Not Found")
            outcome, status = fallback
        elif (moved := object_redirect(outcome.meta.website_redirect_location or "")) is not None:
            return await self._redirect(x, moved)
        elif outcome.meta.size == 0 and not key.index:
            # A zero-byte "folder marker" must not hide its folder's index.
            redirect_to = await self._folder_redirect(key, x)
            if redirect_to is not None:
                return await self._redirect(x, redirect_to)
        if status != 200:
            return await self._send_error_document(x, outcome, status)
        match outcome:
            case Hit(entry) | Revalidated(entry) | Stale(entry):
                return await self._send_entry(x, entry)
            case PassThrough(fill):
                return await send_direct(x, fill, self.readthrough)
            case Filling(fill):
                stored = fill.entry
                if stored is None and (b"range" in x.headers or self._wants_variant(fill, x)):
                    # A range or a compressed variant needs the whole body stored.
                    stored = await fill.stored()
                    if stored is None:  # it will not be: S3 streams it
                        return await send_direct(x, fill, self.readthrough)
                if stored is None:
                    return await self._send_fill(x, fill)
                return await self._send_entry(x, stored)

    def _may_read(self, x: Exchange, key: str) -> bool:
        return self.guard is None or self.guard.may_read(x, key)

    async def _redirect(self, x: Exchange, location: bytes, status: int = 301) -> None:
        return await x.respond_empty(status, [(b"location", location), (b"content-length", b"0")])

    async def _read(self, key: str, x: Exchange | None) -> Outcome:
        """What the read-through answers for ``key`` (raises the origin's errors), noted in
        ``x``'s account (``None``: a probe that counts for nothing)."""
        readthrough = self.readthrough
        if x is None:
            return await readthrough.read(key, time.time())
        # lookup() first, without a coroutine of its own: the hit path.
        outcome = readthrough.lookup(key, x.now) or await readthrough.fetch(key)
        x.note(outcome)
        return outcome

    async def _fallback(self, key: Key, x: Exchange) -> bytes | tuple[Found, int] | None:
        """For a missing key, in order: a redirect to the folder (``/docs`` -> ``/docs/``),
        the SPA's index (200), the error document (404); ``None`` for a plain 404."""
        redirect_to = await self._folder_redirect(key, x)
        if redirect_to is not None:
            return redirect_to
        config = self.config
        spa_index = config.prefix + config.index_document
        if config.spa and not has_extension(key.key) and self._may_read(x, spa_index):
            index = await self._read(spa_index, x)
            if not isinstance(index, Missing):
                return index, 200
        error_page = config.prefix + (config.error_document or "")
        if config.error_document is not None and self._may_read(x, error_page):
            page = await self._read(error_page, x)
            if not isinstance(page, Missing):
                return page, 404
        return None

    async def _folder_redirect(self, key: Key, x: Exchange) -> bytes | None:
        # Only extension-less names look like folders: a 404 for "style.css" should not cost
        # a second S3 request for "style.css/index.html".
        if not self.config.redirect_folders or key.index or has_extension(key.key):
            return None
        index_key = folder_index(key.key, self.config.index_document)
        if index_key is None or not self._may_read(x, index_key):
            return None
        if isinstance(await self._read(index_key, None), Missing):
            return None
        return trailing_slash_location(x.scope["raw_path"], x.scope["query_string"])

    async def _send_error_document(self, x: Exchange, page: Found, status: int) -> None:
        """The error page's body with ``status``: no validators, no ranges (it describes the
        error, not the object asked for); a page still arriving or not stored is streamed as
        it comes from S3."""
        meta = page.meta
        x.mime = content_type(page.key, meta).encode("latin-1")
        headers = [
            (b"content-type", x.mime),
            (b"content-length", str(meta.size).encode()),
            (b"cache-control", b"no-cache"),
        ]
        if meta.content_encoding:  # the bytes sent are the page's as stored (a .gz page)
            x.encoding = meta.content_encoding.encode("latin-1")
            headers.append((b"content-encoding", x.encoding))
        if x.method == "HEAD":
            return await x.render(Plan(status, headers, Body.NONE))
        whole = Plan(status, headers, Body.WHOLE)
        if isinstance(page, Filling | PassThrough):
            entry = await page.fill.stored()
            if entry is None:
                return await x.render(whole, page.fill.body())
        else:
            entry = page.entry
        source = await self._open_body(entry)
        return await x.render(whole, body_chunks(source, 0, meta.size))

    async def _send_fill(self, x: Exchange, fill: Fill) -> None:
        """A body still arriving from S3, streamed as it comes (whole, identity)."""
        meta = fill.meta
        assert meta is not None
        rep = arriving(
            fill.key, meta, fill.expires_at, self.ttl, self.compress, Ranges.NONE, self.vary
        )
        x.mime, x.encoding = rep.mime, rep.encoding
        p = plan(x.method, x.headers, rep, x.now)
        return await x.render(p, fill.body() if p.body is Body.WHOLE else None)

    async def _send_entry(self, x: Exchange, entry: Entry) -> None:
        """A stored copy: a compressed variant, or the plan's part of the identity body."""
        rep = representation(entry, self.ttl, self.compress, None, self.vary)
        x.mime, x.encoding = rep.mime, rep.encoding
        headers = x.headers
        accept = headers.get(b"accept-encoding")
        if accept is not None and b"range" not in headers and self._vary_encoding in rep.headers:
            coding = self._negotiate(accept)
            if coding is not None:
                return await self._send_variant(x, entry, coding, rep)
        p = plan(x.method, headers, rep, x.now)
        if p.body is Body.NONE or p.body is Body.MESSAGE:
            return await x.render(p)
        source = entry.body if entry.body is not None else await self._open_body(entry)
        meta = entry.meta
        assert meta is not None
        if p.body is Body.WHOLE:
            if type(source) is bytes:
                return await x.render(p, source)
            return await x.render(p, body_chunks(source, 0, meta.size))
        if len(p.ranges) == 1:
            (r,) = p.ranges
            return await x.render(p, body_chunks(source, r.start, r.length))
        extra, chunks = multipart(source, p.ranges, meta.size, content_type(entry.key, meta))
        return await x.render(p, chunks, extra)

    def _wants_variant(self, fill: Fill, x: Exchange) -> bool:
        """Whether a body still arriving will be sent compressed (so wait for all of it)."""
        meta, headers = fill.meta, x.headers
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
        self, x: Exchange, entry: Entry, coding: str, identity: Representation
    ) -> None:
        """The compressed variant: its own ETag for preconditions, made once and cached. The
        client may hold the identity body of the same version (its first answer may have
        been that): still valid, so a 304 (``also_valid``)."""
        rep = representation(entry, self.ttl, True, coding, self.vary)
        x.encoding = rep.encoding
        p = plan(x.method, x.headers, rep, x.now, also_valid=identity)
        if p.status != 200:
            return await x.render(p)
        variants = entry.variants
        body = variants.get(coding) if variants is not None else None
        if body is None:
            cache = self.readthrough.cache
            try:
                make = partial(compress, coding=coding)
                body = await asyncio.to_thread(cache.variant, entry, coding, make)
            except (OSError, CacheError):
                raise BodyGone(entry.key) from None
            cache.keep_variant(entry, coding, body)
        x.compressed = True
        return await x.render(p, body, [(b"content-length", str(len(body)).encode())])

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
