"""The sites one worker serves: one S3 client per server, one :class:`~s3proxy.site.Site`
(and read-through) per site over the one shared cache, and the router that picks the site by
``Host``, all built from a :class:`~s3proxy.sitesfile.Sites` value as one :class:`Served`.

A reload builds the next :class:`Served` and swaps it in whole (:meth:`Hosting.swap`): a
request keeps the site it started on; clients of servers the new file dropped or changed are
closed once the requests and fills that started before the swap are done. Clients of servers
that did not change are kept, with their pools and breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from s3proxy import logging as log
from s3proxy.access.gate import Gate
from s3proxy.access.guard import Guard
from s3proxy.cache import Cache
from s3proxy.config import Config
from s3proxy.exchange import Exchange
from s3proxy.origin import S3Client
from s3proxy.readthrough import ReadThrough
from s3proxy.record import Recorder, Timing, is_trusted, parse_networks
from s3proxy.routing import Router
from s3proxy.site import Site
from s3proxy.sitesfile import HeaderRule, Sites, SiteSpec

#: Seconds between two looks at whether a swapped-out generation is idle.
RETIRE_POLL = 0.5
_logger = log.get_logger("s3proxy.sites")


class Hosted:
    """A site as the router answers it: its handler and its header rules."""

    __slots__ = ("_extra", "rules", "site")

    def __init__(self, site: Site, rules: tuple[HeaderRule, ...]) -> None:
        self.site = site
        self.rules = rules
        #: raw path -> headers set by the rules (memo: matching is pure).
        self._extra: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}

    def headers_for(self, path: str, raw_path: bytes) -> tuple[tuple[bytes, bytes], ...]:
        """What the ``[[headers]]`` rules set on ``path``; later rules win a name."""
        extra = self._extra.get(raw_path)
        if extra is None:
            chosen: dict[bytes, bytes] = {}
            for rule in self.rules:
                if any(fnmatchcase(path, glob) for glob in rule.paths):
                    chosen.update(rule.set)
            extra = tuple(chosen.items())
            if len(self._extra) >= 4096:
                self._extra.clear()
            self._extra[raw_path] = extra
        return extra


@dataclass(slots=True, eq=False)
class Served:
    """One generation of what is served: the sites, their handlers, the servers' clients."""

    sites: Sites
    hosted: dict[str, Hosted]
    clients: dict[str, S3Client]
    router: Router[Hosted]
    version: int
    loaded_at: float = field(default_factory=time.time)
    #: Requests in flight that started on this generation.
    active: int = 0

    def idle(self) -> bool:
        """No request in flight and no fill running on this generation."""
        return self.active == 0 and not any(h.site.readthrough.busy for h in self.hosted.values())


