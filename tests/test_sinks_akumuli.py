"""The Akumuli sink: what a strict Akumuli endpoint decodes, and how the sink lives through
errors, a dead server and a restart. No Akumuli server is packaged for Debian or PyPI, so
the server is :class:`~tests.sink_servers.AkumuliServer`, written from Akumuli's docs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from s3proxy.sinks.akumuli import MAX_SERIES_NAME, AkumuliSink, iso_time
from s3proxy.sinks.base import Sinks
from tests.servers import ProxyServer
from tests.sink_servers import AkumuliServer, eventually, make_record, wait_for


@pytest.fixture
def akumuli() -> Iterator[AkumuliServer]:
    with AkumuliServer() as server:
        yield server


pytestmark = pytest.mark.usefixtures("quick_backoff")


def run(scenario: Callable[[], Any]) -> Any:
    return asyncio.run(scenario())


def test_each_request_is_a_counter_a_size_and_a_time(akumuli: AkumuliServer) -> None:
    """One request gives the original's three points, with its tags and one timestamp."""

    async def scenario() -> None:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")])
        await sinks.start()
        sinks.emit(make_record())
        await eventually(lambda: len(akumuli.points) == 3)
        await sinks.close()

    before = time.time_ns()
    run(scenario)
    counter, size, took = akumuli.points
    assert (counter.metric, counter.value) == ("request.counter", 1)
    assert (size.metric, size.value) == ("request.size", 2950)
    assert (took.metric, took.value) == ("request.time", 1.234)
    assert counter.tags == {
        "method": "GET",
        "resource": "/index.html",
        "ipaddress": "203.0.113.7",
        "status": "200",
        "mimeType": "text/html",
    }
    assert counter.tags == size.tags == took.tags
    assert counter.timestamp == size.timestamp == took.timestamp
    assert before <= counter.timestamp <= time.time_ns()
    assert akumuli.errors == []


def test_tag_values_are_sanitised_and_long_resources_cut(akumuli: AkumuliServer) -> None:
    """Spaces, ``=`` and control characters never split a tag; a query is not part of the
    resource; a huge path is cut so the series stays under Akumuli's 1 KiB; no mime type,
    no ``mimeType`` tag; media type parameters are dropped."""
    records = [
        make_record(resource="/a b=c\r\nd.html?x=1", mime_type="text/html; charset=utf-8"),
        make_record(resource="/" + "x" * 5000, mime_type=""),
        make_record(resource="/caf\xe9 menu.pdf", method="PROPFIND", ip="::1"),
    ]

    async def scenario() -> None:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")])
        await sinks.start()
        for r in records:
            sinks.emit(r)
        await eventually(lambda: len(akumuli.points) == 9)
        await sinks.close()

    run(scenario)
    assert akumuli.errors == []
    first, long, third = (akumuli.points[i].tags for i in (0, 3, 6))
    assert first["resource"] == "/a_b_c__d.html"
    assert first["mimeType"] == "text/html"
    assert long["resource"].startswith("/xxx") and "mimeType" not in long
    series = " ".join(f"{k}={v}" for k, v in long.items())
    assert len(f"request.counter|request.size|request.time {series}".encode()) <= MAX_SERIES_NAME
    assert third == {
        "method": "PROPFIND",
        "resource": "/café_menu.pdf",
        "ipaddress": "::1",
        "status": "200",
        "mimeType": "text/html",
    }


def test_location_is_the_originals_geojson_event(akumuli: AkumuliServer) -> None:
    """With GeoIP data, a ``!<prefix>.location`` event carries a geo:json point
    (longitude first, RFC 7946) and the location tags; without coordinates, no event."""
    location = {
        "city": "New York",
        "continent": "North America",
        "country": "United States",
        "country_iso_code": "US",
        "subdivision": "New York",
        "latitude": 40.71,
        "longitude": -74.01,
    }

    async def scenario() -> None:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "web")])
        await sinks.start()
        sinks.emit(make_record(location=location))
        sinks.emit(make_record(location={"city": "Nowhere"}))
        await eventually(lambda: len(akumuli.points) == 7)
        await sinks.close()

    run(scenario)
    assert akumuli.errors == []
    metrics = [p.metric for p in akumuli.points]
    assert metrics == ["web.counter", "web.size", "web.time", "!web.location"] + metrics[:3]
    event = akumuli.points[3]
    assert event.tags["city"] == "New_York" and event.tags["country_iso_code"] == "US"
    assert event.tags["method"] == "GET" and event.tags["continent"] == "North_America"
    assert isinstance(event.value, str)
    value = json.loads(event.value)
    assert value["type"] == "geo:json"
    assert value["value"] == {"type": "Point", "coordinates": [-74.01, 40.71]}
    assert value["metadata"]["timestamp"]["value"].endswith("Z")
    assert event.timestamp == akumuli.points[0].timestamp


