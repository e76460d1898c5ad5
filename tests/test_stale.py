"""While S3 fails or is slow: one GET per key, S3's failures remembered per key (--error-ttl),
and expired copies served at once while they are revalidated in the background
(--stale-while-revalidate, RFC 5861 §3). README, "When things fail".

Every test counts the GETs that reached S3 (tests/servers.py). Nothing is timed: a request
that would wait for a blackholed S3 fails on its client's timeout, and tests wait on
conditions (uvicorn's requests in flight, S3's count of GETs, the worker's counts by
cache status)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from s3proxy import origin
from tests.servers import Fault, ProxyServer, S3Server
from tests.sink_servers import wait_for

StartProxy = Callable[..., ProxyServer]
Put = Callable[..., None]
#: Seconds a request may take when it must not wait for S3 (which never answers in these
#: tests); far below the 30 s S3 would cost it.
AT_ONCE = 10


def get(proxy: ProxyServer, path: str, timeout: float = 60) -> httpx.Response:
    return httpx.get(proxy.url + path, timeout=timeout)


def by_status(proxy: ProxyServer) -> dict[str, int]:
    """The worker's requests by cache status (hit, miss, stale, revalidating...)."""
    response = httpx.get(
        proxy.url + "/_proxy/_private/_cache/stats",
        headers={"authorization": "Bearer test-token"},
        timeout=30,
    )
    requests: dict[str, int] = response.json()["requests"]
    return requests


