"""The request line's fields and ``x-request-id``, through a real server and moto: what a
request sent (host, query, referrer, user agent), what was answered (encoding), and the id
that ties the line to the answer. Lines are read after the server stops: its shutdown
flushes them, and no request is still being accounted for then."""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.app import configure_logging
from tests.servers import Fault, ProxyServer, S3Server
from tests.test_logging import clean_logging  # noqa: F401 (autouse: unconfigures logging)

Put = Callable[..., None]
PAGE = b"<p>" + b"s3proxy serves websites. " * 200 + b"</p>"
TOKEN = "test-token"  # conftest's base_config
GENERATED = re.compile(r"[0-9a-f]{22}")


class Logged:
    """A proxy writing its logs to a directory of its own, in ``log_format``."""

    def __init__(self, start_proxy: Callable[..., ProxyServer], logs: Path, **overrides: Any):
        self.logs = logs
        self.proxy = start_proxy(log_dir=str(logs), **overrides)
        configure_logging(self.proxy.config.logs)
        self.client = httpx.Client(base_url=self.proxy.url, timeout=10)

    def get(self, path: str, **headers: str) -> httpx.Response:
        return self.client.get(path, headers=headers)

    def stop(self) -> list[str]:
        """Stop the server (its shutdown writes the buffered lines); the request lines."""
        self.client.close()
        self.proxy.stop()
        name = next(p for p in self.logs.iterdir() if not p.name.startswith("s3proxy-events"))
        return name.read_text().splitlines()

    def json_lines(self) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.stop()]
        return [line for line in lines if line["event"] == "request"]


@pytest.fixture
def logged(
    start_proxy: Callable[..., ProxyServer], tmp_path: Path
) -> Iterator[Callable[..., Logged]]:
    """``logged(**overrides)`` starts a :class:`Logged` proxy (its client closed at teardown,
    whatever the test's outcome)."""
    made: list[Logged] = []

    def start(**overrides: Any) -> Logged:
        made.append(Logged(start_proxy, tmp_path / "logs", **overrides))
        return made[-1]

    yield start
    for server in made:
        server.client.close()


def test_json_line_has_the_requests_host_query_referrer_agent_and_id(
    logged: Callable[..., Logged], put: Put
) -> None:
    """Every field of the line is filled from the request; its id is the answer's."""
    put("index.html", b"<p>hi</p>")
    server = logged()
    agent = {"user-agent": "UA/1"}
    response = server.get("/?utm=1&x=%22", referer="https://example.com/a", **agent)
    assert response.status_code == 200
    (line,) = server.json_lines()
    assert line["host"] == f"127.0.0.1:{server.proxy.port}"
    assert line["query"] == "utm=1&x=%22"
    assert line["referrer"] == "https://example.com/a"
    assert line["user_agent"] == "UA/1"
    assert line["encoding"] == ""
    assert line["request_id"] == response.headers["x-request-id"]
    assert GENERATED.fullmatch(line["request_id"])


def test_combined_line_has_the_query_referrer_and_agent(
    logged: Callable[..., Logged], put: Put
) -> None:
    """nginx's combined line: the request target with its query, then referrer and agent."""
    put("index.html", b"<p>hi</p>")
    server = logged(log_format="combined")
    server.get("/?q=1", referer="https://example.com/", **{"user-agent": 'curl "8"'})
    (line,) = server.stop()
    assert line.endswith('"GET /?q=1 HTTP/1.1" 200 9 "https://example.com/" "curl \\x228\\x22"'), (
        line
    )


@pytest.mark.parametrize(
    ("trusted", "sent", "kept"),
    [
        pytest.param(("127.0.0.0/8",), "edge-42.abc", True, id="trusted-proxy"),
        pytest.param(("10.0.0.0/8",), "edge-42.abc", False, id="untrusted-peer"),
        pytest.param((), "edge-42.abc", False, id="no-trusted-proxies"),
        pytest.param(("127.0.0.0/8",), "has space", False, id="not-a-token"),
        pytest.param(("127.0.0.0/8",), "x" * 129, False, id="too-long"),
    ],
)
def test_x_request_id_is_taken_only_from_a_trusted_proxy(
    logged: Callable[..., Logged],
    put: Put,
    trusted: tuple[str, ...],
    sent: str,
    kept: bool,
) -> None:
    """A sane X-Request-Id from a --trusted-proxies peer is answered and logged as is; any
    other is replaced by a generated one, on the site and on the management API alike."""
    put("index.html", b"<p>hi</p>")
    server = logged(trusted_proxies=trusted)
    answers = [server.get(path, **{"x-request-id": sent}) for path in ("/", "/_proxy/health")]
    lines = server.json_lines()
    assert [line["path"] for line in lines] == ["/", "/_proxy/health"]
    for response, line in zip(answers, lines, strict=True):
        assert response.status_code == 200
        assert line["request_id"] == response.headers["x-request-id"]
        if kept:
            assert response.headers["x-request-id"] == sent
        else:
            assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_every_answer_carries_a_new_id(logged: Callable[..., Logged], put: Put) -> None:
    """Hits, misses, 304s, 404s, redirects, 405s, 416s, CORS preflights and the management API
    all answer with an x-request-id, each a new one, each in its request's line."""
    put("index.html", b"<p>hi</p>")
    put("docs/index.html", b"<p>docs</p>")
    server = logged(allowed_origins=("*",))
    first = server.get("/")
    etag = first.headers["etag"]
    answers = [
        first,
        server.get("/"),
        server.get("/", **{"if-none-match": etag}),
        server.get("/missing.html"),
        server.get("/docs"),
        server.get("/", range="bytes=100-200"),
        server.client.post("/"),
        server.client.options("/", headers={"origin": "https://a.example"}),
        server.get("/_proxy/_private/_cache/stats", authorization=f"Bearer {TOKEN}"),
        server.get("/_proxy/nothing-here"),
    ]
    assert [r.status_code for r in answers] == [200, 200, 304, 404, 301, 416, 405, 204, 200, 404]
    ids = [r.headers["x-request-id"] for r in answers]
    assert len(set(ids)) == len(ids)
    lines = server.json_lines()
    assert [line["request_id"] for line in lines] == ids
    assert [line["status"] for line in lines] == [r.status_code for r in answers]


