"""Servers the metrics sinks write to, for the tests: strict fakes of Akumuli's TCP write
endpoint and of a line-protocol TCP listener (QuestDB, Telegraf), and the real InfluxDB 1.x
(``influxd``) on a free loopback port; and what every sink test shares: the records they
send (:func:`make_record`), waiting (:func:`wait_for`, :func:`eventually`), and the event
loop thread every fake server runs on (:class:`LoopThread`, :class:`LoopServer`).

The fakes run an asyncio server in their own thread, so tests can drive the sinks with
``asyncio.run`` or through s3proxy under uvicorn alike. They decode what they receive with
parsers written from the protocols' documentation, refuse anything else the way the real
servers do (an error line, then the connection closed), and can be killed and restarted
on the same port.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self, TypeVar

from s3proxy.record import RequestRecord
from s3proxy.sinks.base import Sinks
from tests.servers import free_port

T = TypeVar("T")


def make_record(**overrides: Any) -> RequestRecord:
    """The record every sink test starts from: a cache hit of ``GET /index.html`` from
    203.0.113.7, started now, answered 200 with 2950 bytes of ``text/html`` in 1234 µs;
    not compressed, no bytes from S3, no location. ``overrides`` replace any of these by
    field name; a test passes every value its assertions depend on that differs from these."""
    record = RequestRecord(
        timestamp=time.time(),
        method="GET",
        resource="/index.html",
        mime_type="text/html",
        ip="203.0.113.7",
        size=2950,
        duration_us=1234,
        status=200,
        compressed=False,
        cache="hit",
        origin_bytes=0,
        location=None,
    )
    return replace(record, **overrides)


@contextlib.asynccontextmanager
async def started(sinks: Sinks) -> AsyncIterator[Sinks]:
    """``sinks`` started, and closed however the block ends."""
    await sinks.start()
    try:
        yield sinks
    finally:
        await sinks.close()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


async def eventually(condition: Callable[[], bool], what: str = "", limit: float = 10.0) -> None:
    """:func:`wait_for` for coroutines: polls without blocking the event loop (the condition
    is usually about another thread's server, which no event can signal here)."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


class LoopThread:
    """An asyncio event loop running in a daemon thread; :meth:`call` runs a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class LoopServer:
    """A fake server on its own :class:`LoopThread`: :meth:`running` starts it and, however
    the block ends, stops it and ends the thread; inside, :meth:`stop` kills it and
    :meth:`start` brings it back on the same port. Subclasses write the ``_start`` coroutine
    (which listens on ``self.port``, 0 at first, and keeps the port it got) and ``_stop``."""

    thread_name = "fake-server"
    _thread: LoopThread | None = None

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        self._thread = LoopThread(self.thread_name)
        try:
            self.start()
            yield self
        finally:
            self.stop()
            self._thread.close()

    def start(self) -> None:
        assert self._thread is not None, "use running()"
        self._thread.call(self._start())

    def stop(self) -> None:
        """Stop the server: it stops listening and ends every connection (``_stop`` says how
        abruptly)."""
        assert self._thread is not None, "use running()"
        self._thread.call(self._stop())

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError


class ListSink:
    """A sink that keeps what it is given (for tests of the machinery all sinks share)."""

    name = "list"

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    async def open(self) -> None:
        pass

    async def write(self, records: list[RequestRecord]) -> None:
        self.records.extend(records)

    async def close(self) -> None:
        pass


@dataclass
class _Arrival:
    """One connection's bytes in deferred mode, and the reader its decoder will read."""

    data: bytearray
    later: asyncio.StreamReader
    decoding: asyncio.Task[None] | None = None
    ended: bool = False


class ThreadedServer:
    """A TCP server on ``127.0.0.1:<port>`` with its own event loop thread.

    ``deferred=True`` (for ``scripts/bench``) only stores what arrives, and decodes it when
    :meth:`decode_deferred` is called: decoding in Python costs far more CPU than encoding,
    which the proxy being measured would otherwise lose on a small machine. Answers (error
    lines) are then late too, so the tests never use it."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self._arrived: list[_Arrival] = []
        self.port = 0
        self.connections = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._thread: LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def __enter__(self) -> Self:
        self._thread = LoopThread(f"fake-{type(self).__name__}")
        self.restart()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._thread is not None
        try:
            self.kill()
        finally:
            self._thread.close()

    def restart(self) -> None:
        """Listen (again, on the same port after :meth:`kill`)."""
        self._call(self._listen())

    def kill(self) -> None:
        """Stop listening and drop every connection, as a crashed server would."""
        self._call(self._shutdown())

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        assert self._thread is not None, "use the server in a with block"
        return self._thread.call(coro, timeout)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        for arrival in self._arrived:
            if arrival.decoding is not None:
                arrival.decoding.cancel()
        # Let the handlers see their connections die and close them.
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self.deferred:
                await self._store(reader, writer)
            else:
                await self.handle(reader, writer)
        except ProtocolViolation as exc:
            with self._lock:
                self.errors.append(str(exc))
            with contextlib.suppress(OSError):
                writer.write(self.error_reply(str(exc)))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _store(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Deferred mode: keep the bytes; :meth:`handle` reads them from another reader,
        fed by :meth:`decode_deferred`."""
        arrival = _Arrival(bytearray(), asyncio.StreamReader(limit=1 << 20))
        arrival.decoding = asyncio.create_task(self._decode(arrival.later, writer))
        with self._lock:
            self._arrived.append(arrival)
        try:
            while data := await reader.read(1 << 20):
                with self._lock:
                    arrival.data += data
        finally:
            arrival.ended = True

    async def _decode(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.handle(reader, writer)
        except ProtocolViolation as exc:
            with self._lock:
                self.errors.append(str(exc))

    def decode_deferred(self, timeout: float = 300.0) -> None:
        """Hand what arrived so far to the decoders and wait until they have read it all."""
        self._call(self._decode_arrived(), timeout)

    async def _decode_arrived(self) -> None:
        with self._lock:
            arrivals = list(self._arrived)
            for arrival in arrivals:
                if arrival.data:
                    arrival.later.feed_data(bytes(arrival.data))
                    arrival.data.clear()
                if arrival.ended:
                    arrival.later.feed_eof()
                    self._arrived.remove(arrival)
        # A decoder reading buffered data never yields, so one turn of the loop lets each
        # read all it was given (up to an incomplete record, which waits for the rest).
        await asyncio.sleep(0)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def error_reply(self, message: str) -> bytes:
        return b""


class ProtocolViolation(Exception):
    """What the client sent is not valid: the server answers an error and hangs up."""


# --- Akumuli -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AkumuliPoint:
    metric: str
    tags: dict[str, str]
    timestamp: int
    value: float | str


_ISO_BASIC = re.compile(r"^(\d{8}T\d{6})(?:\.(\d{1,9}))?$")
_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class AkumuliServer(ThreadedServer):
    """Akumuli's RESP write protocol, as https://docs.akumuli.org/writing-data describes it:
    ``+<metric>[|<metric>...] <tag>=<value> ...``, then ``:<ns>`` or ``+<ISO 8601 basic>``,
    then ``:<int>``, ``+<float>``, an event's ``+<string>``, or ``*N`` and N values. Strings
    hold at most 1 KiB; a series needs at least one tag. Like Akumuli, it refuses a point not
    newer than the last one of its series ("late write"), and answers an error with one
    ``-PARSER``/``-DB`` line before closing the connection."""

    MAX_STRING = 1024

    def __init__(self, deferred: bool = False) -> None:
        super().__init__(deferred)
        self.points: list[AkumuliPoint] = []
        self.fail_next: bytes | None = None
        self._last: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}

    def error_reply(self, message: str) -> bytes:
        return f"-{message}\r\n".encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            if self.fail_next is not None:
                reply, self.fail_next = self.fail_next, None
                writer.write(reply)
                await writer.drain()
                return
            names, tags = self._series(self._string(line))
            timestamp = self._timestamp(await reader.readline())
            values = await self._values(reader, names)
            tag_key = tuple(sorted(tags.items()))
            with self._lock:
                for name, value in zip(names, values, strict=True):
                    series = (name, tag_key)
                    if timestamp <= self._last.get(series, -1):
                        raise ProtocolViolation(f"DB late write: {name} {timestamp}")
                    self._last[series] = timestamp
                    self.points.append(AkumuliPoint(name, tags, timestamp, value))

    def _string(self, line: bytes) -> str:
        if not line.endswith(b"\r\n"):
            raise ProtocolViolation(f"PARSER line not ended by CRLF: {line[:80]!r}")
        if not line.startswith(b"+"):
            raise ProtocolViolation(f"PARSER string expected: {line[:80]!r}")
        body = line[1:-2]
        if len(body) > self.MAX_STRING:
            raise ProtocolViolation(f"PARSER string longer than 1 KiB ({len(body)} bytes)")
        return body.decode("utf-8")

    def _series(self, text: str) -> tuple[list[str], dict[str, str]]:
        names, _, tag_text = text.partition(" ")
        metrics = names.split("|")
        if not tag_text or not all(metrics) or any("=" in m or len(m) > 256 for m in metrics):
            raise ProtocolViolation(f"PARSER invalid series name format: {text[:80]!r}")
        tags: dict[str, str] = {}
        for pair in tag_text.split(" "):
            key, sep, value = pair.partition("=")
            if not sep or not key or not value or "=" in value:
                raise ProtocolViolation(f"PARSER invalid tag {pair!r} in {text[:80]!r}")
            tags[key] = value
        if len(tags) > 32:
            raise ProtocolViolation("PARSER too many tags")
        return metrics, tags

    def _timestamp(self, line: bytes) -> int:
        if line.startswith(b":") and line.endswith(b"\r\n") and line[1:-2].isdigit():
            return int(line[1:-2])
        match = _ISO_BASIC.match(self._string(line))
        if not match:
            raise ProtocolViolation(f"PARSER unexpected parameter timestamp format: {line!r}")
        seconds = calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%S"))
        return seconds * 1_000_000_000 + int((match.group(2) or "").ljust(9, "0"))

    async def _values(self, reader: asyncio.StreamReader, names: list[str]) -> list[float | str]:
        line = await reader.readline()
        if len(names) == 1:
            return [self._value(line, names[0])]
        if not (line.startswith(b"*") and line.endswith(b"\r\n") and line[1:-2].isdigit()):
            raise ProtocolViolation("PARSER array expected (bulk format)")
        if int(line[1:-2]) != len(names):
            raise ProtocolViolation("PARSER wrong array size")
        return [self._value(await reader.readline(), name) for name in names]

    def _value(self, line: bytes, name: str) -> float | str:
        if name.startswith("!"):
            return self._string(line)
        if line.startswith(b":") and line.endswith(b"\r\n"):
            digits = line[1:-2]
            if digits.lstrip(b"-").isdigit():
                return float(int(digits))
        elif line.startswith(b"+"):
            text = self._string(line)
            if _FLOAT.match(text):
                return float(text)
        raise ProtocolViolation(f"PARSER unexpected parameter value format: {line[:80]!r}")


# --- InfluxDB line protocol over TCP -------------------------------------------------------


@dataclass(frozen=True)
class LinePoint:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, int | float | bool | str]
    timestamp: int


