"""The management API beyond the original's clear: targeted purge, stats, readiness."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.servers import ProxyServer, S3Server

AUTH = {"Authorization": "Bearer test-token"}
CLEAR = "/_proxy/_private/_cache/clear"


def _warm(http: httpx.Client, *paths: str) -> None:
    for path in paths:
        assert http.get(path).status_code in (200, 404)


def test_purge_one_path_drops_only_that_object(
    s3: S3Server, bucket: str, put: Callable[..., None], http: httpx.Client
) -> None:
    """?path= drops one object: it is fetched again, the others stay cached."""
    put("a.html", b"a")
    put("b.html", b"b")
    _warm(http, "/a.html", "/b.html")
    answer = http.delete(CLEAR, params={"path": "/a.html"}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json() == {"cleared": True, "key": "a.html", "dropped": ["a.html"]}
    _warm(http, "/a.html", "/b.html")
    assert s3.gets(bucket, "a.html") == 2
    assert s3.gets(bucket, "b.html") == 1


def test_purge_a_folder_by_prefix(
    s3: S3Server, bucket: str, put: Callable[..., None], http: httpx.Client
) -> None:
    """?prefix= drops every cached key in a folder, remembered 404s included."""
    put("docs/index.html", b"i")
    put("docs/guide.html", b"g")
    put("other.html", b"o")
    _warm(http, "/docs/", "/docs/guide.html", "/docs/missing.html", "/other.html")
    answer = http.get(CLEAR, params={"prefix": "/docs/"}, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["dropped"] == ["docs/guide.html", "docs/index.html", "docs/missing.html"]
    _warm(http, "/docs/", "/docs/guide.html", "/other.html")
    assert s3.gets(bucket, "docs/index.html") == 2
    assert s3.gets(bucket, "other.html") == 1


def test_purge_rejects_bad_parameters(http: httpx.Client) -> None:
    """Unknown parameters, several targets or a dot segment get a 400, and nothing is dropped."""
    for params in ({"key": "/a"}, {"path": "a.html"}, {"path": "/../x"}, {"path": ["/a", "/b"]}):
        assert http.delete(CLEAR, params=params, headers=AUTH).status_code == 400, params


def test_purge_needs_the_token(http: httpx.Client) -> None:
    """A purge is a clear: the same bearer rules."""
    assert http.delete(CLEAR, params={"path": "/a"}).status_code == 403


def test_head_never_clears(http: httpx.Client) -> None:
    """HEAD is a safe method: it gets 405 rather than clearing the cache."""
    assert http.head(CLEAR, headers=AUTH).status_code == 405


def test_stats_count_hits_and_misses(put: Callable[..., None], http: httpx.Client) -> None:
    """The stats endpoint reports this worker's hits, misses and cache contents."""
    put("index.html", b"x" * 100)
    _warm(http, "/", "/", "/", "/nope")
    stats = http.get("/_proxy/_private/_cache/stats", headers=AUTH).json()
    assert stats["requests"] == {"miss": 2, "hit": 2}
    assert stats["cache"]["disk_entries"] == 1 and stats["cache"]["disk_bytes"] == 100
    assert http.get("/_proxy/_private/_cache/stats").status_code == 403


def test_readiness_reports_s3_and_cache(
    s3: S3Server, start_proxy: Callable[..., ProxyServer]
) -> None:
    """Ready when S3 answers and the cache is writable; 503 naming the problem otherwise."""
    good = start_proxy()
    assert httpx.get(f"{good.url}/_proxy/ready").json() == {"ready": True, "problems": []}
    missing_bucket = start_proxy(bucket="no-such-bucket-here")
    answer = httpx.get(f"{missing_bucket.url}/_proxy/ready")
    assert answer.status_code == 503
    assert answer.json()["problems"] == [
        f"s3: no such bucket: no-such-bucket-here does not exist at {s3.endpoint_url}"
    ]
