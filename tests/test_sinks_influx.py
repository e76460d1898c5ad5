"""The line-protocol sink: over TCP to a strict line-protocol listener (QuestDB's and
Telegraf's way; neither is packaged for Debian or PyPI), and over HTTP to the real InfluxDB
1.x (Debian's ``influxdb`` package), read back with InfluxQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.record import RequestRecord
from s3proxy.sinks.base import Sinks
from s3proxy.sinks.influx import LineProtocolError, LineProtocolSink, _write_target, encode_line
from tests.servers import ProxyServer
from tests.sink_servers import (
    INFLUXD,
    InfluxDB,
    LinePoint,
    LineProtocolServer,
    eventually,
    make_record,
    parse_line,
    wait_for,
)

DB = "s3proxy"
TRICKY = "/a,b c=d\\e\"f'g\nh/caf\xe9 \u00fcber.html"
TRICKY_STORED = "/a,b c=d%5Ce\"f'g_h/caf\xe9 \u00fcber.html"

needs_influxd = pytest.mark.skipif(
    INFLUXD is None, reason="influxd not installed (Debian: apt-get install influxdb)"
)


pytestmark = pytest.mark.usefixtures("quick_backoff")


@pytest.fixture
def listener() -> Iterator[LineProtocolServer]:
    with LineProtocolServer() as server:
        yield server


@pytest.fixture(scope="module")
def influxdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    if INFLUXD is None:
        pytest.skip("influxd not installed (Debian: apt-get install influxdb)")
    with InfluxDB(tmp_path_factory.mktemp("influxdb")).running() as server:
        server.query(DB, f"CREATE DATABASE {DB}")
        yield server


async def deliver(sink: LineProtocolSink, records: list[RequestRecord], arrived: Any) -> None:
    """Emit ``records`` through :class:`Sinks` and wait until ``arrived()`` holds."""
    sinks = Sinks([sink])
    await sinks.start()
    for r in records:
        sinks.emit(r)
    await eventually(arrived)
    assert sinks.stats()["ilp"]["failures"] == 0
    await sinks.close()


LOCATION = {
    "city": "São Paulo",
    "continent": "South America",
    "country": "Brazil",
    "country_iso_code": "BR",
    "subdivision": "São Paulo",
    "latitude": -23.5,
    "longitude": -46.6,
}


# --- encoding, read back by a strict parser ------------------------------------------------


def test_each_request_is_one_line(listener: LineProtocolServer) -> None:
    """A record becomes one line: the series, the request's tags, typed fields and the
    request's start in nanoseconds."""
    r = make_record(
        mime_type="text/html; charset=utf-8", compressed=True, origin_bytes=4096, cache="miss"
    )
    sink = LineProtocolSink("127.0.0.1", listener.port, "request")
    asyncio.run(deliver(sink, [r], lambda: len(listener.points) == 1))
    assert listener.points == [
        LinePoint(
            "request",
            {
                "cache": "miss",
                "ipaddress": "203.0.113.7",
                "method": "GET",
                "mimeType": "text/html",
                "resource": "/index.html",
                "status": "200",
            },
            {"size": 2950, "duration_ms": 1.234, "compressed": True, "origin_bytes": 4096},
            round(r.timestamp * 1e9),
        )
    ]
    assert listener.errors == []


def test_special_characters_survive_the_strict_parser(listener: LineProtocolServer) -> None:
    """Commas, spaces, ``=``, quotes, backslashes, newlines and non-ASCII in tags, and a
    series name with a space and a comma, are escaped so the line parses back exactly
    (a backslash as ``%5C``, a control character as ``_``)."""
    r = make_record(resource=TRICKY, mime_type="", method="M-SEARCH", ip="2001:db8::1")
    sink = LineProtocolSink("127.0.0.1", listener.port, "web requests,v2")
    asyncio.run(deliver(sink, [r], lambda: len(listener.points) == 1))
    (point,) = listener.points
    assert point.measurement == "web requests,v2"
    assert point.tags["resource"] == TRICKY_STORED
    assert point.tags["ipaddress"] == "2001:db8::1" and point.tags["method"] == "M-SEARCH"
    assert "mimeType" not in point.tags  # never an empty tag value
    assert listener.errors == []


