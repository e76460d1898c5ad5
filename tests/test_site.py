"""The website end to end: real s3proxy under uvicorn, real moto S3, real HTTP clients."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import gzip
import math
import random
import socket
import time
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.cache import object_hash
from tests.servers import Fault, ProxyServer, S3Server
from tests.sink_servers import wait_for

Put = Callable[..., None]
StartProxy = Callable[..., ProxyServer]

TOKEN = "test-token"  # the auth_key of conftest's base_config
CLEAR = "/_proxy/_private/_cache/clear"
# Text that only S3's own error documents or a Python traceback would contain.
LEAKS = ("<?xml", "<Error>", "RequestId", "HostId", "NoSuchKey", "Traceback", 'File "')


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


BIG = random_bytes(300_000, seed=1)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


def raw_request(
    server: ProxyServer, method: str, target: bytes, headers: dict[str, str] | None = None
) -> RawResponse:
    """Send ``target`` byte for byte (no client-side normalisation) and read until close."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{k}: {v}".encode() for k, v in (headers or {}).items()]
    lines += [b"Connection: close", b"", b""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = []
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.append((name.strip().lower(), value.strip()))
    response = RawResponse(int(status_line.split()[1]), parsed, body)
    if response.header("transfer-encoding") == "chunked":
        response.body = _dechunk(body)
    return response


def _dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


@contextlib.contextmanager
def client(server: ProxyServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


def assert_no_leaks(headers: Any, body: bytes, bucket: str) -> None:
    """No S3 header, server banner, S3 error text, bucket name or traceback reaches clients."""
    names = [name.lower() for name in headers.keys()]
    assert not [n for n in names if n.startswith("x-amz-")]
    assert "server" not in names
    text = body.decode("utf-8", "replace")
    assert bucket not in text
    for leak in LEAKS:
        assert leak not in text


def s3_head(s3: S3Server, bucket: str, key: str) -> dict[str, Any]:
    head: dict[str, Any] = s3.client().head_object(Bucket=bucket, Key=key)
    return head


def http_date(dt: Any) -> str:
    return email.utils.formatdate(dt.timestamp(), usegmt=True)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/byteranges body: (headers, bytes) each, in order."""
    kind, _, params = content_type.partition(";")
    assert kind.strip() == "multipart/byteranges"
    boundary = params.strip().removeprefix("boundary=").strip('"').encode()
    delimiter = b"\r\n--" + boundary
    assert body.startswith(delimiter + b"\r\n")
    assert body.endswith(delimiter + b"--\r\n")
    pieces = body[: -len(b"--\r\n")].split(delimiter)
    assert pieces[0] == b"" and pieces[-1] == b""
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, sep, data = piece[2:].partition(b"\r\n\r\n")
        assert sep
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, data))
    return parts


# --- 200 and its headers ---------------------------------------------------------------------


def test_get_passes_s3_representation_headers(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client
) -> None:
    """A 200 carries S3's content-type, etag, last-modified, expires, cache-control,
    disposition, language and encoding, and the object's length, on the miss and the hit."""
    text = b"<p>" + b"bonjour " * 200 + b"</p>"
    compressed = gzip.compress(text)
    expires = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    put(
        "page.html",
        compressed,
        ContentType="text/html; charset=utf-8",
        CacheControl="public, max-age=60",
        ContentDisposition='inline; filename="page.html"',
        ContentLanguage="fr",
        ContentEncoding="gzip",
        Expires=expires,
    )
    head = s3_head(s3, bucket, "page.html")
    for _ in range(2):  # the first answer streams the fill, the second comes from the cache
        r = http.get("/page.html")
        assert r.status_code == 200
        assert r.content == text  # httpx undid the gzip content-coding
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["etag"] == head["ETag"]
        assert r.headers["last-modified"] == http_date(head["LastModified"])
        assert email.utils.parsedate_to_datetime(r.headers["expires"]) == expires
        assert r.headers["cache-control"] == "public, max-age=60"
        assert r.headers["content-disposition"] == 'inline; filename="page.html"'
        assert r.headers["content-language"] == "fr"
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-length"] == str(len(compressed))
        assert_no_leaks(r.headers, r.content, bucket)
    assert s3.gets(bucket, "page.html") == 1


def test_default_cache_control_and_expires_follow_the_ttl(
    bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """Without S3 caching headers, cache-control is max-age=<ttl> and expires is now + ttl."""
    put("plain.txt", b"plain")
    with client(start_proxy(ttl=1234)) as c:
        before = time.time()
        r = c.get("/plain.txt")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "max-age=1234"
    expires = email.utils.parsedate_to_datetime(r.headers["expires"]).timestamp()
    assert before + 1234 - 5 <= expires <= time.time() + 1234 + 5


CONTENT_TYPES = [
    # (id, key, type stored in S3 or None, type served)
    ("css-guessed", "site.css", None, "text/css; charset=utf-8"),
    ("png-guessed", "logo.png", None, "image/png"),
    ("json-guessed", "data.json", None, "application/json; charset=utf-8"),
    ("binary-octet-stream", "b/site.css", "binary/octet-stream", "text/css; charset=utf-8"),
    ("application-octet-stream", "a/logo.png", "application/octet-stream", "image/png"),
    ("unknown-extension", "blob.unknownext", None, "application/octet-stream"),
    ("s3-type-wins", "t/site.css", "text/plain", "text/plain"),
]


def test_content_type(bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests) -> None:
    """S3's content-type is kept unless it is generic; then it is guessed from the extension."""
    for case, key, stored, served in CONTENT_TYPES:
        with subtests.test(case):
            put(key, b"x", **({"ContentType": stored} if stored else {}))
            assert http.get("/" + key).headers["content-type"] == served  # miss
            assert http.get("/" + key).headers["content-type"] == served  # hit


def test_head_has_get_headers_and_no_body(
    s3: S3Server,
    bucket: str,
    put: Put,
    proxy: ProxyServer,
    http: httpx.Client,
    subtests: pytest.Subtests,
) -> None:
    """HEAD answers GET's headers and the object's content-length, without a byte of body."""
    for case in ("cold", "warm"):
        with subtests.test(case):
            key = f"{case}.bin"
            put(key, BIG, ContentType="application/x-test", CacheControl="no-cache")
            if case == "warm":
                assert http.get("/" + key).content == BIG
            started = time.monotonic()
            head = raw_request(proxy, "HEAD", f"/{key}".encode())
            get = http.get("/" + key)
            apart = time.monotonic() - started
            assert head.status == get.status_code == 200
            assert head.body == b""
            assert head.header("content-length") == str(len(BIG))
            for name in ("content-type", "etag", "last-modified", "cache-control"):
                assert head.header(name) == get.headers[name], name
            # Expires is each answer's own clock plus the TTL: equal but for the seconds
            # that passed between the two requests.
            expires = [
                email.utils.parsedate_to_datetime(h)
                for h in (head.header("expires"), get.headers["expires"])
            ]
            assert 0 <= (expires[1] - expires[0]).total_seconds() <= math.ceil(apart) + 1
            assert head.header("server") is None
            assert s3.gets(bucket, key) == 1


# --- index documents and keys ----------------------------------------------------------------


def test_folders_serve_their_index_document(bucket: str, put: Put, http: httpx.Client) -> None:
    """/ serves index.html and /docs/ serves docs/index.html."""
    put("index.html", b"home", ContentType="text/html")
    put("docs/index.html", b"docs home", ContentType="text/html")
    assert http.get("/").content == b"home"
    assert http.get("/docs/").content == b"docs home"


def test_custom_index_document(bucket: str, put: Put, start_proxy: StartProxy) -> None:
    """With index_document=default.htm, / and /docs/ serve their default.htm."""
    put("index.html", b"wrong")
    put("default.htm", b"root default")
    put("docs/default.htm", b"docs default")
    with client(start_proxy(index_document="default.htm")) as c:
        assert c.get("/").content == b"root default"
        assert c.get("/docs/").content == b"docs default"


SPECIAL_KEYS = [
    # (id, key stored in S3, raw request target)
    ("space", "hello world.txt", b"/hello%20world.txt"),
    ("plus-literal", "a+b.txt", b"/a+b.txt"),
    ("plus-escaped", "a+b.txt", b"/a%2Bb.txt"),
    ("percent", "100%.txt", b"/100%25.txt"),
    ("unicode", "caf\u00e9.txt", b"/caf%C3%A9.txt"),
    ("cjk", "\u65e5\u672c/\u8a9e.txt", b"/%E6%97%A5%E6%9C%AC/%E8%AA%9E.txt"),
    ("sub-delims", "q=1&r@(x)'.txt", b"/q=1&r@(x)'.txt"),
    ("quotes", '"quoted".txt', b"/%22quoted%22.txt"),
    ("encoded-slash", "docs/guide.html", b"/docs%2Fguide.html"),
]


def test_special_keys(bucket: str, put: Put, proxy: ProxyServer, subtests: pytest.Subtests) -> None:
    """A percent-encoded path names the key S3 stores, decoded exactly once (+ stays +)."""
    put("a b.txt", b"a space, not a plus")
    put("100.txt", b"wrong")
    for case, key, target in SPECIAL_KEYS:
        with subtests.test(case):
            put(key, b"the right one: " + key.encode())
            r = raw_request(proxy, "GET", target)
            assert r.status == 200
            assert r.body == b"the right one: " + key.encode()


def test_nfd_path_does_not_serve_nfc_key(bucket: str, put: Put, proxy: ProxyServer) -> None:
    """A path spelled in NFD does not find the object stored under its NFC spelling."""
    put(unicodedata.normalize("NFC", "café.txt"), b"nfc")
    assert raw_request(proxy, "GET", b"/caf%C3%A9.txt").body == b"nfc"
    assert raw_request(proxy, "GET", b"/cafe%CC%81.txt").status == 404


def test_empty_object(bucket: str, put: Put, http: httpx.Client) -> None:
    """A 0-byte object is a 200 with content-length 0 (a Range on it too: see
    test_range_on_an_empty_object_is_200)."""
    put("empty.txt", b"")
    for _ in range(2):
        r = http.get("/empty.txt")
        assert r.status_code == 200
        assert r.headers["content-length"] == "0"
        assert r.content == b""


# --- conditional requests --------------------------------------------------------------------

IF_NONE_MATCH = [
    # (id, If-None-Match with {etag} for the object's tag, status)
    ("exact", "{etag}", 304),
    ("list", '"other", {etag}', 304),
    ("weak", "W/{etag}", 304),
    ("star", "*", 304),
    ("mismatch", '"nope", W/"other"', 200),
]


def test_if_none_match(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests
) -> None:
    """A matching If-None-Match (exact, in a list, weak, or *) is a 304 with the etag and no
    body, on a cold key and a cached one; a mismatch is the full 200."""
    for case, header, status in IF_NONE_MATCH:
        for warm in (False, True):
            with subtests.test(case, warm=warm):
                key = f"{case}-{warm}.html"
                put(key, b"<p>page</p>")
                etag = s3_head(s3, bucket, key)["ETag"]
                if warm:
                    http.get("/" + key)
                r = http.get("/" + key, headers={"if-none-match": header.format(etag=etag)})
                assert r.status_code == status
                assert r.headers["etag"] == etag
                assert r.content == (b"" if status == 304 else b"<p>page</p>")


IF_MODIFIED_SINCE = [
    # (id, seconds after last-modified or None for an invalid date, status)
    ("equal", 0, 304),
    ("later", 86400, 304),
    ("earlier", -1, 200),
    ("invalid-date", None, 200),
]


def test_if_modified_since(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests
) -> None:
    """If-Modified-Since at or after last-modified is a 304; earlier or invalid is a 200."""
    put("page.html", b"<p>page</p>")
    modified = s3_head(s3, bucket, "page.html")["LastModified"].timestamp()
    for case, offset, status in IF_MODIFIED_SINCE:
        with subtests.test(case):
            if offset is None:
                value = "yesterday at noon"
            else:
                value = email.utils.formatdate(modified + offset, usegmt=True)
            r = http.get("/page.html", headers={"if-modified-since": value})
            assert r.status_code == status
            assert r.content == (b"" if status == 304 else b"<p>page</p>")


def test_if_none_match_wins_over_if_modified_since(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests
) -> None:
    """With both headers, If-None-Match decides and If-Modified-Since is ignored."""
    put("page.html", b"<p>page</p>")
    head = s3_head(s3, bucket, "page.html")
    modified = head["LastModified"].timestamp()
    for case, if_none_match, offset, status in [
        ("mismatch-beats-later-date", '"nope"', 86400, 200),
        ("match-beats-earlier-date", head["ETag"], -86400, 304),
    ]:
        with subtests.test(case):
            headers = {
                "if-none-match": if_none_match,
                "if-modified-since": email.utils.formatdate(modified + offset, usegmt=True),
            }
            assert http.get("/page.html", headers=headers).status_code == status


def test_if_match(s3: S3Server, bucket: str, put: Put, http: httpx.Client) -> None:
    """If-Match with another tag is a 412; with the object's tag it is a 200."""
    put("page.html", b"<p>page</p>")
    etag = s3_head(s3, bucket, "page.html")["ETag"]
    r = http.get("/page.html", headers={"if-match": '"not-the-etag"'})
    assert r.status_code == 412
    assert r.content == b""
    r = http.get("/page.html", headers={"if-match": etag})
    assert r.status_code == 200
    assert r.content == b"<p>page</p>"


# --- ranges and byte-exact bodies ------------------------------------------------------------

MEMORY_TIERS = pytest.mark.parametrize(
    "memory_object_size", [1 << 20, 0], ids=["memory-tier", "disk-only"]
)


@MEMORY_TIERS
def test_big_object_is_byte_exact(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, memory_object_size: int
) -> None:
    """A 300 KB random object comes back byte for byte on the miss and on the hit."""
    put("big.bin", BIG)
    with client(start_proxy(memory_object_size=memory_object_size)) as c:
        for _ in range(2):
            r = c.get("/big.bin")
            assert r.status_code == 200
            assert r.headers["content-length"] == str(len(BIG))
            assert r.content == BIG
    assert s3.gets(bucket, "big.bin") == 1


SINGLE_RANGES = [
    # (id, Range, first byte, last byte)
    ("first-ten", "bytes=0-9", 0, 9),
    ("suffix", "bytes=-5", len(BIG) - 5, len(BIG) - 1),
    ("open-ended", "bytes=5-", 5, len(BIG) - 1),
    ("clamped-past-the-end", "bytes=299990-999999", 299_990, len(BIG) - 1),
    ("middle", "bytes=123456-234567", 123_456, 234_567),
    ("one-byte", "bytes=77-77", 77, 77),
]


@MEMORY_TIERS
def test_single_range(
    bucket: str,
    put: Put,
    start_proxy: StartProxy,
    memory_object_size: int,
    subtests: pytest.Subtests,
) -> None:
    """A single satisfiable range is a 206 with its content-range and exactly its bytes."""
    put("big.bin", BIG)
    with client(start_proxy(memory_object_size=memory_object_size)) as c:
        assert c.get("/big.bin").content == BIG  # cached now
        for case, spec, start, end in SINGLE_RANGES:
            with subtests.test(case):
                r = c.get("/big.bin", headers={"range": spec})
                assert r.status_code == 206
                assert r.headers["content-range"] == f"bytes {start}-{end}/{len(BIG)}"
                assert r.headers["content-length"] == str(end - start + 1)
                assert r.content == BIG[start : end + 1]


def test_unsatisfiable_range_is_416(bucket: str, put: Put, http: httpx.Client) -> None:
    """A range starting past the end is a 416 with content-range bytes */<size>."""
    put("big.bin", BIG)
    r = http.get("/big.bin", headers={"range": f"bytes={len(BIG)}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(BIG)}"
    assert_no_leaks(r.headers, r.content, bucket)
    assert len(r.content) < 100


def test_range_on_an_empty_object_is_200(bucket: str, put: Put, http: httpx.Client) -> None:
    """A Range on a zero-length object is a 200 with the empty body, on the miss and on the
    hit: no byte range of it can be expressed (RFC 9110 §14.1.1), so never a 416."""
    put("empty.txt", b"")
    for _ in ("miss", "hit"):
        r = http.get("/empty.txt", headers={"range": "bytes=0-0"})
        assert r.status_code == 200
        assert r.content == b"" and r.headers["content-length"] == "0"
        assert "content-range" not in r.headers


def test_unknown_range_unit_is_ignored(bucket: str, put: Put, http: httpx.Client) -> None:
    """A Range in an unknown unit is ignored: the whole object with 200."""
    put("big.bin", BIG)
    r = http.get("/big.bin", headers={"range": "items=0-9"})
    assert r.status_code == 200
    assert r.content == BIG


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_multiple_ranges_are_multipart(
    bucket: str, put: Put, http: httpx.Client, warm: bool
) -> None:
    """Several ranges are a 206 multipart/byteranges whose parts hold exactly those bytes."""
    put("big.bin", BIG, ContentType="application/x-test")
    if warm:
        http.get("/big.bin")
    r = http.get("/big.bin", headers={"range": "bytes=0-9, 100000-150000, -7"})
    assert r.status_code == 206
    assert r.headers["content-length"] == str(len(r.content))
    parts = parse_multipart(r.content, r.headers["content-type"])
    size = len(BIG)
    expected = [(0, 9), (100_000, 150_000), (size - 7, size - 1)]
    assert len(parts) == len(expected)
    for (headers, data), (start, end) in zip(parts, expected, strict=True):
        assert headers["content-type"] == "application/x-test"
        assert headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert data == BIG[start : end + 1]


def test_if_range(s3: S3Server, bucket: str, put: Put, http: httpx.Client) -> None:
    """If-Range with the current etag or date allows the 206; another etag gets the whole
    200."""
    put("big.bin", BIG)
    head = s3_head(s3, bucket, "big.bin")
    ranged = {"range": "bytes=10-19"}
    r = http.get("/big.bin", headers={**ranged, "if-range": head["ETag"]})
    assert r.status_code == 206
    assert r.content == BIG[10:20]
    r = http.get("/big.bin", headers={**ranged, "if-range": http_date(head["LastModified"])})
    assert r.status_code == 206
    assert r.content == BIG[10:20]
    r = http.get("/big.bin", headers={**ranged, "if-range": '"an-older-etag"'})
    assert r.status_code == 200
    assert r.content == BIG


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_head_ignores_range(
    bucket: str, put: Put, proxy: ProxyServer, http: httpx.Client, warm: bool
) -> None:
    """HEAD with a Range is a plain 200 with the whole object's length."""
    put("big.bin", BIG)
    if warm:
        http.get("/big.bin")
    r = raw_request(proxy, "HEAD", b"/big.bin", {"Range": "bytes=0-9"})
    assert r.status == 200
    assert r.header("content-length") == str(len(BIG))
    assert r.header("content-range") is None
    assert r.body == b""


@MEMORY_TIERS
def test_range_as_first_request_caches_the_whole_object(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, memory_object_size: int
) -> None:
    """A Range on a cold key is a correct 206, and that one S3 GET caches the complete object,
    byte for byte."""
    put("big.bin", BIG)
    proxy = start_proxy(memory_object_size=memory_object_size)
    with client(proxy) as c:
        r = c.get("/big.bin", headers={"range": "bytes=1000-1999"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(BIG)}"
        assert r.content == BIG[1000:2000]
        full = c.get("/big.bin")
        assert full.status_code == 200
        assert full.content == BIG
    assert s3.gets(bucket, "big.bin") == 1
    stored = Path(proxy.config.cache.cache_dir) / "objects" / object_hash(bucket, "big.bin")
    readthrough = proxy.app.resources.site.readthrough  # answered before its commit
    wait_for(lambda: not readthrough.busy, what="the fill committed")
    assert stored.read_bytes() == BIG


# --- not found -------------------------------------------------------------------------------


def test_missing_key_is_our_own_404_and_remembered(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client
) -> None:
    """A missing key is a short 404 of ours (no S3 XML, bucket or request id), and a second
    request within the TTL does not reach S3."""
    put("index.html", b"home")
    for _ in range(2):
        r = http.get("/missing.html")
        assert r.status_code == 404
        assert len(r.content) < 100
        assert_no_leaks(r.headers, r.content, bucket)
    assert s3.gets(bucket, "missing.html") == 1


def test_s3_403_is_a_404(s3: S3Server, bucket: str, put: Put, http: httpx.Client) -> None:
    """S3 answering 403 (as it does without s3:ListBucket) is served as our 404."""
    put("hidden.html", b"hidden")
    s3.faults.append(Fault("/hidden.html", status=403))
    r = http.get("/hidden.html")
    assert r.status_code == 404
    assert b"hidden" not in r.content
    assert_no_leaks(r.headers, r.content, bucket)


# --- S3 failing ------------------------------------------------------------------------------


def test_s3_errors_are_a_502(s3: S3Server, bucket: str, put: Put, http: httpx.Client) -> None:
    """S3 answering 500 (retries included) is a 502 with our own short body."""
    put("page.html", b"page")
    s3.faults.append(Fault("/page.html", status=500, times=10))
    r = http.get("/page.html")
    assert r.status_code == 502
    assert r.content.strip() == b"Bad Gateway"
    assert_no_leaks(r.headers, r.content, bucket)


def test_s3_timeout_is_a_504(s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy) -> None:
    """S3 not answering within read_timeout (retries included) is a 504 with our own body."""
    put("slow.html", b"slow")
    # botocore retries a read timeout: delay every attempt it makes.
    s3.faults.append(Fault("/slow.html", delay=1.0, times=5))
    with client(start_proxy(read_timeout=0.5)) as c:
        r = c.get("/slow.html")
    assert r.status_code == 504
    assert r.content.strip() == b"Gateway Timeout"
    assert_no_leaks(r.headers, r.content, bucket)


def test_broken_body_aborts_and_is_not_cached(
    s3: S3Server, bucket: str, put: Put, proxy: ProxyServer, http: httpx.Client
) -> None:
    """A body that breaks off mid-way reaches the client as a broken transfer, and the next
    GET fetches and serves the complete object."""
    body = random_bytes(1_000_000, seed=2)
    put("video.bin", body)
    s3.faults.append(Fault("/video.bin", truncate_after=300_000))
    received, status, broken = b"", None, False
    try:
        with http.stream("GET", "/video.bin") as r:
            status = r.status_code
            for chunk in r.iter_raw():
                received += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError):
        broken = True
    assert broken or status != 200 or len(received) < len(body), "a clean, complete 200"
    stored = Path(proxy.config.cache.cache_dir) / "objects" / object_hash(bucket, "video.bin")
    assert not stored.exists()
    r = http.get("/video.bin")
    assert r.status_code == 200
    assert r.content == body
    assert s3.gets(bucket, "video.bin") == 2
    readthrough = proxy.app.resources.site.readthrough  # answered before its commit
    wait_for(lambda: not readthrough.busy, what="the fill committed")
    assert stored.read_bytes() == body


@pytest.mark.parametrize("size", [50_000, 1_000_000], ids=["memory-tier", "disk"])
def test_corrupted_body_is_not_served_as_a_clean_200(
    s3: S3Server,
    bucket: str,
    put: Put,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """A body whose last bytes do not match its ETag never reaches the client as a complete
    200, and the next GET serves the correct bytes."""
    body = random_bytes(size, seed=4)
    put("video.bin", body)
    s3.faults.append(Fault("/video.bin", corrupt_at=size - 10))
    received, status, broken = b"", None, False
    try:
        with http.stream("GET", "/video.bin") as r:
            status = r.status_code
            for chunk in r.iter_raw():
                received += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError):
        broken = True
    assert broken or status != 200 or len(received) < size, "corrupt bytes as a clean 200"
    r = http.get("/video.bin")
    assert r.status_code == 200
    assert r.content == body
    assert s3.gets(bucket, "video.bin") == 2


@pytest.mark.parametrize("failure", ["truncated", "corrupted"])
def test_range_first_on_a_failed_body_is_a_502(
    s3: S3Server,
    bucket: str,
    put: Put,
    proxy: ProxyServer,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """A Range on a cold key whose S3 body breaks off or fails its ETag is our 502 (no
    response had started), and the next Range is served correctly."""
    body = random_bytes(1_000_000, seed=3)
    put("video.bin", body)
    if failure == "corrupted":
        s3.faults.append(Fault("/video.bin", corrupt_at=300_000))
    else:
        s3.faults.append(Fault("/video.bin", truncate_after=300_000))
    r = raw_request(proxy, "GET", b"/video.bin", {"Range": "bytes=0-9"})
    assert r.status == 502
    assert r.body.strip() == b"Bad Gateway"
    assert_no_leaks(dict(r.headers), r.body, bucket)
    r2 = http.get("/video.bin", headers={"range": "bytes=999990-"})
    assert r2.status_code == 206
    assert r2.content == body[999_990:]
    assert s3.gets(bucket, "video.bin") == 2


# --- query strings, OPTIONS, methods ---------------------------------------------------------


def test_query_string_is_ignored(bucket: str, put: Put, http: httpx.Client) -> None:
    """A query string does not change which object is served."""
    put("index.html", b"home")
    assert http.get("/index.html?x=1").content == b"home"
    assert http.get("/?v=2&y").content == b"home"


def test_query_strings_can_be_rejected(bucket: str, put: Put, start_proxy: StartProxy) -> None:
    """With reject_query_strings, a request with a query is a 400 and one without a 200."""
    put("index.html", b"home")
    with client(start_proxy(reject_query_strings=True)) as c:
        assert c.get("/index.html?x=1").status_code == 400
        assert c.get("/index.html").status_code == 200


def test_options_is_204_with_allowed_methods(http: httpx.Client) -> None:
    """OPTIONS is a 204 listing GET, HEAD and OPTIONS."""
    r = http.options("/anything.html")
    assert r.status_code == 204
    assert r.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert r.content == b""


def test_cors_origins(bucket: str, put: Put, start_proxy: StartProxy) -> None:
    """An allowed Origin is echoed with vary: Origin on OPTIONS and GET; others get no ACAO."""
    put("page.html", b"page")
    with client(start_proxy(allowed_origins=("https://ok.example",))) as c:
        ok = {"origin": "https://ok.example"}
        evil = {"origin": "https://evil.example"}
        r = c.options("/page.html", headers=ok)
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://ok.example"
        assert "origin" in r.headers["vary"].lower()
        r = c.options("/page.html", headers=evil)
        assert r.status_code == 204
        assert "access-control-allow-origin" not in r.headers
        for _ in range(2):  # miss, then hit
            r = c.get("/page.html", headers=ok)
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == "https://ok.example"
            assert "origin" in r.headers["vary"].lower()
        r = c.get("/page.html", headers=evil)
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers


def test_unsafe_methods_are_405(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests
) -> None:
    """Methods other than GET, HEAD and OPTIONS are a 405 with allow, and never reach S3."""
    put("page.html", b"page")
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with subtests.test(method):
            r = http.request(method, "/page.html", content=b"new body")
            assert r.status_code == 405
            assert r.headers["allow"] == "GET, HEAD, OPTIONS"
    assert s3.gets(bucket, "page.html") == 0


# --- hostile paths ---------------------------------------------------------------------------

BAD_PATHS = [
    # (id, raw request target, status)
    ("encoded-dotdot", b"/%2e%2e/secret", 400),
    ("raw-dotdot", b"/../secret", 400),
    ("nul", b"/a/%00", 400),
    ("bad-escape", b"/%zz", 400),
    ("truncated-escape", b"/a%2", 400),
    ("invalid-utf8", b"/%C3", 400),
    ("too-long", b"/" + b"a" * 1025, 414),
]


def test_bad_paths_are_refused(
    s3: S3Server, bucket: str, proxy: ProxyServer, subtests: pytest.Subtests
) -> None:
    """Dot segments, NUL, malformed escapes and invalid UTF-8 are a 400, an over-long key a
    414, with our own short body, and none reaches S3."""
    for case, target, status in BAD_PATHS:
        with subtests.test(case):
            r = raw_request(proxy, "GET", target)
            assert r.status == status
            assert len(r.body) < 100
            assert_no_leaks(dict(r.headers), r.body, bucket)
    assert [m for m, _, _ in s3.requests if m == "GET"] == []


ESCAPES = [
    b"/../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E%2Fsecret.txt",
    b"/..%2fsecret.txt",
    b"/.%2e/secret.txt",
    b"/%2E./secret.txt",
    b"/x/../../secret.txt",
    b"/x%2F..%2F..%2Fsecret.txt",
    b"/%2e%2e%5csecret.txt",
    b"//../secret.txt",
    b"/public/../secret.txt",
    b"/secret.txt",
    b"/%2Fsecret.txt",
]


def test_nothing_outside_the_prefix_is_served(
    bucket: str, put: Put, start_proxy: StartProxy, subtests: pytest.Subtests
) -> None:
    """No request target reads a key outside the configured prefix."""
    put("secret.txt", b"TOP SECRET")
    put("public/index.html", b"public home")
    proxy = start_proxy(prefix="public/")
    assert raw_request(proxy, "GET", b"/").body == b"public home"
    for target in ESCAPES:
        with subtests.test(target.decode()):
            r = raw_request(proxy, "GET", target)
            assert r.status != 200
            assert b"TOP SECRET" not in r.body


# --- management API --------------------------------------------------------------------------

REFUSED_CLEARS = [
    # (id, Authorization header or None, status)
    ("no-header", None, 403),
    ("basic", "Basic x", 400),
    ("bearer-without-token", "Bearer", 400),
    ("wrong-token", "Bearer wrong-token", 403),
    ("longer-token", f"Bearer {TOKEN}x", 403),
]


def test_clear_refuses_without_the_token(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, subtests: pytest.Subtests
) -> None:
    """Clearing without the right bearer token is refused and leaves the cache intact."""
    put("page.html", b"page")
    http.get("/page.html")
    for case, authorization, status in REFUSED_CLEARS:
        with subtests.test(case):
            headers = {"authorization": authorization} if authorization else {}
            assert http.get(CLEAR, headers=headers).status_code == status
    assert http.get("/page.html").content == b"page"
    assert s3.gets(bucket, "page.html") == 1


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_clear_empties_the_cache(
    s3: S3Server, bucket: str, put: Put, http: httpx.Client, method: str
) -> None:
    """A clear with the token answers 200 JSON counts, and the next GET fetches the object's
    current content from S3."""
    put("page.html", b"version 1")
    assert http.get("/page.html").content == b"version 1"
    put("page.html", b"version 2 is longer")
    assert http.get("/page.html").content == b"version 1"  # still cached
    r = http.request(method, CLEAR, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    summary = r.json()
    assert summary["cleared"] is True
    assert summary["entries"] == 1
    assert summary["files"] == 1
    assert summary["bytes"] == len(b"version 1")
    assert http.get("/page.html").content == b"version 2 is longer"
    assert s3.gets(bucket, "page.html") == 2


def test_clear_other_methods_are_405(http: httpx.Client, subtests: pytest.Subtests) -> None:
    """Other methods on the clear endpoint are a 405, even with the right token."""
    for method in ("POST", "PUT", "PATCH"):
        with subtests.test(method):
            r = http.request(method, CLEAR, headers={"authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 405


def test_clear_is_disabled_without_auth_key(start_proxy: StartProxy) -> None:
    """With no auth_key the clear endpoint is a 403 whatever token is sent."""
    with client(start_proxy(auth_key=None)) as c:
        for token in (TOKEN, "None"):
            r = c.get(CLEAR, headers={"authorization": f"Bearer {token}"})
            assert r.status_code == 403


def test_health(http: httpx.Client) -> None:
    """/_proxy/health answers 200."""
    r = http.get("/_proxy/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