def test_reused_series_text_follows_each_records_own_fields(akumuli: AkumuliServer) -> None:
    """Escaped tags and location parts are memoised across records: in one batch, records
    that share some fields and differ in others (a new location dict for the same address
    included) each come out with exactly their own tags and event."""
    here = {"city": "Oslo", "country_iso_code": "NO", "latitude": "59.9", "longitude": "10.7"}
    there = {**here, "city": "Bergen", "latitude": "60.4"}
    records = [
        make_record(location=here),
        make_record(location=there),
        make_record(),
        make_record(location=here, resource="/a b.html", status=404),
        make_record(location=here, mime_type="", ip="::1"),
        make_record(location=there, resource="/" + "y" * 3000),
    ] * 2

    async def scenario() -> None:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "web")])
        await sinks.start()
        for r in records:
            sinks.emit(r)
        await eventually(lambda: len(akumuli.points) == 4 * len(records) - 2)
        await sinks.close()

    run(scenario)
    assert akumuli.errors == []
    counters = [p for p in akumuli.points if p.metric == "web.counter"]
    events = [p for p in akumuli.points if p.metric == "!web.location"]
    assert [p.tags["status"] for p in counters[:6]] == ["200", "200", "200", "404", "200", "200"]
    assert counters[3].tags["resource"] == "/a_b.html" and counters[4].tags["ipaddress"] == "::1"
    assert "mimeType" not in counters[4].tags and len(counters[5].tags["resource"]) < 1000
    assert [e.tags["city"] for e in events[:5]] == ["Oslo", "Bergen", "Oslo", "Oslo", "Bergen"]
    coordinates = [json.loads(str(e.value))["value"]["coordinates"] for e in events[:2]]
    assert coordinates == [[10.7, 59.9], [10.7, 60.4]]


