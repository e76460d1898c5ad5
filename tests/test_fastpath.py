"""The fast path answers as the slow path does (issue 17): two real servers over one cache
directory, one with ``--fast-path`` and one without, get the same corpus of raw requests
(methods, preconditions, ranges, encodings, CORS origins, hosts of several sites, header
rules, protected and public paths, keys with escapes, HTTP/1.0, keep-alive, pipelining);
status, headers (but ``Date``) and bodies must be byte for byte the same, as must the log
lines and metrics records, and the fast path must have answered exactly the requests it
should. The two share the cache's disk (as workers do), so an answer's ``Expires`` and
``Age`` come from the same stored copy."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import pytest

from s3proxy import logging as log
from s3proxy.fastpath import FastPath
from s3proxy.record import RequestRecord
from tests.access_helpers import basic, htpasswd_line
from tests.conftest import proxy_config
from tests.servers import ProxyServer, S3Server, free_port
from tests.sink_servers import wait_for

PAGE = b"<!doctype html><p>" + b"s3proxy answers from the protocol. " * 120 + b"</p>\n"
OBJECTS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "index.html": (PAGE, {"ContentType": "text/html"}),
    "style.css": (b"p { color: #333 }\n" * 100, {"ContentType": "text/css"}),
    "logo.png": (bytes(range(256)) * 12, {"ContentType": "image/png"}),
    "a b/c%d+e.txt": (b"a key with escapes\n", {}),
    "\u00fc/\u00df.txt": (b"non-ascii key\n", {}),
    "empty.txt": (b"", {}),
    "moved.html": (b"gone", {"WebsiteRedirectLocation": "/index.html"}),
    "404.html": (b"<p>not here</p>", {"ContentType": "text/html"}),
    "docs/index.html": (b"<p>docs</p>" * 200, {"ContentType": "text/html"}),
    "docs/folder/a.txt": (b"listed\n", {}),
    "private/secret.txt": (b"for ann only\n", {}),
    "big.bin": (b"\x00\x01" * (768 * 1024), {"ContentType": "application/octet-stream"}),
}
_numbers = itertools.count()
TOKEN, CLEAR = "test-token", "/_proxy/_private/_cache/clear"
_GENERATED_ID = re.compile(rb"[0-9a-f]{22}")


@dataclass
class Pair:
    """Two servers over one cache directory: ``on`` answers fresh hits in the protocol."""

    on: ProxyServer
    off: ProxyServer
    s3: S3Server
    bucket: str
    records: dict[str, list[RequestRecord]] = field(default_factory=dict)
    logs: Path = Path()

    @property
    def fast(self) -> FastPath:
        fast = self.on.app.fastpath
        assert fast is not None
        return fast


@pytest.fixture(scope="module")
def pair(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """``www`` (the default: an error document, CORS for one origin, a header rule), ``docs``
    (a prefix) and ``guarded`` (Basic auth on /private/), all over one bucket."""
    bucket = f"fastpath-{next(_numbers)}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    for key, (body, extra) in OBJECTS.items():
        client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    tmp = tmp_path_factory.mktemp("fastpath")
    (tmp / "htpasswd").write_bytes(htpasswd_line("ann", "right"))
    (tmp / "sites.toml").write_text(
        f'[sites.www]\nhosts = ["www.test"]\ndefault = true\nbucket = "{bucket}"\n'
        'error_document = "404.html"\nallowed_origins = ["https://ok.test"]\n'
        '[[sites.www.headers]]\npaths = ["/*.css"]\nset = { "Cache-Control" = "public" }\n'
        f'[sites.docs]\nhosts = ["docs.test"]\nbucket = "{bucket}"\nprefix = "docs/"\n'
        "listing = true\n"
        f'[sites.guarded]\nhosts = ["guarded.test"]\nbucket = "{bucket}"\n'
        '[[sites.guarded.access]]\npaths = ["/private/*"]\nallow = "basic"\n'
        f'htpasswd = "{tmp / "htpasswd"}"\n'
    )
    config = proxy_config(
        s3,
        tmp / "cache",
        log_dir=str(tmp / "logs"),
        sites_file=str(tmp / "sites.toml"),
        trusted_proxies="127.0.0.1",
        auth_key=TOKEN,
    )
    log.configure(log_dir=str(tmp / "logs"))
    servers = []
    try:
        for fast in (True, False):
            servers.append(ProxyServer(config.replace(port=free_port(), fast_path=fast)).start())
        pair = Pair(*servers, s3, bucket, logs=tmp / "logs")
        for server in servers:
            for name, site in server.app.resources.sites().items():
                kept = pair.records.setdefault(f"{server.port}:{name}", [])
                site.recorder = SimpleNamespace(emit=kept.append)
        yield pair
    finally:
        for server in servers:
            server.stop()
        log.close()


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


def read_response(reader: BinaryIO, method: bytes) -> Response:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.rstrip(b"\r\n").partition(b":")
        headers.append((name.lower(), value.strip()))
    status = int(status_line.split()[1])
    fields = dict(headers)
    if method == b"HEAD" or status in (204, 304):
        body = b""
    elif fields.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int(reader.readline().split(b";")[0], 16):
            body += reader.read(size)
            reader.readline()
        reader.readline()
    else:
        body = reader.read(int(fields.get(b"content-length", b"0")))
    return Response(status, headers, body)


def exchange(port: int, requests: list[bytes]) -> tuple[list[Response], bool]:
    """Write ``requests`` at once on one connection (pipelined if several); read their
    responses, and whether the server ended the connection after the last one read."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(b"".join(requests))
        responses = []
        for request in requests:
            responses.append(read_response(reader, request.split(b" ", 1)[0]))
            if responses[-1].header(b"connection") == b"close":
                break
        sock.settimeout(0.5 if len(responses) < len(requests) else 10)
        closed = responses[-1].header(b"connection") == b"close" and reader.read() == b""
        return responses, closed


