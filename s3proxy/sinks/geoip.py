"""GeoIP enrichment: the client's city, country and coordinates, added to a record before the
sinks see it.

The only module that imports ``maxminddb`` and ``websockets``. Two enrichers, one result:

- :class:`MmdbWsEnricher` asks the original's companion service, mmdb-ws, over one persistent
  websocket: it sends the address as a text message and gets the MaxMind DB record back as a
  JSON document (``city``, ``continent``, ``country``, ``location``, ``subdivisions``); an
  address the service cannot resolve comes back unchanged.
- :class:`MmdbFileEnricher` reads a MaxMind DB file (GeoLite2/GeoIP2-City or DB-IP City
  Lite) itself, memory-mapped by ``maxminddb``'s C extension. Measured here with a
  20,000-network City database: 3 µs per lookup, 8 µs with :func:`flatten`; a whole
  :meth:`enrich` takes ~14 µs for a new address (parsing and classifying the address is most
  of that), while a known one is a dict lookup. Well under a thread hop (~60 µs), so it runs
  on the event loop, off the request path. An uncached mmdb-ws lookup is one websocket round
  trip: ~0.3 ms on loopback.

Both store in ``record.location`` the flat map of strings the original proxy stored in
MongoDB, which is mmdb-ws's ``f:`` field listing (see :func:`flatten`)::

    {"city": "Oklahoma City", "continent": "North America", "country": "United States",
     "country_iso_code": "US", "latitude": "35.524800", "longitude": "-97.597100",
     "query_ip_address": "184.105.163.155", "query_language": "en",
     "subdivision": "Oklahoma"}

Only public unicast addresses are looked up: private, loopback, link-local, shared, reserved,
multicast and unparsable ones leave the record without ``location``. Results, including "not
in the database" and "not a public address", are kept by the address as the record gives it
in a bounded LRU cache with a TTL; :meth:`_Enricher.cached` answers from it synchronously, so
:class:`~s3proxy.sinks.base.Sinks` locates most records with a dict lookup per batch. A lookup
that fails or takes
longer than ``timeout`` leaves the record as it is; the websocket is then dropped and not
retried before a backoff delay, so a dead or stalled service costs at most one ``timeout``
per backoff period, never one per record. Nothing here raises into the caller.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import maxminddb
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from s3proxy.exceptions import ConfigError
from s3proxy.record import RequestRecord
from s3proxy.sinks.base import Backoff, Location, Throttled, describe

#: Names are taken in this language, as the original did (mmdb-ws's ``query_language``).
LANGUAGE = "en"
CACHE_SIZE = 10_000
CACHE_TTL = 3600.0
LOOKUP_TIMEOUT = 0.5


def public_address(ip: str) -> str | None:
    """``ip`` in canonical form if it is worth looking up (public unicast), else ``None``.

    An IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) is looked up as the IPv4 address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        return None
    return str(address)


def flatten(data: object, ip: str, language: str = LANGUAGE) -> Location | None:
    """The original's ``location`` from a MaxMind City record: names in ``language``, the
    first (largest) subdivision, coordinates printed with six decimals; keys in sorted
    order, as the original's ``std::map`` wrote them. ``None`` when nothing geographic is
    known about ``ip``."""
    if not isinstance(data, Mapping):
        return None
    fields: Location = {}
    for key in ("city", "continent", "country"):
        _put(fields, key, _name(data.get(key), language))
    country = data.get("country")
    if isinstance(country, Mapping):
        _put(fields, "country_iso_code", country.get("iso_code"))
    location = data.get("location")
    if isinstance(location, Mapping):
        for key in ("latitude", "longitude"):
            value = location.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields[key] = f"{value:.6f}"
    subdivisions = data.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions:
        _put(fields, "subdivision", _name(subdivisions[0], language))
    if not fields:
        return None
    fields["query_ip_address"] = ip
    fields["query_language"] = language
    return dict(sorted(fields.items()))


def _name(node: object, language: str) -> str | None:
    if isinstance(node, Mapping):
        names = node.get("names")
        if isinstance(names, Mapping):
            value = names.get(language)
            return value if isinstance(value, str) else None
    return None


def _put(fields: Location, key: str, value: object) -> None:
    if isinstance(value, str) and value:
        fields[key] = value


