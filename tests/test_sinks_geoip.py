"""GeoIP enrichment: both enrichers, through :class:`~s3proxy.sinks.base.Sinks` to MongoDB.

Neither mmdb-ws nor MongoDB nor a GeoLite2 database can be installed or fetched here, so the
enrichers run against a real MaxMind DB file built in the test (:func:`tests.geo_servers.
build_mmdb`), an mmdb-ws-compatible websocket server answering from it
(:class:`tests.geo_servers.MmdbWsServer`), and the wire-protocol MongoDB of
:mod:`tests.mongo_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from s3proxy.exceptions import ConfigError
from s3proxy.record import RequestRecord
from s3proxy.sinks import Enricher, Sinks
from s3proxy.sinks.geoip import (
    LookupCache,
    MmdbFileEnricher,
    MmdbWsEnricher,
    flatten,
    parse_reply,
    public_address,
)
from s3proxy.sinks.mongo import MongoSink
from tests.geo_servers import OKLAHOMA_LOCATION, MmdbWsServer, build_mmdb
from tests.mongo_server import MongoServer
from tests.servers import ProxyServer, free_port
from tests.sink_servers import ListSink, eventually, make_record, started, wait_for

OKLAHOMA, LONDON, TOKYO, UNKNOWN = "184.105.163.155", "81.2.69.142", "2001:218::7", "8.8.8.8"


@pytest.fixture(scope="session")
def mmdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_mmdb(tmp_path_factory.mktemp("geoip") / "city.mmdb")


@pytest.fixture
def mmdb_ws(mmdb_path: Path) -> Iterator[MmdbWsServer]:
    with MmdbWsServer(mmdb_path).running() as server:
        yield server


@pytest.fixture
def mongo() -> Iterator[MongoServer]:
    with MongoServer().running() as server:
        yield server


async def through(enricher: Enricher, ips: list[str], limit: float = 10.0) -> list[RequestRecord]:
    """Send one record per address through ``Sinks`` with ``enricher``; what came out, in
    the order sent (records waiting for a lookup come out after those that did not)."""
    sink = ListSink()
    async with started(Sinks([sink], enricher=enricher)) as sinks:
        for n, ip in enumerate(ips):
            sinks.emit(make_record(ip=ip, size=n))
        await eventually(lambda: len(sink.records) == len(ips), limit=limit)
    return sorted(sink.records, key=lambda r: r.size)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        pytest.param("184.105.163.155", "184.105.163.155", id="public-v4"),
        pytest.param("2001:218:0:0::7", "2001:218::7", id="public-v6-canonical"),
        pytest.param("::ffff:81.2.69.142", "81.2.69.142", id="v4-mapped"),
        pytest.param("10.1.2.3", None, id="private"),
        pytest.param("192.168.0.1", None, id="private-192"),
        pytest.param("127.0.0.1", None, id="loopback"),
        pytest.param("::1", None, id="loopback-v6"),
        pytest.param("169.254.1.1", None, id="link-local"),
        pytest.param("fe80::1%eth0", None, id="link-local-v6-zone"),
        pytest.param("100.64.0.1", None, id="shared-cgnat"),
        pytest.param("224.0.0.1", None, id="multicast"),
        pytest.param("0.0.0.0", None, id="unspecified"),
        pytest.param("-", None, id="no-address"),
        pytest.param("not an ip", None, id="invalid"),
    ],
)
def test_only_public_unicast_addresses_are_looked_up(ip: str, expected: str | None) -> None:
    """Private, loopback, special and invalid addresses are not sent for lookup."""
    assert public_address(ip) == expected


def test_flatten_gives_the_fields_mmdb_ws_lists(mmdb_ws: MmdbWsServer) -> None:
    """The location is mmdb-ws's ``f:`` listing, which is what the original stored."""
    assert mmdb_ws.reader is not None
    listing = mmdb_ws.answer(f"f:{OKLAHOMA}")
    fields = dict(line.split(" : ", 1) for line in listing.splitlines())
    location = flatten(mmdb_ws.reader.get(OKLAHOMA), OKLAHOMA)
    assert location == fields == OKLAHOMA_LOCATION
    assert list(location) == sorted(location)


def test_replies_without_a_record_give_no_location() -> None:
    """mmdb-ws echoes an address it cannot resolve; that and junk give no location."""
    assert parse_reply(UNKNOWN, UNKNOWN) is None
    assert parse_reply("not json", UNKNOWN) is None
    assert parse_reply("{}", UNKNOWN) is None
    assert parse_reply(b'{"country": {"iso_code": "FR"}}\x00', UNKNOWN) == {
        "country_iso_code": "FR",
        "query_ip_address": UNKNOWN,
        "query_language": "en",
    }


