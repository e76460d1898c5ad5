"""Strict request heads (RFC 9112 §3.2, RFC 9110 §9.1, RFC 6585 §5) and slow clients: raw
HTTP over sockets to the ``s3proxy`` command in front of moto. Host must be there once and
valid (else 400), more than ``--max-header-fields`` fields get 431, an unknown method 501;
a head slower than ``--header-timeout`` gets 408, connections past ``--max-connections``
503, and trickling clients do not keep others from being served."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ProxyProcess, S3Server, cli_args, free_port
from tests.test_protocol import BODY, Connection, _log_lines

HEADER_TIMEOUT = 2.0  # seconds: short, so the tests that wait for it are short too


@dataclass
class Served:
    port: int
    pid: int
    log_dir: Path


def start(s3: S3Server, tmp: Path, name: str, *extra: str) -> tuple[ProxyProcess, Served]:
    """``s3proxy`` serving ``/small.txt`` from a new bucket, logging to ``tmp/logs``; one
    process unless ``extra`` has ``--threads``."""
    bucket = f"strict-{name}"
    s3.client().create_bucket(Bucket=bucket)
    s3.client().put_object(Bucket=bucket, Key="small.txt", Body=BODY)
    port = free_port()
    # One process unless ``extra`` says otherwise (the default is one worker per CPU): the
    # connection cap and the descriptor count are per process.
    logs = ("--dir", str(tmp / "logs"))
    args = cli_args(s3, bucket, str(tmp / "cache"), port, "--threads", "1", *logs, *extra)
    proxy = ProxyProcess(args, {}, port).wait_ready()
    return proxy, Served(port, proxy.proc.pid, tmp / "logs")


@pytest.fixture(scope="module")
def served(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One process (``--threads 1``), a 2 s header timeout, room for 1,000 connections."""
    extra = ("--header-timeout", str(HEADER_TIMEOUT), "--max-connections", "1000")
    proxy, served = start(s3, tmp_path_factory.mktemp("strict"), "main", *extra)
    try:
        yield served
    finally:
        proxy.kill()


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send ``request`` on a new connection: (status, headers, body, ended afterwards)."""
    connection = Connection(port)
    try:
        connection.send(request)
        response = connection.response()
        ended = response.headers.get("connection") == "close" and connection.at_eof()
        return response.status, response.headers, response.body, ended
    finally:
        connection.close()


def status_of(port: int, request: bytes) -> int:
    return exchange(port, request)[0]


def head(*lines: str, request_line: str = "GET /small.txt HTTP/1.1") -> bytes:
    return "\r\n".join([request_line, *lines, "", ""]).encode("latin-1")


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([], id="no-host"),
        pytest.param(["Host: a.example", "Host: a.example"], id="two-hosts"),
        pytest.param(["Host: a.example", "Accept: */*", "HOST: b.example"], id="two-hosts-apart"),
        pytest.param(["Host: a b"], id="space"),
        pytest.param(["Host: a.example/path"], id="slash"),
        pytest.param(["Host: user@a.example"], id="userinfo"),
        pytest.param(["Host: a.example:80x"], id="bad-port"),
        pytest.param(["Host: [::1"], id="open-bracket"),
        pytest.param(["Host: a%zz"], id="bad-percent"),
    ],
)
def test_missing_repeated_or_invalid_host_gets_400(served: Served, lines: list[str]) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request without Host, with two, or with a value that is not
    uri-host [":" port] gets 400, and the connection ends."""
    status, headers, body, ended = exchange(served.port, head(*lines))
    assert status == 400
    assert body == b"Missing, repeated or invalid Host header field.\n"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert ended


@pytest.mark.parametrize(
    "host",
    ["a.example", "a.example:8080", "127.0.0.1:1", "[::1]:80", "[v1.x]", "", "a%41.example:"],
)
def test_valid_host_is_served(served: Served, host: str) -> None:
    """Names, IPv4 and IP-literal hosts, with or without a port, and an empty value (RFC
    9112 §3.2: a target without authority) are served."""
    status, _, body, _ = exchange(served.port, head(f"Host: {host}"))
    assert (status, body) == (200, BODY)