def test_location_is_tags_and_float_coordinates(listener: LineProtocolServer) -> None:
    """GeoIP data adds the original's location tags and float latitude/longitude fields."""
    sink = LineProtocolSink("127.0.0.1", listener.port, "request")
    records = [make_record(location=LOCATION), make_record(location={"latitude": "x", "city": ""})]
    asyncio.run(deliver(sink, records, lambda: len(listener.points) == 2))
    located, unlocated = listener.points
    assert located.tags["city"] == "São Paulo" and located.tags["country_iso_code"] == "BR"
    assert located.tags["continent"] == "South America"
    assert located.fields["latitude"] == -23.5 and located.fields["longitude"] == -46.6
    assert "latitude" not in unlocated.fields and "city" not in unlocated.tags


def test_reused_series_text_follows_each_records_own_fields(
    listener: LineProtocolServer,
) -> None:
    """Escaped tags and location parts are memoised across records: in one batch, records
    that share some fields and differ in others (a new location dict for the same address
    included) each come out with exactly their own tags, as encoding them alone gives."""
    elsewhere = {**LOCATION, "city": "Rio de Janeiro", "latitude": -22.9}
    records = [
        make_record(location=LOCATION),
        make_record(location=elsewhere),
        make_record(),
        make_record(location=LOCATION, resource="/b c.html?q=1", status=404),
        make_record(location=LOCATION, cache="miss", mime_type=""),
        make_record(location=elsewhere, ip="2001:db8::1", method="HEAD"),
    ] * 2
    sink = LineProtocolSink("127.0.0.1", listener.port, "request")
    asyncio.run(deliver(sink, records, lambda: len(listener.points) == len(records)))
    assert [parse_line(encode_line("request", r)[:-1]) for r in records] == listener.points
    cities = [p.tags.get("city") for p in listener.points[:6]]
    sao, rio = "São Paulo", "Rio de Janeiro"
    assert cities == [sao, rio, None, sao, sao, rio]
    assert listener.points[3].tags["resource"] == "/b c.html"
    assert "mimeType" not in listener.points[4].tags


def test_a_killed_listener_costs_records_but_never_an_exception(
    listener: LineProtocolServer,
) -> None:
    """While the listener is down, records are dropped and counted; after it restarts, the
    sink reconnects by itself."""

    async def scenario() -> dict[str, int]:
        sinks = Sinks([LineProtocolSink("127.0.0.1", listener.port, "request")])
        await sinks.start()
        sinks.emit(make_record(resource="/before"))
        await eventually(lambda: len(listener.points) == 1)
        await asyncio.to_thread(listener.kill)
        for _ in range(5):
            sinks.emit(make_record(resource="/during"))
            await asyncio.sleep(0.05)
        await eventually(lambda: sinks.stats()["ilp"]["dropped"] >= 1)
        await asyncio.to_thread(listener.restart)
        await asyncio.sleep(0.3)
        sinks.emit(make_record(resource="/after"))
        await eventually(lambda: any(p.tags["resource"] == "/after" for p in listener.points))
        stats = sinks.stats()["ilp"]
        await sinks.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats["failures"] >= 1 and stats["dropped"] >= 1
    assert stats["sent"] + stats["dropped"] + stats["queued"] == 7
    assert listener.errors == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param("m,t=a\\b f=1i 1", "stray backslash", id="backslash-in-tag"),
        pytest.param("m,t= f=1i 1", "empty tag", id="empty-tag"),
        pytest.param("m,t=a=b f=1i 1", "unescaped", id="equals-in-tag"),
        pytest.param("m f=1u 1", "bad field", id="unsigned"),
        pytest.param("m f=1i", "expected", id="no-timestamp"),
    ],
)
def test_the_test_parser_is_strict(line: str, problem: str) -> None:
    """The fake listener refuses what InfluxDB would store wrongly or refuse."""
    with pytest.raises(Exception, match=problem):
        parse_line(line)


# --- HTTP to the real InfluxDB 1.x ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "query", "target"),
    [
        pytest.param("/metrics", "", "/write?db=metrics&precision=ns", id="database"),
        pytest.param("/metrics/", "rp=week", "/write?db=metrics&rp=week&precision=ns", id="rp"),
        pytest.param("/write", "db=m&precision=ms", "/write?db=m&precision=ms", id="write-url"),
        pytest.param(
            "/api/v2/write",
            "org=o&bucket=b",
            "/api/v2/write?org=o&bucket=b&precision=ns",
            id="v2",
        ),
        pytest.param("/my%20db", "", "/write?db=my%20db&precision=ns", id="quoted"),
    ],
)
def test_http_write_url(path: str, query: str, target: str) -> None:
    """The ``--ilp-host`` URL's path names the database, or is the write URL itself."""
    assert _write_target(path, query, "url") == target