class LookupCache:
    """Address -> location (``None``: known to have none), at most ``size`` entries, each
    for ``ttl`` seconds; the least recently used goes first. Not thread-safe (one loop)."""

    def __init__(
        self,
        size: int = CACHE_SIZE,
        ttl: float = CACHE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._entries: collections.OrderedDict[str, tuple[float, Location | None]] = (
            collections.OrderedDict()
        )

    def get(self, address: str) -> tuple[bool, Location | None]:
        """``(True, location)`` on a fresh hit, ``(False, None)`` otherwise."""
        entry = self._entries.get(address)
        if entry is None:
            return False, None
        if entry[0] <= self.clock():
            del self._entries[address]
            return False, None
        self._entries.move_to_end(address)
        return True, entry[1]

    def put(self, address: str, location: Location | None) -> None:
        self._entries[address] = (self.clock() + self.ttl, location)
        self._entries.move_to_end(address)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class Unavailable(Exception):
    """The GeoIP source cannot answer now; the record goes on without a location."""


class _Enricher:
    """What both enrichers share: the address filter, the cache, counters, rate-limited
    warnings. Subclasses implement :meth:`_lookup`, which raises :class:`Unavailable` when
    no answer can be had now (nothing is cached then)."""

    def __init__(self, cache_size: int, ttl: float) -> None:
        self.cache = LookupCache(cache_size, ttl)
        self.lookups = self.hits = self.failures = 0
        self._warnings = Throttled("s3proxy.sinks.geoip")

    def cached(self, ip: str) -> tuple[bool, Location | None]:
        """``(True, location)`` when ``ip``'s answer is known without a lookup: a fresh
        cache entry, or ``None`` for an address that is not worth looking up (also cached,
        so that classifying it, ~1.5 µs, happens once). ``(False, None)`` otherwise."""
        found, location = self.cache.get(ip)
        if found:
            self.hits += 1
            return True, location
        if public_address(ip) is None:
            self.cache.put(ip, None)
            return True, None
        return False, None

    async def enrich(self, record: RequestRecord) -> None:
        """Set ``record.location`` when the client's address has one. Never raises. The
        location is the cached dict itself, shared by every record of that address."""
        found, location = self.cached(record.ip)
        if not found:
            address = public_address(record.ip)
            assert address is not None  # cached() answers for every other address
            self.lookups += 1
            try:
                location = await self._lookup(address)
            except Unavailable:
                return
            except Exception as exc:  # a bug or a broken database must not stop records
                self._failed(exc)
                return
            self.cache.put(record.ip, location)
        record.location = location

    async def _lookup(self, address: str) -> Location | None:
        raise NotImplementedError

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._warnings.warning(
            "geoip_lookup_failed",
            enricher=type(self).__name__,
            failures=self.failures,
            error=describe(exc),
        )

    def stats(self) -> dict[str, int]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "failures": self.failures,
            "cached": len(self.cache),
        }


class MmdbFileEnricher(_Enricher):
    """Looks addresses up in a local MaxMind DB file. Opening it is the only I/O, done here
    so a bad ``--mmdb-file`` fails startup with :class:`~s3proxy.exceptions.ConfigError`."""

    def __init__(self, path: str, *, cache_size: int = CACHE_SIZE, ttl: float = CACHE_TTL) -> None:
        super().__init__(cache_size, ttl)
        self.path = path
        try:
            self._reader = maxminddb.open_database(path)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"--mmdb-file {path}: not a readable MaxMind DB ({exc})") from None

    def lookup(self, address: str) -> Location | None:
        """Synchronous and fast (mmap; a few µs): safe to call on the event loop."""
        try:
            data = self._reader.get(address)
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        return flatten(data, address)

    async def _lookup(self, address: str) -> Location | None:
        return self.lookup(address)

    async def close(self) -> None:
        self._reader.close()


class MmdbWsEnricher(_Enricher):
    """Asks an mmdb-ws service at ``ws://host:port/`` over one persistent websocket.

    Lookups are serialised on that connection (mmdb-ws answers in order, with no request id),
    each bounded by ``timeout`` seconds including a reconnect. After a failure or a timeout
    the connection is dropped (a late answer would otherwise be read as the next one's) and
    no new one is tried for a backoff delay that doubles from 0.5 s up to 30 s."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = LOOKUP_TIMEOUT,
        cache_size: int = CACHE_SIZE,
        ttl: float = CACHE_TTL,
    ) -> None:
        super().__init__(cache_size, ttl)
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        self.uri = f"ws://{bracketed}:{port}/"
        self.timeout = timeout
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()
        self._backoff = Backoff()
        self._retry_at = 0.0

    async def _lookup(self, address: str) -> Location | None:
        async with self._lock:
            if self._ws is None and time.monotonic() < self._retry_at:
                raise Unavailable
            try:
                async with asyncio.timeout(self.timeout):
                    ws = await self._connection()
                    await ws.send(address)
                    reply = await ws.recv()
            except asyncio.CancelledError:
                self._abort()  # its answer may still come, and would be read as the next one's
                raise
            except Exception as exc:  # refused, reset, timed out, handshake or protocol error
                self._failed(exc)
                self._abort()
                self._retry_at = time.monotonic() + self._backoff.next()
                raise Unavailable from exc
            self._backoff.reset()
        return parse_reply(reply, address)

    async def _connection(self) -> ClientConnection:
        if self._ws is not None and self._ws.state is not State.OPEN:
            self._ws = None  # closed by the server while idle: reconnect at no penalty
        if self._ws is None:
            self._ws = await connect(
                self.uri,
                proxy=None,  # an internal service: never through an HTTP(S)_PROXY
                compression=None,  # messages are a few hundred bytes
                open_timeout=None,  # bounded by the lookup's own timeout
                close_timeout=self.timeout,
                max_size=1 << 20,
                user_agent_header="s3proxy",
            )
        return self._ws

    def _abort(self) -> None:
        """Drop the connection at once: no closing handshake with a server that is not
        answering."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.transport.abort()

    async def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()


def parse_reply(reply: str | bytes, address: str) -> Location | None:
    """mmdb-ws's answer: a JSON record, or the address itself when it has none."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = text.strip().strip("\0")
    if not text or text == address:
        return None
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    return flatten(data, address)
