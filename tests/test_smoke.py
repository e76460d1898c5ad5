"""The first request a user makes: an object comes from S3 once, then from the cache."""

import httpx

from tests.servers import ProxyServer, S3Server


def test_object_is_fetched_once_then_served_from_cache(
    s3: S3Server, bucket: str, put, proxy: ProxyServer, http: httpx.Client
) -> None:
    """Two GETs of / give the same bytes; only the first reaches S3."""
    put("index.html", b"<h1>hello</h1>", ContentType="text/html")
    first = http.get("/")
    second = http.get("/")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == b"<h1>hello</h1>"
    assert first.headers["content-type"] == "text/html"
    assert s3.gets(bucket, "index.html") == 1
