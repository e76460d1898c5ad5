"""Request heads over :data:`s3proxy.protocol.MAX_HEADER_SIZE` get 431 and the connection
ends (RFC 6585 §5); heads within it are served. Raw HTTP over sockets to the ``s3proxy``
command, served in-process and by ``--threads 2`` workers, in front of moto."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from s3proxy.protocol import MAX_HEADER_SIZE
from tests.servers import Fault, ProxyProcess, S3Server, cli_args, free_port

BODY = b"a small object\n"
KIB = 1024


@dataclass
class Served:
    port: int
    log_dir: Path


@pytest.fixture(scope="module", params=["1", "2"], ids=["in-process", "workers"])
def served(
    request: pytest.FixtureRequest, s3: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The ``s3proxy`` command with ``--threads 1`` or ``2``, serving ``/small.txt`` and
    ``/slow.txt``."""
    bucket = f"heads-{request.param}"
    s3.client().create_bucket(Bucket=bucket)
    for key in ("small.txt", "slow.txt"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=BODY)
    tmp = tmp_path_factory.mktemp("heads")
    port = free_port()
    args = cli_args(s3, bucket, str(tmp / "cache"), port, "--threads", request.param)
    proxy = ProxyProcess([*args, "--dir", str(tmp / "logs")], {}, port).wait_ready()
    try:
        yield Served(port, tmp / "logs")
    finally:
        proxy.kill()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One client connection: raw requests written, responses read in order."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader: BinaryIO = self.sock.makefile("rb")

    def send(self, data: bytes, piece: int | None = None) -> None:
        """Write ``data`` at once, or in ``piece``-byte writes a few milliseconds apart (so
        the server gets it in several reads)."""
        if piece is None:
            self.sock.sendall(data)
            return
        for start in range(0, len(data), piece):
            self.sock.sendall(data[start : start + piece])
            time.sleep(0.005)

    def response(self) -> Response:
        status_line = self.reader.readline()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.reader.read(int(headers.get("content-length", "0")))
        return Response(int(status_line.split()[1]), headers, body)

    def at_eof(self) -> bool:
        """The server ended the connection cleanly (FIN, not a reset, nothing more sent)."""
        return self.reader.read() == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture
def connect(served: Served) -> Iterator[Callable[[], Connection]]:
    """``connect()`` opens a connection to the server; all are closed at teardown."""
    opened: list[Connection] = []

    def open_connection() -> Connection:
        connection = Connection(served.port)
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        connection.close()


def get(size: int, path: str = "/small.txt", filler: bytes = b"a") -> bytes:
    """A GET whose head (request line, header lines, blank line) is exactly ``size`` bytes,
    padded with ~1 KiB ``x-filler-N`` headers made of ``filler``."""
    head = f"GET {path} HTTP/1.1\r\nhost: test\r\n".encode()
    lines = []
    room = size - len(head) - 2
    number = 0
    while room > 0:
        prefix = f"x-filler-{number}: ".encode()
        value = min(KIB, room - len(prefix) - 2)
        assert value >= 1, "no room for one more header line"
        if room - (len(prefix) + value + 2) < 16:  # too little left for another line
            value = room - len(prefix) - 2
        lines.append(prefix + filler * value + b"\r\n")
        room -= len(lines[-1])
        number += 1
    request = head + b"".join(lines) + b"\r\n"
    assert len(request) == size
    return request


def test_oversized_head_gets_431_and_the_connection_ends(connect: Callable[[], Connection]) -> None:
    """A 100 KiB header block: 431 with a short text body and connection: close, then EOF."""
    connection = connect()
    connection.send(get(100 * KIB))
    response = connection.response()
    assert response.status == 431
    assert response.headers["connection"] == "close"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.body == b"Request header fields too large.\n"
    assert connection.at_eof()


@pytest.mark.parametrize("piece", [None, 8 * KIB], ids=["one-write", "8KiB-writes"])
def test_head_within_the_limit_is_served(
    connect: Callable[[], Connection], piece: int | None
) -> None:
    """A 60 KiB header block, and one of exactly the limit, are served (200)."""
    for size in (60 * KIB, MAX_HEADER_SIZE):
        connection = connect()
        connection.send(get(size), piece)
        response = connection.response()
        assert (response.status, response.body) == (200, BODY)


