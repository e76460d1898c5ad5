"""InfluxDB line protocol: each request as one line, over TCP or HTTP.

TCP (``--ilp-host questdb``): QuestDB's ILP port 9009, Telegraf's ``socket_listener``. Such a
server answers nothing; QuestDB closes the connection on a line it cannot take.

HTTP (``--ilp-host http://influxdb:8086/metrics``): ``POST /write?db=metrics&precision=ns``,
which InfluxDB 1.x, InfluxDB 2.x (v1 compatibility API) and QuestDB all accept. The URL's
path names the database; a path ending in ``/write`` (or ``/api/v2/write``) is used as it
is, query included. ``user:password@`` in the URL is sent as Basic authentication.
``--ilp-port`` is not used: the port is the URL's.

One line per request (see InfluxDB's "line protocol reference")::

    <series>,cache=hit,ipaddress=1.2.3.4,method=GET,mimeType=text/html,resource=/a,status=200
      size=2950i,duration_ms=0.21,compressed=false,origin_bytes=0i 1700000000123456000

plus, with GeoIP data, the tags ``city continent country country_iso_code subdivision`` and
the float fields ``latitude longitude``. The original proxy's tags and fields (its
``queue/poller.cpp``) with three changes: ``status`` is a tag (to group by it), ``time`` is
``duration_ms`` (InfluxDB silently drops a field named ``time``), and integers are signed
(``i``; InfluxDB 1.x refuses the original's unsigned ``u``). The timestamp is the request's
start, in nanoseconds.

Escaping: commas and spaces in the measurement; commas, spaces and ``=`` in tag values.
InfluxDB 1.x keeps ``\\`` in a tag value as two characters and cannot parse one at its end,
so a backslash is written ``%5C`` (as a URL would carry it); control characters, which
line protocol cannot carry, become ``_``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from s3proxy.record import RequestRecord
from s3proxy.sinks.base import Location, describe
from s3proxy.sinks.tcp import CONNECT_TIMEOUT, WRITE_TIMEOUT, TcpStream
from s3proxy.sinks.text import (
    GEO_TAGS,
    KindMemo,
    LocationMemo,
    Tags,
    coordinates,
    geo_tags,
    media_type,
    path,
)

#: An HTTP answer's body is read if it is no longer than this (error messages are short).
MAX_ANSWER = 1 << 20

_CONTROL = {code: "_" for code in (*range(0x20), 0x7F)}
_MEASUREMENT = str.maketrans({**_CONTROL, ",": "\\,", " ": "\\ ", "\\": "%5C"})
_TAG = str.maketrans({**_CONTROL, ",": "\\,", "=": "\\=", " ": "\\ ", "\\": "%5C"})
#: Tags stay in sorted order, as InfluxDB prefers them: a location's go between ``cache`` and
#: ``ipaddress`` (all but one sort there) and after ``status``.
_GEO_BEFORE = tuple(key for key in GEO_TAGS if "cache" < key < "ipaddress")
_GEO_AFTER = tuple(key for key in GEO_TAGS if key > "status")


class LineProtocolError(ConnectionError):
    """The server refused a write or closed the connection."""


def tag_value(value: str) -> str:
    return value.translate(_TAG)


#: ``,key=value`` texts, each escaped once.
TAGS = Tags(tag_value, ",")


def encode_line(measurement: str, record: RequestRecord) -> str:
    """One record as a line (``measurement`` already escaped), ``\\n`` included: what
    :meth:`LineProtocolSink.encode` writes, made from scratch."""
    tags = [
        ("cache", record.cache),
        ("ipaddress", record.ip),
        ("method", record.method),
        ("mimeType", media_type(record.mime_type)),
        ("resource", path(record.resource)),
        ("status", str(record.status)),
        *geo_tags(record.location or {}),
    ]
    tag_set = "".join(f",{key}={tag_value(value)}" for key, value in sorted(tags) if value)
    return (
        f"{measurement}{tag_set} size={record.size}i,"
        f"duration_ms={record.duration_us / 1000!r},"
        f"compressed={'true' if record.compressed else 'false'},"
        f"origin_bytes={record.origin_bytes}i{_coordinates(record.location)} "
        f"{round(record.timestamp * 1e9)}\n"
    )


def _coordinates(location: Location | None) -> str:
    found = coordinates(location or {})
    return "" if found is None else f",latitude={found[0]!r},longitude={found[1]!r}"


def _location_parts(location: Location | None) -> tuple[str, str, str]:
    """A location's tags before ``ipaddress`` and after ``status``, and its coordinate
    fields."""
    if not location:
        return "", "", ""
    geo = TAGS.geo
    return geo(location, _GEO_BEFORE), geo(location, _GEO_AFTER), _coordinates(location)


class LineProtocolSink:
    """Writes records as line protocol to ``host:port`` over TCP, or to an ``http(s)://``
    URL given as ``host`` (see the module docstring)."""

    name = "ilp"

    def __init__(self, host: str, port: int, series: str) -> None:
        if not series or series != series.strip() or any(c in series for c in "\r\n\\"):
            raise ValueError(f"invalid line protocol series name {series!r}")
        self.measurement = series.translate(_MEASUREMENT)
        self._geo = LocationMemo(_location_parts)
        self._series = KindMemo(self._series_text)
        self.transport: TcpStream | _Http
        if host.startswith(("http://", "https://")):
            self.transport = _Http(host)
        else:
            self.transport = TcpStream(host, port, "the line-protocol server", LineProtocolError)

    async def open(self) -> None:
        await self.transport.open()

    async def write(self, records: list[RequestRecord]) -> None:
        await self.transport.send(self.encode(records))

    async def close(self) -> None:
        await self.transport.close()

    def encode(self, records: list[RequestRecord]) -> bytes:
        """``records`` as lines. A line's text but for its numbers is made once per kind of
        record (see :class:`~s3proxy.sinks.text.KindMemo`) and kept: then a line is one
        string format, ~0.5 µs where making everything took ~8 µs."""
        kind = self._series
        lines = []
        for record in records:
            head, middle, tail = kind(record)
            lines.append(
                f"{head}{record.size}i,duration_ms={record.duration_us / 1000!r}{middle}"
                f"{record.origin_bytes}i{tail} {round(record.timestamp * 1e9)}\n"
            )
        return "".join(lines).encode("utf-8", "replace")

    def _series_text(self, record: RequestRecord) -> tuple[str, str, str]:
        """The parts of :func:`encode_line` around the size, the duration and the origin
        bytes, from memoised escaped tag values and location parts."""
        before, after, fields = self._geo(record.location)
        head = (
            f"{self.measurement}{TAGS.tag('cache', record.cache)}{before}"
            f"{TAGS.tag('ipaddress', record.ip)}{TAGS.tag('method', record.method)}"
            f"{TAGS.mime(record.mime_type)}{TAGS.resource(record.resource)}"
            f",status={record.status}{after} size="
        )
        flags = f",compressed={'true' if record.compressed else 'false'},origin_bytes="
        return head, flags, fields


class _Http:
    """``POST`` batches to one write URL with aiohttp, over one kept-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"--ilp-host {url!r}: no host")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        # The credentials travel in the Authorization header only: errors show self.url.
        host = parts.netloc.rpartition("@")[2]
        self.url = f"{parts.scheme}://{host}{_write_target(parts.path, parts.query, url)}"
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        if parts.username is not None:  # RFC 7617 §2, UTF-8 as its §2.1 allows
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Connect once and hang up, so that records stay queued while the server cannot
        be reached (the runner backs off and reopens) rather than fail a batch each time;
        aiohttp then makes the connection it keeps."""
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(self.host, self.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=WRITE_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
            headers=self.headers,
        )

    async def send(self, data: bytes) -> None:
        """One ``POST``; raises :class:`LineProtocolError` unless the server answers 2xx. A
        kept-alive connection the server closed meanwhile is replaced once (InfluxDB
        overwrites a point written twice, so a repeat is harmless)."""
        try:
            try:
                status, answer = await self._post(data)
            except aiohttp.ClientConnectorError:
                raise  # refused: nothing was sent, so nothing to repeat at once
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                status, answer = await self._post(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LineProtocolError(f"POST {self.url}: {describe(exc)}") from exc
        if not 200 <= status < 300:
            text = answer.decode("utf-8", "replace").strip()[:300]
            raise LineProtocolError(f"HTTP {status} from {self.url}: {text}")

    async def _post(self, data: bytes) -> tuple[int, bytes]:
        assert self._session is not None, "open() first"
        async with self._session.post(self.url, data=data) as response:
            # A short answer is read whole, so that the connection can carry the next batch;
            # a longer or unsized (chunked) one only in part, for an error message.
            length = response.content_length
            whole = length is not None and length <= MAX_ANSWER
            body = await (response.read() if whole else response.content.read(MAX_ANSWER))
            return response.status, body

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _write_target(path: str, query: str, url: str) -> str:
    path = path.rstrip("/")
    if path.endswith("/write"):
        params = query
    elif path.count("/") == 1:
        params = f"db={quote(unquote(path[1:]), safe='')}" + (f"&{query}" if query else "")
        path = "/write"
    else:
        raise ValueError(
            f"--ilp-host {url!r}: name the database (http://host:8086/<database>) "
            "or give the write URL (http://host:8086/write?db=<database>)"
        )
    if "precision=" not in params:
        params = f"{params}&precision=ns" if params else "precision=ns"
    return f"{path}?{params}"