def test_cache_is_a_bounded_lru_with_a_ttl() -> None:
    """Entries expire after the TTL, and the least recently used goes first when full."""
    now = [0.0]
    cache = LookupCache(size=2, ttl=10, clock=lambda: now[0])
    cache.put("a", {"city": "A"})
    cache.put("b", None)
    assert cache.get("a") == (True, {"city": "A"})
    cache.put("c", None)  # evicts b, the least recently used
    assert cache.get("b") == (False, None)
    assert cache.get("c") == (True, None)
    now[0] = 10.0
    assert cache.get("a") == (False, None)
    assert len(cache) == 1


def test_ws_enricher_locates_public_addresses(mmdb_ws: MmdbWsServer) -> None:
    """Public addresses get the original's location; private and unknown ones get none;
    each address is asked once."""
    enricher = MmdbWsEnricher("127.0.0.1", mmdb_ws.port)
    ips = [OKLAHOMA, "10.0.0.8", LONDON, UNKNOWN, TOKYO, OKLAHOMA, "127.0.0.1", UNKNOWN]
    out = asyncio.run(through(enricher, ips))
    assert [r.ip for r in out] == ips
    assert out[0].location == OKLAHOMA_LOCATION
    assert out[2].location is not None and out[2].location["city"] == "London"
    assert out[4].location is not None and out[4].location["country_iso_code"] == "JP"
    assert out[5].location == OKLAHOMA_LOCATION
    assert [r.location for r in out if r.ip not in (OKLAHOMA, LONDON, TOKYO)] == [None] * 4
    assert mmdb_ws.queries == [OKLAHOMA, LONDON, UNKNOWN, TOKYO]
    # Private and loopback addresses are cached too (as having no location).
    assert enricher.stats() == {"lookups": 4, "hits": 2, "failures": 0, "cached": 6}


def test_file_enricher_gives_the_same_locations(mmdb_path: Path, mmdb_ws: MmdbWsServer) -> None:
    """Reading the file directly gives exactly what mmdb-ws gives."""
    ips = [OKLAHOMA, LONDON, TOKYO, UNKNOWN, "192.168.1.1"]
    by_file = asyncio.run(through(MmdbFileEnricher(str(mmdb_path)), ips))
    by_ws = asyncio.run(through(MmdbWsEnricher("127.0.0.1", mmdb_ws.port), ips))
    assert [r.location for r in by_file] == [r.location for r in by_ws]
    assert by_file[0].location == OKLAHOMA_LOCATION


@pytest.mark.parametrize("content", [None, b"not a maxmind database"], ids=["missing", "junk"])
def test_a_bad_database_file_fails_startup(tmp_path: Path, content: bytes | None) -> None:
    """A missing or unreadable --mmdb-file is a configuration error, raised at once."""
    path = tmp_path / "city.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match="--mmdb-file"):
        MmdbFileEnricher(str(path))


def test_records_reach_mongo_with_location(mmdb_ws: MmdbWsServer, mongo: MongoServer) -> None:
    """Through Sinks with the mmdb-ws enricher, a public client's document carries the
    original's location sub-document; a private client's has none."""

    async def scenario() -> None:
        sink = MongoSink(mongo.uri, "metrics", "request")
        enricher = MmdbWsEnricher("127.0.0.1", mmdb_ws.port)
        async with started(Sinks([sink], enricher=enricher)) as sinks:
            for ip in (OKLAHOMA, "172.16.5.4", LONDON):
                sinks.emit(make_record(ip=ip))
            await eventually(lambda: sinks.runners[0].sent == 3)

    asyncio.run(scenario())
    docs = {d["ipaddress"]: d for d in mongo.docs("metrics.request")}
    assert docs[OKLAHOMA]["location"] == OKLAHOMA_LOCATION
    assert "location" not in docs["172.16.5.4"]
    assert docs[LONDON]["location"]["country_iso_code"] == "GB"


def test_a_dead_mmdb_ws_does_not_hold_records() -> None:
    """With nothing listening, records pass at once without location; the service is
    retried after a backoff, not once per record."""
    enricher = MmdbWsEnricher("127.0.0.1", free_port())
    ips = [f"184.105.163.{i}" for i in range(200)]
    out = asyncio.run(through(enricher, ips, limit=5))
    assert all(r.location is None for r in out)
    assert 1 <= enricher.failures <= 3


