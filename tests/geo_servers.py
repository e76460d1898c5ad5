"""GeoIP for the tests: a real MaxMind DB file, and an mmdb-ws-compatible websocket server.

Neither a GeoLite2/DB-IP database nor the mmdb-ws service can be fetched or installed here, so:

- :func:`build_mmdb` writes a real MaxMind DB (binary format 2.0, IPv6 tree with IPv4 mapped
  in, ``GeoIP2-City`` record structure) with the ``mmdb-writer`` package, holding a few
  public networks: 184.105.163.0/24 (Oklahoma City, the address in mmdb-ws's README),
  81.2.69.0/24 (London, as in MaxMind's test data) and 2001:218::/32 (Tokyo);
- :class:`MmdbWsServer` answers like mmdb-ws (github.com/sptrakesh/mmdb-ws, its README and
  ``src/server/websocket``): one text message per query, one text message back. ``<ip>`` or
  ``j:<ip>``: the record as JSON; ``f:<ip>``: ``key : value`` lines; ``l:<ip>``:
  ``lat,lon``; an address it cannot resolve, and a query shorter than two characters, is
  sent back as it came. It reads the same file with ``maxminddb``. With ``stall`` set it
  accepts connections and queries but never answers (a hung service); ``delay`` makes each
  answer late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import maxminddb
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.sink_servers import LoopServer


def _place(
    city: tuple[int, str],
    subdivision: tuple[int, str, str],
    country: tuple[int, str, str],
    continent: tuple[int, str, str],
    location: tuple[float, float, str],
) -> dict[str, Any]:
    """A GeoIP2-City record (the fields mmdb-ws's README shows, plus ids and time zone)."""
    return {
        "city": {"geoname_id": city[0], "names": {"en": city[1]}},
        "continent": {
            "code": continent[1],
            "geoname_id": continent[0],
            "names": {"en": continent[2]},
        },
        "country": {"geoname_id": country[0], "iso_code": country[1], "names": {"en": country[2]}},
        "location": {
            "accuracy_radius": 20,
            "latitude": location[0],
            "longitude": location[1],
            "time_zone": location[2],
        },
        "subdivisions": [
            {
                "geoname_id": subdivision[0],
                "iso_code": subdivision[1],
                "names": {"en": subdivision[2]},
            }
        ],
    }


NORTH_AMERICA = (6255149, "NA", "North America")
EUROPE = (6255148, "EU", "Europe")
ASIA = (6255147, "AS", "Asia")
NETWORKS: dict[str, dict[str, Any]] = {
    "184.105.163.0/24": _place(
        (4544349, "Oklahoma City"),
        (4544379, "OK", "Oklahoma"),
        (6252001, "US", "United States"),
        NORTH_AMERICA,
        (35.5248, -97.5971, "America/Chicago"),
    ),
    "81.2.69.0/24": _place(
        (2643743, "London"),
        (6269131, "ENG", "England"),
        (2635167, "GB", "United Kingdom"),
        EUROPE,
        (51.5142, -0.0931, "Europe/London"),
    ),
    "2001:218::/32": _place(
        (1850147, "Tokyo"),
        (1850144, "13", "Tokyo"),
        (1861060, "JP", "Japan"),
        ASIA,
        (35.6895, 139.6917, "Asia/Tokyo"),
    ),
}

#: What the original stored as ``location`` for 184.105.163.155 (mmdb-ws's ``f:`` listing).
OKLAHOMA_LOCATION = {
    "city": "Oklahoma City",
    "continent": "North America",
    "country": "United States",
    "country_iso_code": "US",
    "latitude": "35.524800",
    "longitude": "-97.597100",
    "query_ip_address": "184.105.163.155",
    "query_language": "en",
    "subdivision": "Oklahoma",
}


def build_mmdb(path: Path) -> Path:
    """Write the test City database to ``path``."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="s3proxy test City database",
    )
    for network, record in NETWORKS.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


class MmdbWsServer(LoopServer):
    """The mmdb-ws stand-in on ``ws://127.0.0.1:<port>/``; ``queries`` lists what it got."""

    thread_name = "fake-mmdb-ws"

    def __init__(self, database: Path) -> None:
        self.reader = maxminddb.open_database(str(database))
        self.port = 0
        self.stall = False
        #: Seconds to wait before each answer.
        self.delay = 0.0
        self.queries: list[str] = []
        self._server: Server | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """:meth:`LoopServer.running`, then the database file closed."""
        with contextlib.closing(self.reader), super().running():
            yield self

    async def _start(self) -> None:
        self._server = await serve(self._session, "127.0.0.1", self.port, compression=None)
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _session(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for query in ws:
                text = query if isinstance(query, str) else query.decode()
                self.queries.append(text)
                if self.delay:
                    await asyncio.sleep(self.delay)
                if not self.stall:
                    await ws.send(self.answer(text))

    def answer(self, query: str) -> str:
        """What mmdb-ws sends back for ``query``."""
        if len(query) < 2:
            return query
        kind, ip = (query[0], query[2:]) if query[1] == ":" else ("j", query)
        try:
            record: Any = self.reader.get(ip)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return ip
        if kind == "f":
            return "".join(
                f"{key} : {value}\n" for key, value in sorted(_fields(record, ip).items())
            )
        if kind == "l":
            return f"{record['location']['latitude']:f},{record['location']['longitude']:f}"
        return json.dumps(record, indent=4)


def _fields(record: dict[str, Any], ip: str) -> dict[str, str]:
    """mmdb-ws's ``f:`` listing, written out for the fake independently of the code under
    test."""
    return {
        "city": record["city"]["names"]["en"],
        "continent": record["continent"]["names"]["en"],
        "country": record["country"]["names"]["en"],
        "country_iso_code": record["country"]["iso_code"],
        "latitude": f"{record['location']['latitude']:f}",
        "longitude": f"{record['location']['longitude']:f}",
        "subdivision": record["subdivisions"][0]["names"]["en"],
        "query_ip_address": ip,
        "query_language": "en",
    }
