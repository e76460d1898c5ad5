"""Website behaviour: folder redirects, error documents, SPA fallback, folder markers."""

from __future__ import annotations

import gzip
import socket
from collections.abc import Callable

import httpx
import pytest

from s3proxy.keys import trailing_slash_location
from tests.servers import ProxyServer


def raw_get(
    proxy: ProxyServer, target: bytes, extra: bytes = b"", host: bytes = b"x"
) -> tuple[int, bytes]:
    """Send a request target exactly as given (httpx would normalise it); (status, head)."""
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(
            b"GET "
            + target
            + b" HTTP/1.1\r\nHost: "
            + host
            + b"\r\n"
            + extra
            + b"Connection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    return int(head.split(b" ", 2)[1]), head


def location(head: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"location":
            return value.strip()
    raise AssertionError("no location header")


@pytest.mark.parametrize(
    ("raw_path", "query", "expected"),
    [
        pytest.param(b"/docs", b"", b"./docs/", id="simple"),
        pytest.param(b"/a/docs", b"x=1", b"./docs/?x=1", id="nested-with-query"),
        pytest.param(b"//evil.example", b"", b"./evil.example/", id="protocol-relative"),
        pytest.param(b"/\\evil.example", b"", b"./%5Cevil.example/", id="backslash"),
        pytest.param(b"/caf%C3%A9", b"", b"./caf%C3%A9/", id="encoded-kept"),
        pytest.param(b'/a b"<', b"", b"./a%20b%22%3C/", id="unsafe-bytes-encoded"),
    ],
)
def test_trailing_slash_location(raw_path: bytes, query: bytes, expected: bytes) -> None:
    """The redirect's Location is a relative path to the same site, safely encoded."""
    assert trailing_slash_location(raw_path, query) == expected


def test_folder_without_slash_redirects(put: Callable[..., None], proxy: ProxyServer) -> None:
    """/docs where docs/index.html exists is a 301 to ./docs/, which the client follows."""
    put("docs/index.html", b"docs index")
    status, head = raw_get(proxy, b"/docs")
    assert status == 301 and location(head) == b"./docs/"
    followed = httpx.get(f"{proxy.url}/docs", follow_redirects=True)
    assert followed.status_code == 200 and followed.content == b"docs index"
    assert str(followed.url).endswith("/docs/")


@pytest.mark.parametrize("target", [b"//evil.example", b"/\\evil.example", b"//evil.example/"])
def test_no_open_redirect(put: Callable[..., None], proxy: ProxyServer, target: bytes) -> None:
    """Paths that look like other hosts never produce a Location pointing elsewhere, whatever
    Host or X-Forwarded-Host say."""
    put("/evil.example/index.html", b"x")
    put("\\evil.example/index.html", b"x")
    status, head = raw_get(proxy, target, b"X-Forwarded-Host: evil.example\r\n")
    if status == 301:
        assert location(head).startswith(b"./")
    else:
        assert status in (200, 404)


def test_error_document_is_served_with_404(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """A configured error page from the bucket answers missing paths, with status 404."""
    put("404.html", b"<h1>gone</h1>", ContentType="text/html")
    proxy = start_proxy(error_document="404.html")
    response = httpx.get(f"{proxy.url}/nothing/here.html")
    assert response.status_code == 404
    assert response.content == b"<h1>gone</h1>"
    assert response.headers["content-type"] == "text/html"
    assert "etag" not in response.headers
    assert httpx.head(f"{proxy.url}/nothing").status_code == 404


def test_error_document_keeps_its_content_encoding(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """An error page stored compressed (Content-Encoding: gzip) is sent as stored, with its
    Content-Encoding, so a client can read it; on the miss and on the hit."""
    put(
        "404.html", gzip.compress(b"<h1>gone</h1>"), ContentType="text/html", ContentEncoding="gzip"
    )
    proxy = start_proxy(error_document="404.html")
    for _ in range(2):
        response = httpx.get(f"{proxy.url}/nothing/here.html")
        assert response.status_code == 404
        assert response.headers["content-encoding"] == "gzip"
        assert response.content == b"<h1>gone</h1>"


def test_missing_error_document_falls_back_to_plain_404(
    start_proxy: Callable[..., ProxyServer],
) -> None:
    """An error page that does not exist yields our own short 404."""
    proxy = start_proxy(error_document="404.html")
    response = httpx.get(f"{proxy.url}/x")
    assert response.status_code == 404 and response.text == "Not Found\n"


def test_spa_routes_serve_the_index(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """SPA mode: unknown paths without an extension get the index with 200; missing files
    with an extension stay 404."""
    put("index.html", b"<div id=app></div>", ContentType="text/html")
    proxy = start_proxy(spa=True)
    route = httpx.get(f"{proxy.url}/users/42/settings")
    assert route.status_code == 200 and route.content == b"<div id=app></div>"
    assert httpx.get(f"{proxy.url}/missing.js").status_code == 404


def test_folder_marker_does_not_hide_the_index(
    put: Callable[..., None], proxy: ProxyServer
) -> None:
    """A zero-byte 'docs' object (a folder marker some tools create) redirects to docs/ when
    docs/index.html exists; docs/ serves the index."""
    put("docs", b"", ContentType="application/x-directory")
    put("docs/", b"")
    put("docs/index.html", b"the index")
    status, head = raw_get(proxy, b"/docs")
    assert status == 301 and location(head) == b"./docs/"
    assert httpx.get(f"{proxy.url}/docs/").content == b"the index"


def test_zero_byte_object_is_served(put: Callable[..., None], proxy: ProxyServer) -> None:
    """A genuinely empty file (no folder index beside it) is a 200 with no body."""
    put("empty.txt", b"")
    response = httpx.get(f"{proxy.url}/empty.txt")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-length"] == "0"
