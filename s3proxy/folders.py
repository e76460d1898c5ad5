"""Folder listings (a site's ``listing = true``): a request for a folder (a path ending in
``/``) whose index document is missing gets the folder's objects and subfolders, rendered by
:mod:`s3proxy.listing`.

A listing is a stored answer like any object: both its renderings are kept in the cache for
the site's TTL (so a repeat costs no S3 call, every worker and restart shares it, the size
bound evicts it, and a clear or a purge of its prefix drops it) and served as stored objects
are (HEAD, validators, compressed variants). On a miss, one request per folder at a time
makes it: ListObjectsV2 with ``Delimiter='/'`` through the site's origin (its connection
pool, deadline, retries and breaker), page after page up to
:data:`~s3proxy.listing.MAX_ENTRIES`; nothing is stored unless every page arrived, and S3's
failure is raised as the origin's error (502/504 by the site), unless an expired listing
may stand in (``stale_if_error``, as for objects). A folder with nothing in it is
a 404, remembered for the TTL as a missing key is (S3 has no empty folders), except the
site's root, which lists as empty.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable

from s3proxy import listing as pages_of
from s3proxy import logging as log
from s3proxy.access.guard import Guard
from s3proxy.cache import Entry
from s3proxy.config import SiteConfig
from s3proxy.exceptions import CacheError, ObjectNotFound, OriginError
from s3proxy.exchange import Exchange
from s3proxy.keys import Key
from s3proxy.listing import (
    HEADERS,
    HTML_TYPE,
    JSON_TYPE,
    FolderPage,
    Listing,
    build,
    cache_keys,
    prefers_json,
)
from s3proxy.meta import ObjectMeta
from s3proxy.readthrough import ReadThrough

#: The two renderings of a listing, in :func:`~s3proxy.listing.cache_keys` order, or
#: ``None`` for an empty folder (a 404).
Made = tuple[Entry, Entry] | None

_logger = log.get_logger("s3proxy.site")


class Folders:
    """One site's folder listings, read through its cache and origin."""

    def __init__(self, config: SiteConfig, readthrough: ReadThrough, guard: Guard | None) -> None:
        self.prefix = config.prefix
        self.index_document = config.index_document
        self.ttl = config.ttl
        self.stale_if_error = config.stale_if_error
        self.readthrough = readthrough
        self.guard = guard
        #: Listings being made, by folder: later requests wait for the first one's.
        self._making: dict[str, asyncio.Future[Made]] = {}

    async def entry(self, x: Exchange, key: Key) -> Entry | None:
        """The stored listing that answers ``x``, a request for the folder ``key`` names
        (its index document is missing): HTML, or JSON when Accept prefers it. ``None``
        (answer as the site would without listings) for an empty folder other than the
        root, or a bucket S3 will not list. Raises the origin's and the cache's errors."""
        folder = key.key[: len(key.key) - len(self.index_document)]
        wanted = 1 if prefers_json(_accept(x.scope["headers"])) else 0
        readthrough = self.readthrough
        stored = readthrough.cache.get(readthrough.namespace + cache_keys(folder)[wanted])
        if stored is not None and stored.fresh(x.now):
            x.cache = "hit"
            found: Entry | None = stored if stored.meta is not None else None
        else:
            x.cache = "miss"
            try:
                made = await self._made(folder)
                found = made[wanted] if made is not None else None
            except OriginError:  # stale-if-error (RFC 5861 §4), as for objects
                if stored is None or stored.meta is None or not self._may_stand_in(stored):
                    raise
                x.cache, found = "stale", stored
        if found is not None and HEADERS[0] not in x.common:  # once, if asked again
            x.common += HEADERS
        return found

    def _may_stand_in(self, stored: Entry) -> bool:
        """Whether the expired listing ``stored`` may answer while S3 fails."""
        return time.time() - stored.expires_at <= self.stale_if_error

    async def _made(self, folder: str) -> Made:
        """The listing of ``folder``, made by this request or by the one already making it."""
        making = self._making.get(folder)
        if making is not None:
            return await asyncio.shield(making)
        making = self._making[folder] = asyncio.get_running_loop().create_future()
        try:
            made = await self._make(folder)
        except asyncio.CancelledError:
            making.cancel()
            raise
        except BaseException as exc:
            making.set_exception(exc)
            making.exception()  # retrieved: no request may be waiting
            raise
        finally:
            del self._making[folder]
        making.set_result(made)
        return made

    async def _make(self, folder: str) -> Made:
        """List ``folder`` from S3 and store both renderings (see the module docstring)."""
        readthrough = self.readthrough
        cache, generation = readthrough.cache, readthrough.cache.generation
        try:
            pages, truncated = await self._pages(folder)
        except ObjectNotFound:  # no such bucket, or no s3:ListBucket for our credentials
            _logger.warning("listing_refused", folder=folder, reason="S3 answered 403/404")
            return None
        path = "/" + folder[len(self.prefix) :]
        listing = build(path, pages, self._shown(folder), truncated)
        now = time.time()
        keys = [readthrough.namespace + k for k in cache_keys(folder)]
        if listing.empty and folder != self.prefix:
            if cache.generation == generation:  # else a purge came meanwhile: remember none
                for name in keys:
                    cache.put_missing(name, now, now + self.ttl)
            return None
        bodies = await asyncio.to_thread(_render, listing)
        size = sum(len(body) for body in bodies)
        if cache.over_budget(size):  # --cache-max-size holds at each commit, as for objects
            await asyncio.to_thread(cache.make_room, size)
        html, json = (
            self._store(name, body, kind, now, generation)
            for name, body, kind in zip(keys, bodies, (HTML_TYPE, JSON_TYPE), strict=True)
        )
        return html, json

    async def _pages(self, folder: str) -> tuple[list[FolderPage], bool]:
        """ListObjectsV2 pages of ``folder``, followed until the last or until they hold
        :data:`~s3proxy.listing.MAX_ENTRIES`; and whether S3 has more."""
        origin = self.readthrough.origin
        size, most = pages_of.PAGE_SIZE, pages_of.MAX_ENTRIES  # read here: tests lower them
        pages: list[FolderPage] = []
        token: str | None = None
        while True:
            page = await origin.client.list_folder(origin.bucket, folder, token, size)
            pages.append(page)
            token = page.next_token
            if token is None or sum(len(p.folders) + len(p.files) for p in pages) >= most:
                return pages, token is not None

    def _shown(self, folder: str) -> Callable[[str], bool]:
        """Whether a listing of ``folder`` shows an entry: what the access rule that admits
        the folder also admits (public entries, and those of the same rule), so that one
        stored listing serves every reader who may see it. A subfolder is judged by its
        index document, as a request for it would be."""
        guard, index = self.guard, self.index_document
        if guard is None:
            return _everything
        own = guard.rule(folder + index)

        def shown(name: str) -> bool:
            rule = guard.rule(folder + name + index if name.endswith("/") else folder + name)
            return rule is None or rule.public or rule is own

        return shown

    def _store(self, key: str, body: bytes, kind: str, now: float, generation: int) -> Entry:
        """Store ``body`` under ``key`` for the TTL; the entry to serve, stored or not (a
        cache that cannot store it now, or a purge since ``generation``, keeps nothing)."""
        digest = hashlib.sha256(body).hexdigest()[:32]
        meta = ObjectMeta(len(body), etag=f'"{digest}"', content_type=kind)
        cache, expires_at = self.readthrough.cache, now + self.ttl
        try:
            writer = cache.begin_write(key, len(body))
        except CacheError:
            return Entry(key, meta, now, expires_at, body=body)
        try:
            writer.write(body)
            return cache.commit(writer, key, meta, now, expires_at, generation, body)
        except CacheError:
            writer.abort()
            return Entry(key, meta, now, expires_at, body=body)


def _everything(name: str) -> bool:
    return True


def _render(listing: Listing) -> tuple[bytes, bytes]:
    """Both renderings, in :func:`~s3proxy.listing.cache_keys` order (CPU: off the loop)."""
    return listing.to_html(), listing.to_json()


def _accept(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The request's ``Accept`` (read here, not by every request: only listings need it)."""
    values = [value for name, value in headers if name == b"accept"]
    return b", ".join(values) if values else None