class Hosting:
    """The ASGI endpoint of the sites of a ``--config`` file: route by ``Host`` (and by
    ``X-Forwarded-Host`` from ``--trusted-proxies`` only), then serve with that site."""

    def __init__(self, config: Config, cache: Cache, recorder: Recorder | None = None) -> None:
        self.config = config
        self.cache = cache
        #: Where request records go; set before the first :meth:`swap`.
        self.recorder = recorder
        self.trusted = parse_networks(config.site.trusted_proxies)
        self._timings = False
        self._served: Served | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def served(self) -> Served:
        if self._served is None:
            raise RuntimeError("no sites yet")
        return self._served

    def keep_timings(self) -> None:
        """Time every client's GetObject calls (for Prometheus; see :meth:`take_timings`)."""
        self._timings = True
        for client in self._served.clients.values() if self._served is not None else ():
            client.keep_timings()

    def take_timings(self) -> list[Timing]:
        """Every client's GetObject timings since the last call; none once closed (the sink
        client's last flush at shutdown comes after :meth:`close`)."""
        clients = self._served.clients.values() if self._served is not None else ()
        return [t for client in clients for t in client.take_timings()]

    async def swap(self, sites: Sites) -> Served:
        """Serve ``sites`` from now on; returns the new generation. Requests that started
        before keep theirs; servers' clients no longer used are closed once it is idle."""
        old = self._served
        # Access rules' secrets and files are read first: one missing changes nothing.
        where = sites.source or "command line"
        gates = {
            name: Gate.build(name, spec.access, f"{where}: site {name}")
            for name, spec in sites.sites.items()
            if spec.access
        }
        kept = old.clients if old is not None else {}
        clients: dict[str, S3Client] = {}
        try:
            for name in {site.server for site in sites.sites.values()}:
                server = sites.servers[name]
                client = kept.get(name)
                if client is None or client.config != server:
                    client = await S3Client(server).__aenter__()
                    if self._timings:
                        client.keep_timings()
                clients[name] = client
        except BaseException:
            await _close_all(c for n, c in clients.items() if kept.get(n) is not c)
            raise
        hosted = {
            name: self._host(spec, clients, gates.get(name)) for name, spec in sites.sites.items()
        }
        claims = [(host, hosted[s.name]) for s in sites.sites.values() for host in s.hosts]
        default = next((hosted[s.name] for s in sites.sites.values() if s.default), None)
        version = old.version + 1 if old is not None else 1
        self._served = new = Served(sites, hosted, clients, Router(claims, default), version)
        if old is not None:
            unused = [c for c in old.clients.values() if c not in clients.values()]
            task = asyncio.create_task(_retire(old, unused), name=f"retire:{old.version}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return new

    def _host(self, spec: SiteSpec, clients: dict[str, S3Client], gate: Gate | None) -> Hosted:
        settings = spec.settings
        guard = None
        if gate is not None:
            trusted = parse_networks(settings.trusted_proxies)
            guard = Guard(gate, settings.prefix, settings.index_document, trusted)
        readthrough = ReadThrough(
            self.cache,
            clients[spec.server].bucket(spec.bucket),
            ttl=settings.ttl,
            honor_cache_control=settings.honor_cache_control,
            max_object_size=self.config.cache.cache_max_object_size,
            stale_if_error=settings.stale_if_error,
            stale_while_revalidate=settings.stale_while_revalidate,
            error_ttl=settings.error_ttl,
            namespace=spec.namespace,
        )
        site = Site(settings, readthrough, self.recorder, name=spec.name, guard=guard)
        return Hosted(site, spec.headers)

    async def close(self) -> None:
        """Cancel fills, close every client (at shutdown)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        served, self._served = self._served, None
        if served is not None:
            for hosted in served.hosted.values():
                await hosted.site.readthrough.close()
            await _close_all(served.clients.values())

    def route(self, headers: list[tuple[bytes, bytes]], client: Any) -> Hosted | None:
        """The site of a request with ``headers`` from ``client`` (the scope's), by ``Host``;
        ``None``: no site claims it and none is the default. The fast path routes with it too."""
        host = None
        for name, value in headers:
            if name == b"host":  # HTTP/1.1 clients send it first (RFC 9112 §3.2)
                host = value
                break
        # X-Forwarded-Host is believed only from a --trusted-proxies peer: anyone else could
        # choose another site's objects with it.
        if self.trusted and is_trusted(client[0] if client else None, self.trusted):
            host = _forwarded_host(headers, host)
        return self.served.router.route(host)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        served = self.served
        hosted = self.route(scope["headers"], scope.get("client"))
        if hosted is None:
            return await self._no_site(scope, send)
        if hosted.rules:
            extra = hosted.headers_for(scope["path"], scope["raw_path"])
            if extra:
                send = _setting_headers(send, extra)
        served.active += 1
        try:
            await hosted.site(scope, receive, send)
        finally:
            served.active -= 1

    async def _no_site(self, scope: dict[str, Any], send: Any) -> None:
        """404 for a Host no site claims, when no site is the default; with its request line
        and x-request-id like any answer (:class:`~s3proxy.exchange.Exchange`)."""
        started = time.perf_counter()
        x = Exchange.begin(scope, send, self.trusted)
        await x.respond_text(404, "No site is served at this host name")
        elapsed = time.perf_counter() - started
        x.mime = b"text/plain"
        x.account(elapsed, self.trusted, recorder=self.recorder)


def _forwarded_host(headers: list[tuple[bytes, bytes]], host: bytes | None) -> bytes | None:
    """The first X-Forwarded-Host value, else ``host``."""
    for name, value in headers:
        if name == b"x-forwarded-host":
            return value.split(b",", 1)[0].strip()
    return host


def _setting_headers(send: Any, extra: tuple[tuple[bytes, bytes], ...]) -> Any:
    """``send`` with ``extra`` set on the response's head, replacing the same names."""
    names = {name for name, _ in extra}

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(n, v) for n, v in message["headers"] if n not in names]
            setting = extra
            if any(n == b"cache-control" and b"private" in v for n, v in message["headers"]):
                # An access rule made the answer private: no header rule makes it shareable.
                kept = [(n, v) for n, v in message["headers"] if n == b"cache-control"]
                setting = (*(p for p in extra if p[0] != b"cache-control"), *kept)
            message = {**message, "headers": [*headers, *setting]}
        await send(message)

    return sending


async def _retire(old: Served, clients: list[S3Client]) -> None:
    """Close ``clients`` once ``old`` is idle (its requests and fills are done)."""
    try:
        # A poll, off the hit path: requests and fills end in many places, and a wake-up
        # check in each would cost every request for the rare reload.
        while not old.idle():  # noqa: ASYNC110
            await asyncio.sleep(RETIRE_POLL)
    finally:
        await _close_all(clients)
        _logger.info("sites_retired", version=old.version, closed_clients=len(clients))


async def _close_all(clients: Any) -> None:
    for client in list(clients):
        with contextlib.suppress(Exception):
            await client.close()