def request(
    target: str, host: str | None = "www.test", method: str = "GET", **fields: str
) -> bytes:
    """A raw request; ``fields`` are header fields (``_`` for ``-``), in order."""
    version = fields.pop("version", "1.1")
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in fields.items()]
    return ("\r\n".join([*lines, "", ""])).encode("utf-8")


# -- the corpus ----------------------------------------------------------------------------

ETAG = '"' + hashlib.md5(PAGE).hexdigest() + '"'  # S3's ETag of a single-part object
LOGO_ETAG = '"' + hashlib.md5(OBJECTS["logo.png"][0]).hexdigest() + '"'
LONG_AGO, ANN = "Sat, 01 Jan 2000 00:00:00 GMT", basic("ann", "right")
#: (id, request, whether the fast path answers it once warm)
CORPUS: list[tuple[str, bytes, bool]] = [
    ("get", request("/index.html"), True),
    ("get-gzip", request("/index.html", Accept_Encoding="gzip"), True),
    ("get-br", request("/index.html", Accept_Encoding="br;q=1, gzip;q=0.5"), True),
    ("get-two-ae", request("/index.html", Accept_Encoding="identity", accept_encoding="br"), True),
    ("head", request("/index.html", method="HEAD"), True),
    ("head-gzip", request("/index.html", method="HEAD", Accept_Encoding="gzip"), True),
    ("index", request("/"), True),
    ("query", request("/index.html?utm=1&x=%22"), True),
    ("header-rule", request("/style.css", Accept_Encoding="gzip"), True),
    ("cors-allowed", request("/style.css", Origin="https://ok.test"), True),
    ("cors-other", request("/style.css", Origin="https://evil.test"), True),
    ("binary", request("/logo.png", Accept_Encoding="gzip"), True),
    ("escapes", request("/a%20b/c%25d%2Be.txt"), True),
    ("non-ascii", request("/%C3%BC/%C3%9F.txt"), True),
    ("other-host-case", request("/index.html", host="WWW.Test.:80"), True),
    ("unknown-host", request("/index.html", host="nowhere.test"), True),
    ("prefix-site", request("/", host="docs.test"), True),
    ("forwarded-host", request("/", host="127.0.0.1", X_Forwarded_Host="docs.test"), True),
    ("forwarded-for", request("/logo.png", X_Forwarded_For="203.0.113.9, 127.0.0.1"), True),
    ("real-ip", request("/logo.png", X_Real_IP="198.51.100.7", User_Agent="UA/1"), True),
    ("request-id", request("/logo.png", X_Request_Id="from-the-proxy-1"), True),
    ("referer", request("/logo.png", Referer="https://example.com/?sig=1&a=b"), True),
    ("absolute-form", request("http://www.test/index.html"), True),
    ("http10", request("/index.html", host=None, version="1.0"), True),
    ("http10-host", request("/logo.png", version="1.0", Connection="keep-alive"), True),
    ("close", request("/logo.png", Connection="close"), True),
    ("empty", request("/empty.txt"), False),
    ("object-redirect", request("/moved.html"), False),
    ("error-document", request("/missing.html"), False),
    ("folder-redirect", request("/docs", Accept_Encoding="gzip"), False),
    ("if-none-match", request("/index.html", If_None_Match=ETAG), True),
    ("if-none-match-other", request("/index.html", If_None_Match='"x"'), True),
    ("if-modified-since", request("/logo.png", If_Modified_Since=LONG_AGO), True),
    ("if-match-fails", request("/logo.png", If_Match='"nope"'), True),
    ("range", request("/logo.png", Range="bytes=10-99"), True),
    ("range-suffix", request("/logo.png", Range="bytes=-5"), True),
    ("range-unsatisfiable", request("/logo.png", Range="bytes=9999-"), True),
    ("inm-gzip", request("/index.html", If_None_Match=ETAG, Accept_Encoding="gzip"), True),
    ("if-unmodified-since", request("/logo.png", If_Unmodified_Since=LONG_AGO), True),
    ("if-range", request("/logo.png", Range="bytes=0-9", If_Range=LOGO_ETAG), True),
    ("if-range-other", request("/logo.png", Range="bytes=0-9", If_Range='"x"'), True),
    ("head-range", request("/logo.png", method="HEAD", Range="bytes=0-9"), True),
    ("multipart", request("/logo.png", Range="bytes=0-9,20-29"), False),
    ("guarded-public-with-credentials", request("/logo.png", host="guarded.test", **ANN), True),
    ("large", request("/big.bin"), False),
    ("post", request("/index.html", method="POST", Content_Length="3") + b"abc", False),
    ("delete", request("/index.html", method="DELETE"), False),
    ("preflight", request("/style.css", method="OPTIONS", Origin="https://ok.test"), False),
    ("expect", request("/logo.png", Expect="100-continue"), False),
    ("management", request("/_proxy/nothing-here"), False),
    ("guarded-public", request("/index.html", host="guarded.test"), True),
    ("guarded-denied", request("/private/secret.txt", host="guarded.test"), False),
    ("guarded-allowed", request("/private/secret.txt", host="guarded.test", **ANN), True),
    ("traversal", request("/%2e%2e/index.html"), False),
    ("listing", request("/folder/", host="docs.test"), False),
    ("listing-json", request("/folder/", host="docs.test", Accept="application/json"), False),
]  # fmt: skip