_INTEGER = re.compile(r"^-?\d+i$")
_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
_BOOLEANS |= {"f": False, "F": False, "false": False, "False": False, "FALSE": False}


def parse_line(line: str) -> LinePoint:
    """One line of InfluxDB line protocol, strictly: ``measurement[,k=v...] f=v[,f=v...] ts``.

    Escapes are the reference's: ``\\,`` and ``\\ `` in the measurement, those and ``\\=`` in
    keys and tag values, ``\\"`` and ``\\\\`` in string fields. A backslash before anything
    else, an empty tag value or an unsigned integer is refused (InfluxDB 1.x keeps such a
    backslash, cannot parse one before the separator, and refuses ``u``)."""
    scanner = _Scanner(line)
    measurement = scanner.token(",", " ", escapable=", ")
    tags: dict[str, str] = {}
    while scanner.take(","):
        key = scanner.token("=", escapable=",= ")
        scanner.expect("=")
        tags[key] = scanner.token(",", " ", escapable=",= ")
        if not key or not tags[key]:
            raise ProtocolViolation(f"empty tag key or value in {line!r}")
    scanner.expect(" ")
    fields: dict[str, int | float | bool | str] = {}
    while True:
        key = scanner.token("=", escapable=",= ")
        scanner.expect("=")
        fields[key] = scanner.field_value()
        if not scanner.take(","):
            break
    scanner.expect(" ")
    stamp = scanner.rest()
    if not measurement or not re.fullmatch(r"-?\d+", stamp):
        raise ProtocolViolation(f"bad measurement or timestamp in {line!r}")
    return LinePoint(measurement, tags, fields, int(stamp))


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def take(self, char: str) -> bool:
        if self.text.startswith(char, self.at):
            self.at += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.take(char):
            raise ProtocolViolation(f"{char!r} expected at {self.at} in {self.text!r}")

    def token(self, *stops: str, escapable: str) -> str:
        out = []
        while self.at < len(self.text) and self.text[self.at] not in stops:
            char = self.text[self.at]
            if char == "\\":
                following = self.text[self.at + 1 : self.at + 2]
                if not following or following not in escapable:
                    raise ProtocolViolation(f"stray backslash at {self.at} in {self.text!r}")
                char = following
                self.at += 1
            elif char == "=" and "=" in escapable and "=" not in stops:
                raise ProtocolViolation(f"unescaped '=' at {self.at} in {self.text!r}")
            out.append(char)
            self.at += 1
        return "".join(out)

    def field_value(self) -> int | float | bool | str:
        if self.take('"'):
            out = []
            while not self.take('"'):
                if self.at >= len(self.text):
                    raise ProtocolViolation(f"unterminated string in {self.text!r}")
                char = self.text[self.at]
                if char == "\\" and self.text[self.at + 1 : self.at + 2] in ('"', "\\"):
                    self.at += 1
                    char = self.text[self.at]
                out.append(char)
                self.at += 1
            return "".join(out)
        raw = self.token(",", " ", escapable="")
        if _INTEGER.match(raw):
            return int(raw[:-1])
        if raw in _BOOLEANS:
            return _BOOLEANS[raw]
        if _FLOAT.match(raw):
            return float(raw)
        raise ProtocolViolation(f"bad field value {raw!r} in {self.text!r}")

    def rest(self) -> str:
        rest, self.at = self.text[self.at :], len(self.text)
        return rest


