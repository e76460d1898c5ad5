"""Akumuli: each request as data points over Akumuli's TCP write protocol.

The protocol borrows RESP's encoding (https://docs.akumuli.org/writing-data): a data point is
a series name (``+<metric> <tag>=<value> ...``), a timestamp (``:<nanoseconds>``) and a value
(``:<integer>`` or ``+<float>``); an event is a series whose metric starts with ``!`` and
whose value is a string. Every line ends with CRLF. Akumuli answers nothing while all is
well; on an error it sends one ``-PARSER ...``, ``-DB ...`` or ``-ERR ...`` line and closes
the connection (``akumulid/tcp_server.cpp``).

Per request, as the original proxy wrote them (its ``queue/poller.cpp``):

- ``<prefix>.counter`` = 1, ``<prefix>.size`` = bytes sent, ``<prefix>.time`` = milliseconds
  (a float here: the original's whole milliseconds are 0 for almost every cache hit);
- tags ``method resource ipaddress status`` and ``mimeType`` when known (without
  parameters such as ``; charset=utf-8``);
- with GeoIP data, the event ``!<prefix>.location`` whose value is a ``geo:json`` point, with
  the tags above plus ``city continent country country_iso_code subdivision``. Coordinates
  are ``[longitude, latitude]`` as RFC 7946 §3.1.1 orders them (the original had them swapped).

Timestamps are the time of writing, strictly increasing per connection, as the original's
were: Akumuli refuses a point older than the last one of its series ("late write") and
closes the connection, and records complete out of their start order.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import UTC, datetime
from typing import Any

from s3proxy.record import RequestRecord
from s3proxy.sinks.tcp import TcpStream

#: Akumuli reads strings of at most 1 KiB (``RESPStream::STRING_LENGTH_MAX``); the resource
#: tag is shortened so a series name stays under it.
MAX_SERIES_NAME = 1000
GEO_TAGS = ("city", "continent", "country", "country_iso_code", "subdivision")

# A tag value ends at a space; CR/LF end the string; ``=`` separates key and value.
_UNSAFE = re.compile(r"[\x00-\x20\x7f=]")
_METRIC = re.compile(r"^[A-Za-z0-9_.:-]+$")


class AkumuliError(ConnectionError):
    """Akumuli answered an error or closed the connection."""


def tag_value(value: str) -> str:
    """``value`` as an Akumuli tag value: no spaces, control characters or ``=``; never empty."""
    return _UNSAFE.sub("_", value) or "-"


def media_type(content_type: str) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``: parameters would only split series."""
    return content_type.split(";", 1)[0].strip()


class AkumuliSink:
    """Writes records to Akumuli's TCP endpoint (``akumulid`` port 8282 by default)."""

    name = "akumuli"

    def __init__(self, host: str, port: int, prefix: str) -> None:
        if not _METRIC.match(prefix):
            raise ValueError(f"metric prefix {prefix!r}: use letters, digits and . _ : -")
        self.host, self.port, self.prefix = host, port, prefix
        self._stream = TcpStream(host, port, "Akumuli", AkumuliError)
        self._last_ns = 0

    async def open(self) -> None:
        await self._stream.open()

    async def write(self, records: list[RequestRecord]) -> None:
        """Send ``records``; raise :class:`AkumuliError` if Akumuli has reported an error or
        hung up since the last write (it then dropped whatever followed the bad point)."""
        await self._stream.send(self.encode(records))

    async def close(self) -> None:
        await self._stream.close()

    def encode(self, records: list[RequestRecord]) -> bytes:
        return b"".join(self._encode(record, self._next_timestamp()) for record in records)

    def _next_timestamp(self) -> int:
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return self._last_ns

    def _encode(self, record: RequestRecord, ts: int) -> bytes:
        prefix = self.prefix
        location = record.location or {}
        point = _geojson(location, ts)
        geo = "" if point is None else _geo_tags(location)
        tags = self._tags(record, longest=f"!{prefix}.location {geo}")
        ms = record.duration_us / 1000
        out = (
            f"+{prefix}.counter {tags}\r\n:{ts}\r\n:1\r\n"
            f"+{prefix}.size {tags}\r\n:{ts}\r\n:{record.size}\r\n"
            f"+{prefix}.time {tags}\r\n:{ts}\r\n+{ms!r}\r\n"
        )
        if point is not None:
            out += f"+!{prefix}.location {tags}{geo}\r\n:{ts}\r\n+{point}\r\n"
        return out.encode("utf-8", "replace")

    @staticmethod
    def _tags(record: RequestRecord, longest: str) -> str:
        """The request's tags; the resource is cut so that ``longest`` plus them fits."""
        head = f"method={tag_value(record.method)} resource="
        rest = f" ipaddress={tag_value(record.ip)} status={record.status}"
        mime = media_type(record.mime_type)
        if mime:
            rest += f" mimeType={tag_value(mime)}"
        room = MAX_SERIES_NAME - len(f"{longest}{head}{rest}".encode())
        resource = tag_value(record.resource.split("?", 1)[0])
        encoded = resource.encode("utf-8", "replace")
        if len(encoded) > room:
            resource = encoded[: max(room, 1)].decode("utf-8", "ignore") or "-"
        return head + resource + rest


def _geo_tags(location: dict[str, Any]) -> str:
    return "".join(
        f" {key}={tag_value(str(location[key]))}"
        for key in GEO_TAGS
        if location.get(key) not in (None, "")
    )


def _geojson(location: dict[str, Any], ts: int) -> str | None:
    """The original's ``geo:json`` event value, or ``None`` without usable coordinates."""
    try:
        lat, lng = float(location["latitude"]), float(location["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lng)):
        return None
    when = datetime.fromtimestamp(ts // 1000 / 1_000_000, UTC)
    return json.dumps(
        {
            "type": "geo:json",
            "value": {"type": "Point", "coordinates": [lng, lat]},
            "metadata": {
                "timestamp": {
                    "type": "DateTime",
                    "value": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                }
            },
        }
    )
