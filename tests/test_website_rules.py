"""S3 website hosting's redirects behind the proxy: an object's
``x-amz-website-redirect-location``, through a real uvicorn server and moto."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from s3proxy.website import object_redirect
from tests.servers import ProxyServer, S3Server


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("/new.html", b"/new.html", id="path"),
        pytest.param("/a b/é", b"/a%20b/%C3%A9", id="path-escaped"),
        pytest.param("https://example.com/x?y=1#z", b"https://example.com/x?y=1#z", id="https"),
        pytest.param("HTTP://example.com", b"HTTP://example.com", id="http-any-case"),
        pytest.param("//evil.example/x", None, id="protocol-relative"),
        pytest.param("/\\evil.example", None, id="backslash"),
        pytest.param("javascript:alert(1)", None, id="script"),
        pytest.param("ftp://example.com/", None, id="other-scheme"),
        pytest.param("https:///nohost", None, id="no-host"),
        pytest.param("new.html", None, id="relative"),
        pytest.param("/a\r\nset-cookie: x", None, id="header-injection"),
        pytest.param("", None, id="empty"),
    ],
)
def test_object_redirect(value: str, expected: bytes | None) -> None:
    """Only what S3 accepts (a same-site path or an http(s) URL) is honoured."""
    assert object_redirect(value) == expected


@pytest.mark.parametrize("body", [b"", b"<p>moved</p>"], ids=["empty", "with-body"])
def test_object_redirect_location_answers_301(
    put: Callable[..., None], proxy: ProxyServer, s3: S3Server, bucket: str, body: bytes
) -> None:
    """The object answers 301 to its location, on the miss and on the hit (no S3 call)."""
    put("old.html", body, WebsiteRedirectLocation="/new.html")
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(2):
            r = client.get("/old.html")
            assert r.status_code == 301 and r.headers["location"] == "/new.html"
            assert r.content == b""
        head = client.head("/old.html")
        assert head.status_code == 301 and head.headers["location"] == "/new.html"
    assert s3.gets(bucket, "old.html") == 1


def test_object_redirect_to_url_and_from_index(
    put: Callable[..., None], proxy: ProxyServer
) -> None:
    """A folder's index document redirects too; an http(s) URL is kept as it is."""
    put("docs/index.html", b"x", WebsiteRedirectLocation="https://docs.example.com/v2/")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/docs/")
        assert r.status_code == 301 and r.headers["location"] == "https://docs.example.com/v2/"


def test_object_redirect_not_honoured(put: Callable[..., None], proxy: ProxyServer) -> None:
    """A location S3 would refuse (another host by //) is ignored: the object is served."""
    put("page.html", b"page", WebsiteRedirectLocation="//evil.example/")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/page.html")
        assert r.status_code == 200 and r.content == b"page"


def test_plain_objects_unaffected(put: Callable[..., None], proxy: ProxyServer) -> None:
    """Objects without the header are served as before, on the miss and on the hit."""
    put("plain.html", b"plain")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/plain.html")
        assert r.status_code == 200 and r.content == b"plain" and "location" not in r.headers