def normalized(response: Response, other: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """``response`` without what may rightly differ from ``other``: ``Date``, a request id
    either server made, a multipart boundary, and ``Age`` one second on (the two were sent in
    turn)."""
    headers = []
    body = response.body
    boundary = re.search(rb"boundary=(\w+)", response.header(b"content-type") or b"")
    if boundary:  # a multipart body's boundary is random (RFC 9110 §14.6)
        body = body.replace(boundary.group(1), b"<boundary>")
    for name, value in response.headers:
        if name == b"date":
            continue
        if boundary:
            value = value.replace(boundary.group(1), b"<boundary>")
        if name == b"x-request-id" and _GENERATED_ID.fullmatch(value):
            value = b"<made here>"
        if name == b"age":
            theirs = other.header(b"age")
            assert theirs is not None and abs(int(value) - int(theirs)) <= 1
            value = b"<age>"
        headers.append((name, value))
    return response.status, headers, body


def both(pair: Pair, requests: list[bytes]) -> tuple[list[Response], list[Response], int]:
    """The responses of the slow server, of the fast one, and how many the fast path
    answered, for ``requests`` on one connection to each."""
    slow, slow_closed = exchange(pair.off.port, requests)
    before = pair.fast.answered
    fast, fast_closed = exchange(pair.on.port, requests)
    assert len(slow) == len(fast) and slow_closed == fast_closed
    for a, b in zip(slow, fast, strict=True):
        assert normalized(b, a) == normalized(a, b)
    return slow, fast, pair.fast.answered - before


def warm(pair: Pair, requests: list[bytes]) -> None:
    """A miss fills, a hit makes a variant, the next one leaves an answer in the memo. Each
    server is let finish its fills before the other is asked: a miss is answered before its
    entry is committed, and two fills of one key (one per server) would be two entries, whose
    Expires may differ by a second."""
    for _ in range(3):
        for raw in requests:
            for server in (pair.off, pair.on):
                exchange(server.port, [raw])
                hosting = server.app.resources.hosting
                wait_for(lambda h=hosting: h.served.idle(), what="the server's fills done")


@pytest.mark.parametrize(("raw", "answered"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_same_answers(pair: Pair, raw: bytes, answered: bool) -> None:
    """Once warm, each request gets the same answer from both servers, and the fast path
    answered it exactly when it is a plain fresh hit."""
    warm(pair, [raw])
    assert both(pair, [raw])[2] == int(answered)


def test_fields_only_the_log_reads_share_one_answer(pair: Pair) -> None:
    """An answer kept for one client serves another that differs only in what the log line
    or an access rule reads (user agent, referrer, addresses, credentials), alike."""
    warm(pair, [request("/logo.png", User_Agent="first")])
    others = [
        request("/logo.png", User_Agent="second", Referer="https://example.com/"),
        request("/logo.png", User_Agent="first", X_Real_IP="198.51.100.8", Cookie="a=b"),
        request("/logo.png", User_Agent="first", **ANN),
    ]
    asked = []
    for raw in [*others, *others]:  # each client again: its request line's parts are reused
        slow, fast, answered = both(pair, [raw])
        assert answered == 1
        asked.append((_id(fast[0]).decode(), raw))
    wait_for(lambda: all(rid in _request_lines(pair) for rid, _ in asked))
    lines = _request_lines(pair)
    for rid, raw in asked:  # each line says who asked it, not who asked before
        line, fields = lines[rid], raw.decode()
        assert f"User-Agent: {line['user_agent']}\r\n" in fields
        assert (line["referrer"] != "") == ("Referer:" in fields)
        assert (line["client_ip"] == "198.51.100.8") == ("X-Real-IP" in fields)


def test_a_failure_of_the_fast_path_falls_back_to_the_slow_one(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast path that fails before it writes leaves the request to the slow path, whole."""

    def broken(*_: Any) -> None:
        raise RuntimeError("injected")

    raw = request("/logo.png")
    warm(pair, [raw])
    monkeypatch.setattr(pair.fast, "_route", broken)
    slow, fast, answered = both(pair, [raw, raw])
    assert answered == 0 and [r.status for r in fast] == [200, 200]


def test_changes_of_the_cache_in_any_worker_reach_the_fast_path(pair: Pair) -> None:
    """A purge or a clear, in this server or in the other one over the same cache directory
    (another worker), makes the next request miss and get the new version; until then the
    fast path answers the stored one, as the slow path would."""
    raw = request("/changing.txt")

    def put(version: bytes) -> None:
        pair.s3.client().put_object(Bucket=pair.bucket, Key="changing.txt", Body=version)

    def get() -> tuple[bytes, int]:
        before = pair.fast.answered
        (response,), _ = exchange(pair.on.port, [raw])
        return response.body, pair.fast.answered - before

    put(b"one")
    warm(pair, [raw])
    put(b"two")
    assert get() == (b"one", 1)  # fresh for the TTL
    for server, query, version in (
        (pair.on, "?path=/changing.txt", b"two"),
        (pair.off, "?path=/changing.txt", b"three"),
        (pair.off, "", b"four"),
    ):
        put(version)
        clear = request(CLEAR + query, method="DELETE", Authorization=f"Bearer {TOKEN}")
        assert exchange(server.port, [clear])[0][0].status == 200
        assert get() == (version, 0)
        warm(pair, [raw])
        assert get() == (version, 1)


def test_keep_alive_and_pipelining(pair: Pair) -> None:
    """Requests pipelined on one connection, fast and slow mixed, are answered in order and
    alike; fast ones pipelined behind each other are all answered by the fast path; after a
    ``Connection: close`` answer nothing more is, on either server."""
    plain = [raw for _, raw, fast in CORPUS if fast and b"Connection:" not in raw]
    plain = [raw for raw in plain if b"HTTP/1.0" not in raw]
    warm(pair, plain)
    assert both(pair, plain)[2] == len(plain)
    slow_ones = [raw for _, raw, fast in CORPUS if not fast and raw.startswith(b"GET")]
    warm(pair, slow_ones)
    mixed = list(itertools.chain.from_iterable(zip(slow_ones, plain, strict=False)))
    tail = [request("/index.html", Connection="close"), request("/logo.png")]
    _, responses, _ = both(pair, [*mixed, *tail])
    assert len(responses) == len(mixed) + 1  # the last one is never answered
    _, responses, answered = both(pair, [plain[0], *tail])
    assert (len(responses), answered) == (2, 2)
    assert responses[-1].header(b"connection") == b"close"


def test_same_log_lines_and_records(pair: Pair) -> None:
    """A fast-path answer leaves the same request line and metrics record as the slow path's
    answer of the same request (but for times and the request id)."""
    plain = [raw for _, raw, fast in CORPUS if fast]
    warm(pair, plain)
    kept = {name: len(records) for name, records in pair.records.items()}
    ids: list[tuple[bytes, bytes]] = []
    for raw in plain:
        slow, quick, answered = both(pair, [raw])
        assert answered == 1
        ids.append((_id(slow[0]), _id(quick[0])))
    wait_for(lambda: all(slow.decode() in _request_lines(pair) for slow, _ in ids))
    lines = _request_lines(pair)
    for slow_id, fast_id in ids:
        if slow_id == fast_id:  # a trusted proxy's id: the lines are told apart by no field
            continue
        slow_line, fast_line = lines[slow_id.decode()], lines[fast_id.decode()]
        for line in (slow_line, fast_line):
            del line["ts"], line["duration_ms"], line["request_id"]
        assert fast_line == slow_line
    for name in ("www", "docs"):
        new = [
            [replace(r, timestamp=0, duration_us=0) for r in records[kept[f"{port}:{name}"] :]]
            for port in (pair.off.port, pair.on.port)
            for records in [pair.records[f"{port}:{name}"]]
        ]
        assert new[0] == new[1] and new[0]


def _id(response: Response) -> bytes:
    value = response.header(b"x-request-id")
    assert value is not None
    return value


def _request_lines(pair: Pair) -> dict[str, dict[str, Any]]:
    log.flush()
    lines = {}
    for path in pair.logs.iterdir():
        for text in path.read_text().splitlines():
            line = json.loads(text)
            if line["event"] == "request":
                lines[line["request_id"]] = line
    return lines


def test_a_granted_answer_is_replayed_only_to_whom_the_rule_grants(pair: Pair) -> None:
    """An answer a rule granted is kept with its rule: replayed to a request the rule's own
    check grants (the same credentials), never to one without them or with wrong ones, which
    the slow path answers (401), alike on both servers."""
    path = "/private/secret.txt"
    warm(pair, [request(path, host="guarded.test", **ANN)])
    assert both(pair, [request(path, host="guarded.test", **ANN)])[2] == 1
    wrong = basic("ann", "not her password")
    for raw in (request(path, host="guarded.test"), request(path, host="guarded.test", **wrong)):
        slow, _, answered = both(pair, [raw])
        assert answered == 0 and slow[0].status == 401