def test_a_hung_mmdb_ws_costs_one_timeout(mmdb_ws: MmdbWsServer) -> None:
    """A service that accepts but never answers delays records by one lookup timeout, then
    is left alone for the backoff delay."""
    mmdb_ws.stall = True
    enricher = MmdbWsEnricher("127.0.0.1", mmdb_ws.port, timeout=0.2)
    ips = [f"81.2.69.{i}" for i in range(100)]
    out = asyncio.run(through(enricher, ips, limit=5))
    # One query and one failure, not 100 timeouts (20 s): what is counted, not a clock.
    assert all(r.location is None for r in out)
    # At most the first address reached the service before its timeout (under load the
    # timeout may fire before the query is read), and it failed once: not 100 times.
    assert mmdb_ws.queries in ([], ["81.2.69.0"])
    assert enricher.failures == 1


def test_a_cancelled_lookup_does_not_answer_the_next_one(mmdb_ws: MmdbWsServer) -> None:
    """mmdb-ws answers in order with no request id: after a lookup is cancelled, its late
    answer is never taken for the next address's."""
    mmdb_ws.delay = 0.3

    async def scenario() -> RequestRecord:
        enricher = MmdbWsEnricher("127.0.0.1", mmdb_ws.port, timeout=2)
        lookup = asyncio.create_task(enricher.enrich(make_record(ip=OKLAHOMA)))
        await eventually(lambda: mmdb_ws.queries == [OKLAHOMA])
        lookup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lookup
        mmdb_ws.delay = 0
        london = make_record(ip=LONDON)
        await enricher.enrich(london)
        await enricher.close()
        return london

    london = asyncio.run(scenario())
    assert london.location is not None and london.location["city"] == "London"


def test_the_ws_enricher_reconnects_after_a_restart(mmdb_ws: MmdbWsServer) -> None:
    """After mmdb-ws restarts, lookups succeed again once the backoff delay has passed."""

    async def scenario() -> list[RequestRecord]:
        enricher = MmdbWsEnricher("127.0.0.1", mmdb_ws.port)
        first, down, up = make_record(ip=OKLAHOMA), make_record(ip=LONDON), make_record(ip=LONDON)
        await enricher.enrich(first)
        await asyncio.to_thread(mmdb_ws.stop)
        await enricher.enrich(down)
        await asyncio.to_thread(mmdb_ws.start)
        await asyncio.sleep(0.6)  # the first backoff delay is 0.5 s
        await enricher.enrich(up)
        await enricher.close()
        return [first, down, up]

    first, down, up = asyncio.run(scenario())
    assert first.location == OKLAHOMA_LOCATION
    assert down.location is None
    assert up.location is not None and up.location["city"] == "London"


def test_end_to_end_requests_are_stored_with_location(
    mmdb_ws: MmdbWsServer,
    mongo: MongoServer,
    start_proxy: Callable[..., ProxyServer],
    put: Callable[..., None],
) -> None:
    """Real HTTP requests through s3proxy land in MongoDB as the original's documents, with
    the GeoIP location of the X-Forwarded-For client."""
    # (mmdb_ws and mongo come first so that they stop after s3proxy does.)
    body = b"<html>hello</html>"
    put("index.html", body, ContentType="text/html")
    proxy = start_proxy(mongo_uri=mongo.uri, mmdb_host="127.0.0.1", mmdb_port=mmdb_ws.port)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            headers = {"x-forwarded-for": f"{OKLAHOMA}, 10.0.0.1", "accept-encoding": "identity"}
            response = client.get("/", headers=headers)
            assert response.status_code == 200
        assert client.get("/missing.html").status_code == 404

    # The sink process runs on idle CPU only (SCHED_IDLE): on a busy machine, that can be late.
    wait_for(lambda: len(mongo.docs("metrics.request")) >= 4, timeout=60, what="four documents")
    docs = mongo.docs("metrics.request")
    assert len(docs) == 4
    located = [d for d in docs if d["ipaddress"] == OKLAHOMA]
    assert len(located) == 3
    for doc in located:
        assert doc["method"] == "GET" and doc["resource"] == "/" and doc["status"] == 200
        assert doc["mimeType"].startswith("text/html") and doc["size"] == len(body)
        assert doc["location"] == OKLAHOMA_LOCATION
    [missing] = [d for d in docs if d["ipaddress"] != OKLAHOMA]
    assert missing["status"] == 404 and "location" not in missing
    assert mongo.indexes["metrics.request"].keys() == {
        "method_1",
        "resource_1",
        "status_1",
        "timestamp_1",
    }
    assert mmdb_ws.queries == [OKLAHOMA]