def test_http_1_0_needs_no_host_but_not_two(served: Served) -> None:
    """HTTP/1.0 predates Host: served without one; two are still refused (§3.2 says any)."""
    assert status_of(served.port, head(request_line="GET /small.txt HTTP/1.0")) == 200
    two = head("Host: a", "Host: b", request_line="GET /small.txt HTTP/1.0")
    assert status_of(served.port, two) == 400


def test_header_field_count_is_bounded(served: Served) -> None:
    """Apache's default: 100 header fields (Host among them) are served, 101 get 431."""
    fillers = [f"X-Filler-{n}: {n}" for n in range(99)]
    assert status_of(served.port, head("Host: a", *fillers)) == 200
    status, _, body, ended = exchange(served.port, head("Host: a", *fillers, "X-One-More: 1"))
    assert (status, body, ended) == (431, b"Too many request header fields.\n", True)


@pytest.mark.parametrize("method", ["BREW", "get", "FOO-BAR"])
def test_unknown_method_gets_501(served: Served, method: str) -> None:
    """RFC 9110 §9.1: a method the server does not know gets 501, not the parser's 400
    (methods are case-sensitive: ``get`` is not GET)."""
    status, _, body, ended = exchange(
        served.port, head("Host: a", request_line=f"{method} /small.txt HTTP/1.1")
    )
    assert (status, body, ended) == (501, b"Method not implemented.\n", True)


@pytest.mark.parametrize("method", ["PUT", "PROPFIND", "QUERY"])
def test_known_unserved_method_gets_405_with_allow(served: Served, method: str) -> None:
    """A method HTTP defines but a static site does not serve: 405 with Allow."""
    status, headers, _, _ = exchange(
        served.port,
        head("Host: a", "Content-Length: 0", request_line=f"{method} /small.txt HTTP/1.1"),
    )
    assert status == 405
    assert "GET" in headers["allow"]


def test_garbage_is_400_not_501(served: Served) -> None:
    """Bytes that do not begin with a token and a space are no request at all (here the
    start of a TLS handshake): 400."""
    assert status_of(served.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 4) == 400


def test_bad_head_pipelined_after_a_good_one(served: Served) -> None:
    """On one connection, a good request then one without Host, sent together: 200 (whole)
    and then the 400, in order, and the connection ends."""
    connection = Connection(served.port)
    try:
        connection.send(head("Host: a") + head())
        first = connection.response()
        assert (first.status, first.body) == (200, BODY)
        assert connection.response().status == 400
        assert connection.at_eof()
    finally:
        connection.close()


def test_unknown_method_is_logged_as_one_request_line(served: Served) -> None:
    """A refusal is logged as one request line, with the unknown method and the request id
    its answer carries."""
    _, headers, _, _ = exchange(
        served.port, head("Host: a", request_line="BREW-X /unknown-method.txt HTTP/1.1")
    )
    assert re.fullmatch(r"[0-9a-f]{22}", headers["x-request-id"])
    deadline = time.monotonic() + 10  # lines are buffered ~1 s; other refusals log "-" too
    while not (lines := [x for x in _log_lines(served.log_dir, "-") if x["method"] == "BREW-X"]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [(line["method"], line["status"]) for line in lines] == [("BREW-X", 501)]
    assert lines[0]["request_id"] == headers["x-request-id"]


def test_slow_head_gets_408(served: Served) -> None:
    """A head begun but not finished within the header timeout gets 408 and the connection
    ends, though bytes kept coming (the timeout bounds the whole head, not each read)."""
    connection = Connection(served.port)
    try:
        connection.send(b"GET /small.txt HTTP/1.1\r\nHost: a\r\n")
        deadline = time.monotonic() + HEADER_TIMEOUT * 3
        connection.sock.settimeout(0.2)
        response = b""
        while not response and time.monotonic() < deadline:  # trickle until answered
            try:
                connection.sock.sendall(b"X-Slow: 1\r\n")
                response = connection.sock.recv(4096)
            except TimeoutError:
                continue
        assert response.startswith(b"HTTP/1.1 408 ")
        assert b"connection: close" in response
    finally:
        connection.close()


def test_silent_connection_is_closed_without_a_response(served: Served) -> None:
    """A connection that sends nothing within the header timeout is closed, unanswered."""
    connection = Connection(served.port)
    try:
        assert connection.at_eof()  # the socket's own timeout (10 s) bounds the wait
    finally:
        connection.close()


def test_kept_alive_connection_is_not_timed_out_while_between_requests(served: Served) -> None:
    """The header timeout runs while a head is awaited: a request after a pause shorter than
    the keep-alive timeout, on a connection older than the header timeout, is served."""
    connection = Connection(served.port)
    try:
        started = time.monotonic()
        while time.monotonic() - started < HEADER_TIMEOUT * 2:
            connection.send(head("Host: a"))
            assert connection.response().status == 200
            time.sleep(HEADER_TIMEOUT / 2)
    finally:
        connection.close()


def test_slowloris_does_not_keep_others_from_being_served(served: Served) -> None:
    """300 connections trickling a head byte by byte: other clients are served meanwhile,
    every trickler gets 408 once the header timeout passes, and the process's open
    descriptors come back down."""
    before = _open_descriptors(served.pid)
    tricklers = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(300)]
    try:
        for sock in tricklers:
            sock.sendall(b"GET /small.txt HTTP/1.1\r\nHost: a\r\n")
            sock.setblocking(False)
        answered: dict[int, bytes] = {}
        deadline = time.monotonic() + HEADER_TIMEOUT * 10
        served_meanwhile = 0
        while len(answered) < len(tricklers) and time.monotonic() < deadline:
            for number, sock in enumerate(tricklers):
                if number in answered:
                    continue
                try:
                    answered[number] = sock.recv(4096)
                except BlockingIOError:
                    sock.send(b"X")  # one more byte of a header name
            status, _, body, _ = exchange(served.port, head("Host: a"))
            assert (status, body) == (200, BODY)
            served_meanwhile += 1
        assert served_meanwhile >= 2
        assert len(answered) == len(tricklers)
        assert all(reply.startswith(b"HTTP/1.1 408 ") for reply in answered.values())
    finally:
        for sock in tricklers:
            sock.close()
    deadline = time.monotonic() + 10  # lingering closes end within 2 s
    while _open_descriptors(served.pid) > before + 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_descriptors(served.pid) <= before + 20