@pytest.mark.parametrize("piece", [None, 8 * KIB], ids=["one-write", "8KiB-writes"])
def test_one_byte_past_the_limit_gets_431(
    connect: Callable[[], Connection], piece: int | None
) -> None:
    """The limit counts the whole head: one byte more than MAX_HEADER_SIZE is refused."""
    connection = connect()
    connection.send(get(MAX_HEADER_SIZE + 1), piece)
    assert connection.response().status == 431
    assert connection.at_eof()


def test_large_body_is_not_counted(connect: Callable[[], Connection]) -> None:
    """A small head with a 200 KiB body, sent in one write: the body is no header (405)."""
    body = b"b" * (200 * KIB)
    head = f"POST /small.txt HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n\r\n"
    connection = connect()
    connection.send(head.encode() + body)
    assert connection.response().status == 405


def test_keep_alive_then_oversized_head(connect: Callable[[], Connection]) -> None:
    """On one connection: a normal request is served, the next one, oversized, gets 431."""
    connection = connect()
    connection.send(get(200))
    assert connection.response().status == 200
    connection.send(get(100 * KIB), piece=16 * KIB)
    assert connection.response().status == 431
    assert connection.at_eof()


def test_pipelined_oversized_head_waits_for_the_owed_response(
    connect: Callable[[], Connection], s3: S3Server
) -> None:
    """A 1 MiB head pipelined behind a request S3 is slow to answer: its 200 comes first,
    whole, then the 431 (responses go in request order, RFC 9112 §9.3.2)."""
    s3.faults.append(Fault(suffix="/slow.txt", delay=0.5))
    connection = connect()
    connection.send(get(200, path="/slow.txt") + get(1024 * KIB))
    first = connection.response()
    assert (first.status, first.body) == (200, BODY)
    assert connection.response().status == 431
    assert connection.at_eof()


def test_other_connections_keep_being_served(connect: Callable[[], Connection]) -> None:
    """A refusal touches only its own connection: an open one and new ones still get 200."""
    kept = connect()
    kept.send(get(200))
    assert kept.response().status == 200
    refused = connect()
    refused.send(get(100 * KIB))
    assert refused.response().status == 431
    kept.send(get(200))
    assert kept.response().status == 200
    for _ in range(3):
        fresh = connect()
        fresh.send(get(200))
        response = fresh.response()
        assert (response.status, response.body) == (200, BODY)


def test_refusal_is_one_request_line_without_headers(
    connect: Callable[[], Connection], served: Served
) -> None:
    """The 431 is logged as one request line (method, path, status); no header value."""
    connection = connect()
    connection.send(get(100 * KIB, path="/refused-431.txt?q=1", filler=b"s"))
    assert connection.response().status == 431
    lines = _log_lines(served.log_dir, "/refused-431.txt")
    assert len(lines) == 1
    line = lines[0]
    assert (line["event"], line["method"], line["status"]) == ("request", "GET", 431)
    assert line["client_ip"] == "127.0.0.1"
    assert "x-filler" not in json.dumps(line) and "sss" not in json.dumps(line)


def _log_lines(log_dir: Path, path: str, timeout: float = 5.0) -> list[dict[str, object]]:
    """The request lines for ``path``, once some are written (lines are buffered ~1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [
            json.loads(text)
            for file in sorted(log_dir.glob("*.log"))
            for text in file.read_text().splitlines()
        ]
        found = [line for line in lines if line.get("path") == path]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("threads", ["1", "2"], ids=["in-process", "workers"])
def test_max_header_size_sets_the_bound(threads: str, s3: S3Server, tmp_path: Path) -> None:
    """``--max-header-size 8k`` applies in-process and in every ``--threads`` worker: an
    8 KiB head is served, one byte more gets 431."""
    bucket = f"heads-option-{threads}"
    s3.client().create_bucket(Bucket=bucket)
    s3.client().put_object(Bucket=bucket, Key="small.txt", Body=BODY)
    port = free_port()
    args = cli_args(s3, bucket, str(tmp_path / "cache"), port, "--threads", threads)
    proxy = ProxyProcess([*args, "--max-header-size", "8k"], {}, port).wait_ready()
    try:
        for _ in range(4):  # new connections, whichever worker accepts them
            within, past = Connection(port), Connection(port)
            try:
                within.send(get(8 * KIB))
                assert within.response().status == 200
                past.send(get(8 * KIB + 1))
                assert past.response().status == 431
            finally:
                within.close()
                past.close()
    finally:
        proxy.kill()