@pytest.mark.parametrize(
    "ns",
    [0, 999, 1_000_000_000 - 1, 1_700_000_000_123_456_789, 1_795_323_886_999_999_999],
)
def test_event_time_is_what_datetime_writes(ns: int) -> None:
    """The geo:json timestamp, formatted once a second and completed with microseconds, is
    exactly ``datetime.isoformat`` in UTC with ``Z``, across second boundaries too."""
    for t in (ns, ns + 1_000, ns + 1_000_000_000):
        when = datetime.fromtimestamp(t // 1000 / 1_000_000, UTC)
        assert iso_time(t) == when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_a_burst_of_identical_requests_is_never_a_late_write(akumuli: AkumuliServer) -> None:
    """Records of one series written together get strictly increasing timestamps, which
    Akumuli requires of every series."""

    async def scenario() -> None:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")])
        await sinks.start()
        for _ in range(2000):
            sinks.emit(make_record())
        await eventually(lambda: len(akumuli.points) == 6000)
        await sinks.close()

    run(scenario)
    assert akumuli.errors == []
    stamps = [p.timestamp for p in akumuli.points if p.metric == "request.counter"]
    assert stamps == sorted(set(stamps))


def test_an_error_line_makes_the_sink_reconnect(akumuli: AkumuliServer) -> None:
    """Akumuli's ``-DB ...`` answer (then its hang-up) fails the next write: the runner
    counts the loss, reconnects, and later records arrive; nothing is raised."""

    async def scenario() -> dict[str, int]:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")])
        await sinks.start()
        sinks.emit(make_record())
        await eventually(lambda: len(akumuli.points) == 3)
        akumuli.fail_next = b"-DB late write\r\n"
        sinks.emit(make_record(resource="/refused.html"))
        await asyncio.sleep(0.1)  # the error arrives while the sink is idle
        sinks.emit(make_record(resource="/lost.html"))
        await eventually(lambda: sinks.stats()["akumuli"]["failures"] == 1)
        sinks.emit(make_record(resource="/after.html"))
        await eventually(lambda: any(p.tags["resource"] == "/after.html" for p in akumuli.points))
        stats = sinks.stats()["akumuli"]
        await sinks.close()
        return stats

    stats = run(scenario)
    assert stats["dropped"] == 1 and stats["failures"] == 1
    assert akumuli.connections == 2
    assert {p.tags["resource"] for p in akumuli.points} == {"/index.html", "/after.html"}


def test_a_killed_server_costs_records_but_never_an_exception(akumuli: AkumuliServer) -> None:
    """While Akumuli is down, records are dropped and counted; once it is back, the sink
    reconnects by itself and writes again."""

    async def scenario() -> dict[str, int]:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")])
        await sinks.start()
        sinks.emit(make_record(resource="/before.html"))
        await eventually(lambda: len(akumuli.points) == 3)
        await asyncio.to_thread(akumuli.kill)
        for _ in range(5):
            sinks.emit(make_record(resource="/during.html"))
            await asyncio.sleep(0.05)
        await eventually(lambda: sinks.stats()["akumuli"]["dropped"] >= 1)
        await asyncio.to_thread(akumuli.restart)
        await asyncio.sleep(0.3)  # the runner's next attempt connects
        sinks.emit(make_record(resource="/after.html"))
        await eventually(lambda: any(p.tags["resource"] == "/after.html" for p in akumuli.points))
        assert all(not runner._task.done() for runner in sinks.runners)  # type: ignore[union-attr]
        stats = sinks.stats()["akumuli"]
        await sinks.close()
        return stats

    stats = run(scenario)
    assert stats["failures"] >= 1 and stats["dropped"] >= 1
    assert stats["sent"] + stats["dropped"] + stats["queued"] == 7
    assert akumuli.errors == []


def test_no_server_at_all_only_drops(akumuli: AkumuliServer) -> None:
    """A sink that cannot connect drops what it cannot send and shuts down promptly."""
    akumuli.kill()

    async def scenario() -> dict[str, int]:
        sinks = Sinks([AkumuliSink("127.0.0.1", akumuli.port, "request")], queue_size=3)
        await sinks.start()
        for _ in range(10):
            sinks.emit(make_record())
        await asyncio.sleep(0.2)
        stats = sinks.stats()["akumuli"]
        started = time.monotonic()
        await sinks.close()
        assert time.monotonic() - started < 3
        return stats

    stats = run(scenario)
    assert stats["sent"] == 0 and stats["dropped"] >= 7 and stats["failures"] >= 1


def test_the_proxy_writes_every_request_to_akumuli(
    akumuli: AkumuliServer, start_proxy: Callable[..., ProxyServer], put: Callable[..., None]
) -> None:
    """Through s3proxy with ``--akumuli-host``: each answered request (a hit, a miss, a 404)
    arrives in Akumuli with its method, path, status, size and mime type."""
    put("index.html", b"<h1>home</h1>", ContentType="text/html")
    proxy = start_proxy(akumuli_host="127.0.0.1", akumuli_port=akumuli.port, metric_prefix="s3")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        assert client.get("/index.html", headers={"x-real-ip": "198.51.100.4"}).status_code == 200
        assert client.head("/missing.html").status_code == 404
    wait_for(lambda: len(akumuli.points) == 9, what="three requests in Akumuli")
    counters = [p for p in akumuli.points if p.metric == "s3.counter"]
    assert [(p.tags["method"], p.tags["resource"], p.tags["status"]) for p in counters] == [
        ("GET", "/", "200"),
        ("GET", "/index.html", "200"),
        ("HEAD", "/missing.html", "404"),
    ]
    assert counters[0].tags["mimeType"] == "text/html"
    assert counters[1].tags["ipaddress"] == "198.51.100.4"
    sizes = [p.value for p in akumuli.points if p.metric == "s3.size"]
    assert sizes[:2] == [13, 13]
    assert akumuli.errors == []