def test_connections_past_the_cap_get_503(s3: S3Server, tmp_path: Path) -> None:
    """``--max-connections 5``: with five connections open (each sending a head slowly), a
    sixth gets 503 at once; when one of the five closes, a new one is served again."""
    proxy, served = start(s3, tmp_path, "cap", "--max-connections", "5")
    kept: list[Connection] = []
    try:
        assert status_of(served.port, head("Host: a")) == 200
        for _ in range(5):
            kept.append(Connection(served.port))
            kept[-1].send(b"GET /small.txt HTTP/1.1\r\n")  # the header timeout is 60 s
        status, _, body, ended = exchange(served.port, head("Host: a"))
        assert (status, body, ended) == (503, b"Too many connections.\n", True)
        kept.pop().close()
        deadline = time.monotonic() + 10  # the server sees the close a moment later
        while (status := status_of(served.port, head("Host: a"))) == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status == 200
    finally:
        for connection in kept:
            connection.close()
        proxy.kill()


def test_options_reach_every_worker(s3: S3Server, tmp_path: Path) -> None:
    """``--threads 2``: each worker refuses a fourth header field (``--max-header-fields
    3``) and times out a head after ``--header-timeout``."""
    proxy, served = start(
        s3, tmp_path, "workers", "--threads", "2", "--max-header-fields", "3",
        "--header-timeout", "1",
    )  # fmt: skip
    try:
        for _ in range(4):  # new connections, whichever worker accepts them
            assert status_of(served.port, head("Host: a", "A: 1", "B: 2")) == 200
            assert status_of(served.port, head("Host: a", "A: 1", "B: 2", "C: 3")) == 431
            status, _, _, _ = exchange(served.port, b"GET /small.txt HTTP/1.1\r\nHost: a\r\n")
            assert status == 408
    finally:
        proxy.kill()


def test_descriptor_limit_too_low_fails_at_startup(s3: S3Server, tmp_path: Path) -> None:
    """A hard limit on open files below ``--max-connections`` plus a reserve: the command
    fails at once with a message that names the option, instead of failing under load."""
    import subprocess
    import sys

    port = free_port()
    args = cli_args(s3, "strict-low", str(tmp_path / "cache"), port, "--max-connections", "1000")
    done = subprocess.run(
        ["prlimit", "--nofile=512:512", sys.executable, "-m", "s3proxy", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--max-connections 1000 needs 1256 open files" in done.stderr + done.stdout


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