class LineProtocolServer(ThreadedServer):
    """A line-protocol TCP listener (QuestDB's port 9009): newline-ended lines, parsed by
    :func:`parse_line`; on a bad line it records the error and hangs up, as QuestDB does."""

    def __init__(self, deferred: bool = False) -> None:
        super().__init__(deferred)
        self.points: list[LinePoint] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if not line.endswith(b"\n"):
                raise ProtocolViolation(f"line not ended by a newline: {line[:80]!r}")
            point = parse_line(line[:-1].decode("utf-8"))
            with self._lock:
                self.points.append(point)


# --- real server binaries (Debian's influxd, prometheus) ------------------------------------


@contextlib.contextmanager
def server_binary(
    name: str, argv: list[str], log_path: Path, health_url: str, status: int, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` (a real server) for the block, its output in ``log_path``, once
    ``health_url`` answers ``status``; a server that exits before that raises with the end of
    its log. Terminated (killed after 15 s) when the block ends."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            if proc.poll() is not None:
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}: {output}")
            try:
                with urllib.request.urlopen(health_url, timeout=1) as answer:
                    return bool(answer.status == status)
            except OSError:
                return False

        try:
            wait_for(healthy, timeout=timeout, what=f"{name} to answer {health_url}")
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- InfluxDB 1.x ----------------------------------------------------------------------------

INFLUXD = shutil.which("influxd")

_INFLUXDB_CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[monitor]
  store-enabled = false
[logging]
  level = "warn"
"""


class InfluxDB:
    """The real ``influxd`` (InfluxDB 1.x), its data in ``root``, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[InfluxDB]:
        assert INFLUXD is not None
        config = self.root / "influxdb.conf"
        config.write_text(
            _INFLUXDB_CONFIG.format(root=self.root, port=self.port, rpc_port=free_port())
        )
        argv = [INFLUXD, "-config", str(config)]
        log = self.root / "influxd.log"
        with server_binary("influxd", argv, log, f"{self.url}/ping", 204, timeout=30):
            yield self

    def query(self, database: str, q: str) -> dict[str, Any]:
        """Run InfluxQL ``q``; timestamps come back as nanoseconds."""
        data = urllib.parse.urlencode({"db": database, "q": q, "epoch": "ns"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as answer:
            result: dict[str, Any] = json.load(answer)
        return result

    def rows(self, database: str, measurement: str) -> list[dict[str, Any]]:
        """Every point of ``measurement``, each as a column -> value mapping."""
        result = self.query(database, f'SELECT * FROM "{measurement}"')["results"][0]
        rows = []
        for series in result.get("series", []):
            rows += [
                dict(zip(series["columns"], values, strict=True)) for values in series["values"]
            ]
        return rows
