"""gzip and brotli: negotiated, computed once per object version, never applied twice."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import brotli
import httpx
import pytest

from s3proxy.encoding import negotiate
from tests.servers import ProxyServer, S3Server

PAGE = b"<p>" + b"s3proxy serves websites. " * 200 + b"</p>"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("gzip", "gzip", id="gzip"),
        pytest.param("gzip, deflate, br", "br", id="browser"),
        pytest.param("br;q=0, gzip", "gzip", id="br-refused"),
        pytest.param("gzip;q=0.5, br;q=0.4", "gzip", id="weights"),
        pytest.param("identity", None, id="identity"),
        pytest.param("*", "br", id="star"),
        pytest.param("*;q=0, gzip;q=0", None, id="all-refused"),
        pytest.param("gzip;q=bogus", None, id="bad-q"),
        pytest.param("deflate", None, id="unsupported"),
    ],
)
def test_negotiate(header: str | None, expected: str | None) -> None:
    """Accept-Encoding picks the best coding we make, br first on a tie."""
    assert negotiate(header) == expected


@dataclass
class Raw:
    status_code: int
    headers: httpx.Headers
    content: bytes


def get(proxy: ProxyServer, path: str, **headers: str) -> Raw:
    """GET with the body as sent on the wire (httpx would decode it)."""
    with (
        httpx.Client(base_url=proxy.url) as client,
        client.stream("GET", path, headers=headers) as r,
    ):
        return Raw(r.status_code, r.headers, b"".join(r.iter_raw()))


@pytest.mark.parametrize(
    ("coding", "decode"), [("br", brotli.decompress), ("gzip", gzip.decompress)]
)
def test_compressed_variant(
    put: Callable[..., None], proxy: ProxyServer, coding: str, decode: Callable[[bytes], bytes]
) -> None:
    """A text object is sent compressed, with Vary, its own ETag and its compressed length."""
    put("page.html", PAGE, ContentType="text/html")
    identity = get(proxy, "/page.html", **{"accept-encoding": "identity"})
    response = get(proxy, "/page.html", **{"accept-encoding": coding})
    assert response.headers["content-encoding"] == coding
    assert response.headers["vary"] == "Accept-Encoding"
    assert identity.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in identity.headers
    assert decode(response.content) == PAGE
    assert int(response.headers["content-length"]) == len(response.content) < len(PAGE)
    assert response.headers["etag"] != identity.headers["etag"]
    assert response.headers["etag"] == identity.headers["etag"][:-1] + f'-{coding}"'


def test_first_request_on_a_cold_key_is_compressed_too(
    put: Callable[..., None], proxy: ProxyServer
) -> None:
    """A miss gives the same representation as a hit, so validators stay consistent."""
    put("page.html", PAGE, ContentType="text/html")
    first = get(proxy, "/page.html", **{"accept-encoding": "br"})
    second = get(proxy, "/page.html", **{"accept-encoding": "br"})
    assert first.headers["content-encoding"] == second.headers["content-encoding"] == "br"
    assert first.headers["etag"] == second.headers["etag"]


def test_conditional_requests_on_variants(put: Callable[..., None], proxy: ProxyServer) -> None:
    """If-None-Match with the variant's ETag, or with the identity ETag a client got first,
    is a 304; If-Match with a stale tag is a 412."""
    put("page.html", PAGE, ContentType="text/html")
    identity_etag = get(proxy, "/page.html", **{"accept-encoding": "identity"}).headers["etag"]
    br = get(proxy, "/page.html", **{"accept-encoding": "br"})
    for tag in (br.headers["etag"], identity_etag):
        again = get(proxy, "/page.html", **{"accept-encoding": "br", "if-none-match": tag})
        assert again.status_code == 304, tag
    stale = get(proxy, "/page.html", **{"accept-encoding": "br", "if-match": '"stale"'})
    assert stale.status_code == 412


def test_what_is_not_compressed(
    s3: S3Server, bucket: str, put: Callable[..., None], proxy: ProxyServer
) -> None:
    """Small bodies, binary types and Range requests are sent as they are."""
    put("small.txt", b"tiny", ContentType="text/plain")
    put("photo.jpg", os.urandom(5000), ContentType="image/jpeg")
    put("page.html", PAGE, ContentType="text/html")
    for path in ("/small.txt", "/photo.jpg"):
        response = get(proxy, path, **{"accept-encoding": "br, gzip"})
        assert "content-encoding" not in response.headers, path
        assert "vary" not in response.headers, path
    ranged = get(proxy, "/page.html", **{"accept-encoding": "br", "range": "bytes=0-9"})
    assert ranged.status_code == 206
    assert "content-encoding" not in ranged.headers
    assert ranged.content == PAGE[:10]


def test_stored_content_encoding_is_never_recoded(
    put: Callable[..., None], proxy: ProxyServer
) -> None:
    """An object stored gzipped (Content-Encoding: gzip in S3) goes out byte for byte, to
    every client, with S3's Content-Encoding."""
    stored = gzip.compress(PAGE)
    put("app.js", stored, ContentType="application/javascript", ContentEncoding="gzip")
    for accept in ("br", "gzip", "identity"):
        response = get(proxy, "/app.js", **{"accept-encoding": accept})
        assert response.content == stored, accept
        assert response.headers["content-encoding"] == "gzip"