@pytest.mark.parametrize("url", ["http://influx:8086", "http://influx:8086/a/b", "http://:1/db"])
def test_http_url_without_a_database_fails_at_startup(url: str) -> None:
    """A URL that names no database (or no host) is refused when the sink is built."""
    with pytest.raises(ValueError, match="ilp-host"):
        LineProtocolSink(url, 9009, "request")


async def _answering(answers: list[bytes], heads: list[bytes], keep: int = 0) -> asyncio.Server:
    """A loopback HTTP/1.1 server that keeps each request's head and gives the next of
    ``answers`` (a whole response) to each request. With ``keep``, it answers that many
    requests on a connection and then hangs up on the next one without an answer, as a
    server does that closes an idle kept-alive connection just as a request comes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for served in itertools.count():
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                if served == keep > 0:
                    break
                writer.write(answers.pop(0))
                await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


def test_http_credentials_become_basic_auth_and_stay_out_of_errors() -> None:
    """``user:password@`` in the URL is sent as ``Authorization: Basic``, and a refused
    write's error names the URL without them."""
    heads: list[bytes] = []
    answers = [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 14\r\n\r\nbad credential",
    ]

    async def scenario() -> str:
        async with await _answering(answers, heads) as server:
            port = server.sockets[0].getsockname()[1]
            sink = LineProtocolSink(f"http://writer:p%40ss@127.0.0.1:{port}/m", 9, "request")
            await sink.open()
            try:
                await sink.write([make_record()])
                with pytest.raises(LineProtocolError) as refused:
                    await sink.write([make_record()])
            finally:
                await sink.close()
        return str(refused.value)

    error = asyncio.run(scenario())
    assert len(heads) == 2
    for head in heads:
        assert head.startswith(b"POST /write?db=m&precision=ns HTTP/1.1\r\n")
        assert b"\r\nAuthorization: Basic d3JpdGVyOnBAc3M=\r\n" in head
    assert error.startswith("HTTP 401 from http://127.0.0.1:") and "bad credential" in error
    assert "writer" not in error and "ss@" not in error


def test_a_closed_kept_alive_connection_is_replaced_once() -> None:
    """A server that closes the kept-alive connection as the next batch arrives: the batch
    goes out again on a new connection, and is not lost."""
    heads: list[bytes] = []
    answers = [b"HTTP/1.1 204 No Content\r\n\r\n"] * 2

    async def scenario() -> None:
        async with await _answering(answers, heads, keep=1) as server:
            port = server.sockets[0].getsockname()[1]
            sink = LineProtocolSink(f"http://127.0.0.1:{port}/m", 9009, "request")
            await sink.open()
            try:
                await sink.write([make_record()])
                await sink.write([make_record(resource="/second")])
            finally:
                await sink.close()

    asyncio.run(scenario())
    assert len(heads) == 3 and answers == []  # the second batch sent twice, answered once


@needs_influxd
def test_influxdb_stores_what_was_written(influxdb: InfluxDB) -> None:
    """InfluxDB takes every line and gives back the same tags, field types, values and
    nanosecond timestamps, special characters included."""
    records = [
        make_record(mime_type="text/html; charset=utf-8", compressed=True, origin_bytes=7),
        make_record(resource=TRICKY, status=404, cache="-", duration_us=5, location=LOCATION),
    ]
    sink = LineProtocolSink(f"{influxdb.url}/{DB}", 9009, "stored")
    asyncio.run(deliver(sink, records, lambda: len(influxdb.rows(DB, "stored")) == 2))
    first, second = sorted(influxdb.rows(DB, "stored"), key=lambda row: row["status"])
    assert first == {
        "time": round(records[0].timestamp * 1e9),
        "cache": "hit",
        "city": None,
        "compressed": True,
        "continent": None,
        "country": None,
        "country_iso_code": None,
        "duration_ms": 1.234,
        "ipaddress": "203.0.113.7",
        "latitude": None,
        "longitude": None,
        "method": "GET",
        "mimeType": "text/html",
        "origin_bytes": 7,
        "resource": "/index.html",
        "size": 2950,
        "status": "200",
        "subdivision": None,
    }
    assert second["resource"] == TRICKY_STORED
    assert (second["status"], second["cache"], second["duration_ms"]) == ("404", "-", 0.005)
    assert (second["city"], second["latitude"], second["longitude"]) == ("São Paulo", -23.5, -46.6)
    assert second["compressed"] is False


