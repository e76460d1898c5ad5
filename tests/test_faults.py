"""When S3 misbehaves: bounded waits and no retry storms (README, "When things fail").

Every test counts the GETs that reached S3; waits are only bounded from above, generously (the
code before these rules took four full read timeouts plus backoff)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from s3proxy import origin
from tests.servers import Fault, ProxyServer, S3Server, free_port

StartProxy = Callable[..., ProxyServer]
Put = Callable[..., None]


def timed_get(proxy: ProxyServer, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(proxy.url + path, timeout=60)
    return response, time.monotonic() - started


@pytest.mark.parametrize(
    ("read_timeout", "deadline", "before"),
    [
        pytest.param(2, 3, 8, id="no-retry-fits"),  # before: four attempts of 2 s
        pytest.param(30, 1, 30, id="deadline-under-read-timeout"),  # before: 30 s and more
    ],
)
def test_a_blackholed_s3_costs_one_attempt_when_no_retry_fits(
    s3: S3Server,
    bucket: str,
    put: Put,
    start_proxy: StartProxy,
    read_timeout: float,
    deadline: float,
    before: float,
) -> None:
    """S3 accepts the request and never answers: one attempt, cut by the read timeout or
    --origin-deadline, then 504 (a second attempt would not end before the deadline, so none
    is made)."""
    put("page.html", b"page")
    proxy = start_proxy(read_timeout=read_timeout, origin_deadline=deadline)
    s3.faults.append(Fault("/page.html", blackhole=True, times=10))
    response, elapsed = timed_get(proxy, "/page.html")
    assert response.status_code == 504
    assert s3.gets(bucket, "page.html") == 1
    assert elapsed < before


def test_a_stale_copy_stands_in_after_one_attempt(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """An expired copy is served (stale-if-error) after one read timeout, never a retry."""
    put("page.html", b"kept")
    proxy = start_proxy(ttl=0, read_timeout=2, stale_if_error=3600)
    assert httpx.get(proxy.url + "/page.html").content == b"kept"
    s3.requests.clear()
    s3.faults.append(Fault("/page.html", blackhole=True, times=10))
    response, elapsed = timed_get(proxy, "/page.html")
    assert response.status_code == 200 and response.content == b"kept"
    assert s3.gets(bucket, "page.html") == 1
    assert elapsed < 4 * 2  # two attempts of 2 s before


def test_a_refused_connection_is_a_502(bucket: str, start_proxy: StartProxy) -> None:
    """Nothing listens at the endpoint: 502 once the deadline's retries are spent."""
    proxy = start_proxy(endpoint_url=f"http://127.0.0.1:{free_port()}", origin_deadline=3)
    response, elapsed = timed_get(proxy, "/page.html")
    assert response.status_code == 502
    assert elapsed < 10


def test_retries_stay_within_the_budget(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy
) -> None:
    """Half the keys answer 500 for good (the breaker never opens: failures are not
    consecutive): retries add at most a tenth of the requests, plus the budget's reserve,
    where botocore alone would have tripled the failing ones."""
    calls = 15
    for i in range(calls):
        put(f"good{i}.txt", b"good")
    proxy = start_proxy()
    s3.faults.append(Fault(".bad", status=500, times=10_000))
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        for i in range(calls):
            assert client.get(f"/good{i}.txt").status_code == 200
            assert client.get(f"/{i}.bad").status_code == 502
    gets = sum(1 for method, _, _ in s3.requests if method == "GET")
    assert gets <= 1.1 * (2 * calls) + origin.RetryBudget().capacity


@pytest.fixture
def quick_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The breaker opens after 3 failures and probes after 0.3 s."""
    monkeypatch.setattr(origin, "BREAKER_THRESHOLD", 3)
    monkeypatch.setattr(origin, "BREAKER_COOLDOWN", 0.3)


def test_missing_keys_never_open_the_breaker(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, quick_breaker: None
) -> None:
    """404s are answers, not failures: a run of missing keys (a scanner) leaves existing pages
    served (it once opened the breaker, and every key then answered a remembered 404)."""
    put("page.html", b"page")
    proxy = start_proxy()
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        assert [client.get(f"/nope{i}.html").status_code for i in range(10)] == [404] * 10
        answer = client.get("/page.html")
        assert answer.status_code == 200 and answer.content == b"page"
    assert s3.gets(bucket, "page.html") == 1


def test_an_open_breaker_fails_fast_then_one_probe_closes_it(
    s3: S3Server, bucket: str, put: Put, start_proxy: StartProxy, quick_breaker: None
) -> None:
    """After consecutive failures, requests are answered 502 without asking S3 (an expired
    copy is served instead); once S3 answers again, a probe closes the breaker."""
    put("kept.html", b"kept")
    # No error memory: each key's failure would be remembered past the breaker's cooldown.
    proxy = start_proxy(ttl=0, stale_if_error=3600, error_ttl=0)
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        assert client.get("/kept.html").content == b"kept"
        s3.faults.append(Fault("", status=500, times=10_000))
        for i in range(3):
            assert client.get(f"/miss{i}.txt").status_code == 502
        s3.requests.clear()
        assert [client.get(f"/other{i}.txt").status_code for i in range(5)] == [502] * 5
        stale = client.get("/kept.html")
        assert stale.status_code == 200 and stale.content == b"kept"
        assert s3.requests == []
        s3.faults.clear()
        deadline = time.monotonic() + 20
        while s3.gets(bucket, "kept.html") == 0:  # the probe, after the cooldown
            assert client.get("/kept.html").content == b"kept"
            assert time.monotonic() < deadline, "no probe"
            time.sleep(0.05)
        assert client.get("/miss0.txt").status_code == 404