def requests_in_flight(proxy: ProxyServer) -> int:
    """Requests whose task uvicorn has started (from the moment their head was read) and
    not finished: each reaches the read-through before any answer from S3 can arrive."""
    return len(proxy._server.server_state.tasks)


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One attempt per GET and no circuit breaker, so S3's count is the fills' count."""
    monkeypatch.setattr(origin, "RETRY_ATTEMPTS", 1)
    monkeypatch.setattr(origin, "BREAKER_THRESHOLD", 1000)


# -- S3's failures remembered per key --------------------------------------------------------


@pytest.mark.parametrize(("error_ttl", "asked"), [(60, 1), (0, 6)], ids=["remembered", "off"])
def test_a_failure_is_remembered_per_key_for_the_error_ttl(
    s3: S3Server,
    bucket: str,
    put: Put,
    start_proxy: StartProxy,
    no_retries: None,
    error_ttl: float,
    asked: int,
) -> None:
    """S3 answering 500: within --error-ttl, the failing key gets the same 502, or its expired
    copy (stale-if-error), without asking S3; other keys are asked as usual. With 0, every
    request asks."""
    put("kept.html", b"kept")
    put("fine.html", b"fine")
    proxy = start_proxy(ttl=0, stale_if_error=3600, error_ttl=error_ttl)
    assert get(proxy, "/kept.html").content == b"kept"
    s3.requests.clear()
    s3.faults.append(Fault("/lost.html", status=500, times=10_000))
    s3.faults.append(Fault("/kept.html", status=500, times=10_000))
    for _ in range(6):
        assert get(proxy, "/lost.html").status_code == 502
        stale = get(proxy, "/kept.html")
        assert stale.status_code == 200 and stale.content == b"kept"
    assert s3.gets(bucket, "lost.html") == asked
    assert s3.gets(bucket, "kept.html") == asked
    assert get(proxy, "/fine.html").content == b"fine"
    assert s3.gets(bucket, "fine.html") == 1
    assert by_status(proxy)["stale"] == 6


@pytest.mark.parametrize("error_ttl", [60, 0.5], ids=["remembered", "over"])
def test_a_remembered_timeout_is_a_504_until_the_error_ttl_is_over(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, error_ttl: float
) -> None:
    """A timeout is remembered as a timeout: 504 again without asking S3. Once the error TTL
    is over, the next request asks S3 again and, S3 having recovered, is served."""
    put("page.html", b"page")
    proxy = start_proxy(read_timeout=1, origin_deadline=1.5, error_ttl=error_ttl)
    s3.faults.append(Fault("/page.html", blackhole=True, times=1))
    assert get(proxy, "/page.html").status_code == 504
    if error_ttl > 1:
        assert get(proxy, "/page.html", AT_ONCE).status_code == 504
        assert s3.gets(bucket, "page.html") == 1
    else:
        wait_for(lambda: get(proxy, "/page.html").status_code == 200, 30, "S3 asked again")
        assert s3.gets(bucket, "page.html") == 2


def test_a_404_is_an_answer_not_a_failure(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """A missing key is remembered for --ttl as a 404, never as an error: with --ttl 0 the
    object is served as soon as it exists, error TTL or not."""
    proxy = start_proxy(ttl=0, error_ttl=60)
    assert get(proxy, "/new.html").status_code == 404
    put("new.html", b"new")
    assert get(proxy, "/new.html").content == b"new"


# -- one GET per key while S3 fails ----------------------------------------------------------


@pytest.mark.parametrize(
    ("copy", "stale_if_error", "status"),
    [
        pytest.param(False, 3600, 502, id="cold-miss"),
        pytest.param(True, 0, 502, id="expired-revalidation"),
        pytest.param(True, 3600, 200, id="expired-stale-if-error"),
    ],
)
def test_concurrent_requests_for_a_failing_key_make_one_get(
    s3: S3Server,
    bucket: str,
    put: Put,
    start_proxy: StartProxy,
    no_retries: None,
    copy: bool,
    stale_if_error: int,
    status: int,
) -> None:
    """Requests that arrive while S3 holds the key's GET — a miss, or the revalidation of an
    expired copy — wait for that one GET and share its failure (a 502, or the copy), with
    no error memory to help."""
    put("page.html", b"old")
    proxy = start_proxy(
        ttl=0, stale_if_error=stale_if_error, error_ttl=0, read_timeout=30, origin_deadline=30
    )
    if copy:
        assert get(proxy, "/page.html").content == b"old"
    s3.requests.clear()
    s3.faults.append(Fault("/page.html", blackhole=True, times=100))
    clients = 12
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        pending = [pool.submit(get, proxy, "/page.html") for _ in range(clients)]
        wait_for(
            lambda: requests_in_flight(proxy) == clients and s3.gets(bucket, "page.html") > 0,
            30,
            "every request read while S3 holds the GET",
        )
        s3.release()  # S3 answers the held GET 503
        responses = [p.result() for p in pending]
    assert [r.status_code for r in responses] == [status] * clients
    assert s3.gets(bucket, "page.html") == 1


def test_one_get_per_key_reaches_a_blackholed_s3(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """Requests for two keys, cold or expired, concurrent or after the failure, cost one GET
    per key: the fill while it runs, the error memory after it."""
    put("cold.html", b"cold")
    put("expired.html", b"expired")
    proxy = start_proxy(ttl=0, stale_if_error=0, read_timeout=1, origin_deadline=1.5, error_ttl=60)
    assert get(proxy, "/expired.html").status_code == 200
    s3.requests.clear()
    s3.faults.append(Fault(".html", blackhole=True, times=100))
    paths = ["/cold.html", "/expired.html"] * 8
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        statuses = list(pool.map(lambda p: get(proxy, p).status_code, paths))
    assert statuses == [504] * len(paths)
    assert s3.gets(bucket, "cold.html") == 1
    assert s3.gets(bucket, "expired.html") == 1


# -- stale-while-revalidate -------------------------------------------------------------------


def test_stale_while_revalidate_serves_at_once_and_revalidates_once(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """An expired copy inside --stale-while-revalidate is served without waiting for S3
    (which here never answers), and all those requests together cost one background GET."""
    put("page.html", b"old")
    proxy = start_proxy(ttl=0, stale_while_revalidate=60, read_timeout=30, origin_deadline=30)
    assert get(proxy, "/page.html").content == b"old"
    s3.requests.clear()
    s3.faults.append(Fault("/page.html", blackhole=True))
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: get(proxy, "/page.html", AT_ONCE), range(6)))
    responses.append(get(proxy, "/page.html", AT_ONCE))
    assert all(r.status_code == 200 and r.content == b"old" for r in responses)
    assert int(responses[-1].headers["age"]) >= 0
    assert s3.gets(bucket, "page.html") == 1
    assert by_status(proxy)["revalidating"] == 7


def test_the_background_revalidation_brings_the_new_version(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """After the background GET, the new version is served."""
    put("page.html", b"old")
    proxy = start_proxy(ttl=0, stale_while_revalidate=60)
    assert get(proxy, "/page.html").content == b"old"
    put("page.html", b"new")
    assert get(proxy, "/page.html").content == b"old"  # at once, while S3 is asked
    wait_for(lambda: get(proxy, "/page.html").content == b"new", 30, "the new version")


def test_a_304_in_the_background_makes_the_copy_fresh_again(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """The background GET is conditional: S3's 304 refreshes the stored copy, which is then a
    hit again."""
    put("page.html", b"page")
    proxy = start_proxy(ttl=1, stale_while_revalidate=60)
    assert get(proxy, "/page.html").content == b"page"
    wait_for(
        lambda: (
            get(proxy, "/page.html").content == b"page"
            and by_status(proxy).get("revalidating", 0) > 0
        ),
        30,
        "the copy expired and served stale",
    )
    hits = by_status(proxy).get("hit", 0)
    wait_for(
        lambda: get(proxy, "/page.html").content == b"page" and by_status(proxy)["hit"] > hits,
        30,
        "a hit after the revalidation",
    )
    path = f"/{bucket}/page.html"
    gets = [headers for method, p, headers in s3.requests if method == "GET" and p == path]
    assert len(gets) >= 2 and "if-none-match" not in gets[0]
    assert all("if-none-match" in headers for headers in gets[1:])


def test_a_failed_background_revalidation_is_remembered(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, no_retries: None
) -> None:
    """S3 failing the background GET: the copy is still served at once (cache status
    ``stale``), and S3 is not asked again within the error TTL."""
    put("page.html", b"old")
    proxy = start_proxy(ttl=0, stale_while_revalidate=60, error_ttl=60)
    assert get(proxy, "/page.html").content == b"old"
    s3.faults.append(Fault("/page.html", status=500, times=10_000))
    wait_for(
        lambda: (
            get(proxy, "/page.html", AT_ONCE).content == b"old"
            and by_status(proxy).get("stale", 0) > 0
        ),
        30,
        "the failure remembered",
    )
    asked = s3.gets(bucket, "page.html")
    for _ in range(5):
        assert get(proxy, "/page.html", AT_ONCE).content == b"old"
    assert s3.gets(bucket, "page.html") == asked == 2


BLACKHOLE = {"blackhole": True}
FAILING = {"status": 500, "times": 100}
#: S3 never answers within a client's AT_ONCE unless a window serves the copy.
SLOW = {"read_timeout": 30, "origin_deadline": 30}


@pytest.mark.parametrize(
    ("cache_control", "options", "fault", "cache"),
    [
        pytest.param(
            "max-age=0, stale-while-revalidate=60",
            {"stale_while_revalidate": 0, **SLOW},
            BLACKHOLE,
            "revalidating",
            id="own-swr-opens",
        ),
        pytest.param(
            "max-age=0, stale-while-revalidate=0",
            {"stale_while_revalidate": 60, "stale_if_error": 0},
            FAILING,
            None,
            id="own-swr-closes",
        ),
        pytest.param(
            "max-age=0, must-revalidate, stale-while-revalidate=60",
            {"stale_if_error": 3600},
            FAILING,
            None,
            id="must-revalidate-closes-both",
        ),
        pytest.param(
            "max-age=0, stale-if-error=0",
            {"stale_if_error": 3600},
            FAILING,
            None,
            id="own-stale-if-error-closes",
        ),
        pytest.param(
            "max-age=0, stale-if-error=600",
            {"stale_if_error": 0},
            FAILING,
            "stale",
            id="own-stale-if-error-opens",
        ),
    ],
)
def test_the_objects_own_stale_directives_rule_under_honor_cache_control(
    s3: S3Server,
    bucket: str,
    put: Put,
    start_proxy: StartProxy,
    no_retries: None,
    cache_control: str,
    options: dict[str, Any],
    fault: dict[str, Any],
    cache: str | None,
) -> None:
    """With --honor-cache-control, an object's stale-while-revalidate and stale-if-error
    (RFC 5861) replace the options' windows, and must-revalidate closes both."""
    put("page.html", b"old", CacheControl=cache_control)
    proxy = start_proxy(honor_cache_control=True, error_ttl=0, **options)
    assert get(proxy, "/page.html").content == b"old"
    s3.requests.clear()
    s3.faults.append(Fault("/page.html", **fault))
    response = get(proxy, "/page.html", AT_ONCE)
    if cache is None:
        assert response.status_code == 502
    else:
        assert response.status_code == 200 and response.content == b"old"
        assert by_status(proxy)[cache] == 1
    assert s3.gets(bucket, "page.html") == 1


def test_background_revalidations_end_with_the_server(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """A background GET that S3 holds does not keep the worker from stopping: the
    read-through tracks it and cancels it at shutdown."""
    put("page.html", b"old")
    proxy = start_proxy(ttl=0, stale_while_revalidate=60, read_timeout=60, origin_deadline=60)
    assert get(proxy, "/page.html").content == b"old"
    s3.faults.append(Fault("/page.html", blackhole=True))
    assert get(proxy, "/page.html", AT_ONCE).content == b"old"
    wait_for(lambda: s3.gets(bucket, "page.html") == 2, 30, "the background GET")
    proxy.stop()
    assert not proxy._thread.is_alive()