def test_variant_is_made_once_and_kept_beside_the_object(
    put: Callable[..., None],
    start_proxy: Callable[..., ProxyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compressed variant is computed once, stored next to the body, and reused after a
    restart; a new version of the object gets a new variant."""
    import s3proxy.site

    calls: list[str] = []
    real = s3proxy.site.compress

    def counting(body: bytes, coding: str) -> bytes:
        calls.append(coding)
        return real(body, coding)

    monkeypatch.setattr(s3proxy.site, "compress", counting)
    put("page.html", PAGE, ContentType="text/html")
    proxy = start_proxy(memory_object_size=0)  # disk only: the variant must come from disk
    for _ in range(3):
        assert brotli.decompress(get(proxy, "/page.html", **{"accept-encoding": "br"}).content)
    assert calls == ["br"]
    variants = list((Path(proxy.config.cache.cache_dir) / "objects").glob("*.br"))
    assert len(variants) == 1
    proxy.stop()
    again = start_proxy(memory_object_size=0)
    assert brotli.decompress(get(again, "/page.html", **{"accept-encoding": "br"}).content) == PAGE
    assert calls == ["br"]
    put("page.html", PAGE + b"<p>v2</p>", ContentType="text/html")
    httpx.delete(
        f"{again.url}/_proxy/_private/_cache/clear",
        params={"path": "/page.html"},
        headers={"Authorization": "Bearer test-token"},
    )
    fresh = get(again, "/page.html", **{"accept-encoding": "br"})
    assert brotli.decompress(fresh.content) == PAGE + b"<p>v2</p>"


def test_compression_can_be_turned_off(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """--compress false sends identity bodies without Vary."""
    put("page.html", PAGE, ContentType="text/html")
    proxy = start_proxy(compress=False)
    response = get(proxy, "/page.html", **{"accept-encoding": "br, gzip"})
    assert "content-encoding" not in response.headers and "vary" not in response.headers
    assert response.content == PAGE


def test_variants_count_against_the_memory_budget(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """Compressed variants kept in memory are part of the memory tier's byte budget."""
    for i in range(8):
        put(f"p{i}.html", PAGE + bytes([65 + i]) * 3000, ContentType="text/html")
    proxy = start_proxy(memory_cache_size=20_000)
    for i in range(8):
        for accept in ("identity", "br", "gzip"):
            get(proxy, f"/p{i}.html", **{"accept-encoding": accept})
    cache = proxy.app.resources.cache
    assert cache is not None
    stats = cache.stats()
    assert 0 < stats["memory_bytes"] <= 20_000
    held = sum(
        len(e.body or b"") + sum(len(v) for v in (e.variants or {}).values())
        for e in cache.memory.bodies.values()
    )
    assert held == stats["memory_bytes"]