def test_a_crash_answers_500_with_the_request_id(
    logged: Callable[..., Logged], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception before the answer started is our 500 with the request's id
    (and the site's CORS headers), in its line and in an event naming the exception."""
    from s3proxy.site import Site

    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Site, "_answer", broken)
    server = logged(allowed_origins=("https://a.example",))
    r = server.get("/index.html", origin="https://a.example")
    assert r.status_code == 500 and r.text == "Internal Server Error\n"
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert GENERATED.fullmatch(r.headers["x-request-id"])
    lines = [json.loads(line) for line in server.stop()]
    (line,) = [line for line in lines if line["event"] == "request"]
    assert (line["status"], line["request_id"]) == (500, r.headers["x-request-id"])
    (crash,) = [line for line in lines if line["event"] == "request_crashed"]
    assert crash["request_id"] == r.headers["x-request-id"]
    assert crash["exc"] == "RuntimeError: a bug"


def test_an_object_replaced_mid_request_is_logged_as_sent(
    logged: Callable[..., Logged], s3: S3Server, bucket: str, put: Put
) -> None:
    """A range of an object too large to store, replaced between the proxy's two GETs, is
    answered whole from the new version: the line's encoding is the new version's."""
    key = "big.txt"
    put(key, b"a" * 4096, ContentType="text/plain")
    server = logged(cache_max_object_size=1024)
    # The second GetObject (the range, If-Match the first's ETag) waits in front of S3 while
    # the object is replaced.
    s3.faults += [Fault(key), Fault(key, delay=1.0)]
    result: list[httpx.Response] = []
    download = threading.Thread(
        target=lambda: result.append(server.get(f"/{key}", range="bytes=0-9"))
    )
    download.start()
    deadline = time.monotonic() + 10
    while download.is_alive() and s3.gets(bucket, key) < 2:
        assert time.monotonic() < deadline, s3.requests
        time.sleep(0.01)
    new = gzip.compress(b"b" * 4096)
    put(key, new, ContentType="text/plain", ContentEncoding="gzip")
    download.join(timeout=15)
    (r,) = result
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.content == b"b" * 4096
    (line,) = server.json_lines()
    assert line["encoding"] == "gzip"


def test_management_requests_have_one_line_each_without_the_token(
    logged: Callable[..., Logged], put: Put
) -> None:
    """/_proxy/ requests are logged like the site's: method, path, query, status and bytes as
    sent; the token is in no line."""
    put("index.html", b"<p>hi</p>")
    server = logged()
    purge = server.client.delete(
        "/_proxy/_private/_cache/clear",
        params={"path": "/index.html"},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    denied = server.get("/_proxy/_private/_cache/stats", authorization="Bearer wrong")
    raw = server.stop()
    assert TOKEN not in "\n".join(raw)
    lines = [line for line in map(json.loads, raw) if line["event"] == "request"]
    assert [(line["method"], line["path"], line["query"], line["status"]) for line in lines] == [
        ("DELETE", "/_proxy/_private/_cache/clear", "path=%2Findex.html", 200),
        ("GET", "/_proxy/_private/_cache/stats", "", 403),
    ]
    assert [line["bytes"] for line in lines] == [len(purge.content), len(denied.content)]
    assert all(line["cache"] == "-" for line in lines)


def test_encoding_is_what_was_sent(logged: Callable[..., Logged], put: Put) -> None:
    """The line's encoding is the Content-Encoding sent: the gzip variant we made, the
    object's own (stored gzipped in S3), or none."""
    put("page.html", PAGE)
    put("app.js", gzip.compress(PAGE), ContentType="application/javascript", ContentEncoding="gzip")
    server = logged()
    variant = server.get("/page.html", **{"accept-encoding": "gzip"})
    identity = server.get("/page.html", **{"accept-encoding": "identity"})
    stored = server.get("/app.js", **{"accept-encoding": "identity"})
    assert [r.headers.get("content-encoding") for r in (variant, identity, stored)] == [
        "gzip",
        None,
        "gzip",
    ]
    assert [line["encoding"] for line in server.json_lines()] == ["gzip", "", "gzip"]