@needs_influxd
def test_influxdb_write_url_with_a_retention_policy(influxdb: InfluxDB) -> None:
    """A full ``/write?db=...&rp=...`` URL is used as given."""
    sink = LineProtocolSink(f"{influxdb.url}/write?db={DB}&rp=autogen", 9009, "explicit")
    asyncio.run(deliver(sink, [make_record()], lambda: len(influxdb.rows(DB, "explicit")) == 1))


@needs_influxd
def test_influxdb_refusing_writes_is_a_counted_failure(influxdb: InfluxDB) -> None:
    """A database that does not exist (HTTP 404) fails the writes: dropped and counted,
    logged, never raised."""

    async def scenario() -> dict[str, int]:
        sinks = Sinks([LineProtocolSink(f"{influxdb.url}/nosuchdb", 9009, "request")])
        await sinks.start()
        sinks.emit(make_record())
        await eventually(lambda: sinks.stats()["ilp"]["failures"] >= 1)
        stats = sinks.stats()["ilp"]
        await sinks.close()
        return stats

    stats = asyncio.run(scenario())
    assert stats["dropped"] == 1 and stats["sent"] == 0


@needs_influxd
def test_influxdb_restart_is_survived(tmp_path: Path) -> None:
    """The kept-alive HTTP connection dies with the server; once InfluxDB is back, the next
    batch goes through on a new connection."""
    server = InfluxDB(tmp_path)

    async def scenario() -> None:
        sinks = Sinks([LineProtocolSink(f"{server.url}/{DB}", 9009, "restart")])
        await sinks.start()
        with server.running():
            server.query(DB, f"CREATE DATABASE {DB}")
            sinks.emit(make_record(resource="/before"))
            # InfluxDB shows a point before it answers the write: wait for the answer.
            await eventually(lambda: sinks.stats()["ilp"]["sent"] == 1)
        sinks.emit(make_record(resource="/during"))
        await eventually(lambda: sinks.stats()["ilp"]["dropped"] == 1)
        with server.running():
            sinks.emit(make_record(resource="/after"))
            await eventually(lambda: len(server.rows(DB, "restart")) == 2)
            rows = server.rows(DB, "restart")
        await sinks.close()
        assert [row["resource"] for row in rows] == ["/before", "/after"]

    asyncio.run(scenario())


# --- through s3proxy -----------------------------------------------------------------------


@needs_influxd
def test_the_proxy_writes_every_request_to_influxdb(
    influxdb: InfluxDB, start_proxy: Callable[..., ProxyServer], put: Callable[..., None]
) -> None:
    """Through s3proxy with ``--ilp-host http://.../<db>``: each request is a point."""
    put("index.html", b"<h1>home</h1>", ContentType="text/html")
    proxy = start_proxy(ilp_host=f"{influxdb.url}/{DB}", ilp_series_name="proxied")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/missing.html").status_code == 404
    wait_for(lambda: len(influxdb.rows(DB, "proxied")) == 3, what="three points in InfluxDB")
    rows = sorted(influxdb.rows(DB, "proxied"), key=lambda row: row["time"])
    assert [(r["method"], r["resource"], r["status"]) for r in rows] == [
        ("GET", "/", "200"),
        ("GET", "/", "200"),
        ("GET", "/missing.html", "404"),
    ]
    assert [r["size"] for r in rows[:2]] == [13, 13]
    assert rows[0]["mimeType"] == "text/html" and rows[0]["ipaddress"] == "127.0.0.1"


def test_the_proxy_writes_every_request_over_tcp(
    listener: LineProtocolServer,
    start_proxy: Callable[..., ProxyServer],
    put: Callable[..., None],
) -> None:
    """Through s3proxy with ``--ilp-host <host> --ilp-port <port>`` (QuestDB's way)."""
    put("a.txt", b"hello", ContentType="text/plain")
    proxy = start_proxy(ilp_host="127.0.0.1", ilp_port=listener.port)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/a.txt").status_code == 200
        assert client.head("/a.txt").status_code == 200
    wait_for(lambda: len(listener.points) == 2, what="two lines")
    assert [(p.measurement, p.tags["method"], p.tags["resource"]) for p in listener.points] == [
        ("request", "GET", "/a.txt"),
        ("request", "HEAD", "/a.txt"),
    ]
    assert listener.points[0].fields["size"] == 5 and listener.points[1].fields["size"] == 0
    assert listener.errors == []
