"""The group as it is deployed: Debian's nginx balancing round robin over three ``s3proxy``
commands (two workers each, each its own cache dir) on loopback, one ``redis-server`` with a
password, and moto as S3. A page changes, a purge goes through one instance, and every
instance serves the new page; Redis dies, service and local purges go on; Redis comes back
empty, and every instance, having missed what it cannot know, clears and converges."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.group import member
from tests.group_servers import REDIS_SERVER, RedisServer, nginx_balancer
from tests.servers import ProxyProcess, S3Server, cli_args, free_port
from tests.sink_servers import wait_for

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)
TOKEN = "topology-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
PASSWORD = "group-secret"
INSTANCES = 3


@contextlib.contextmanager
def instances(
    s3: S3Server, bucket: str, redis: RedisServer, tmp: Path
) -> Iterator[list[ProxyProcess]]:
    """Three s3proxy commands in one group; the password comes from S3PROXY_REDIS_PASSWORD."""
    proxies: list[ProxyProcess] = []
    try:
        for i in range(INSTANCES):
            port = free_port()
            args = cli_args(s3, bucket, str(tmp / f"cache-{i}"), port)
            args += ["--dir", str(tmp / f"logs-{i}"), "--threads", "2", "--ttl", "3600"]
            args += ["--auth-key", TOKEN, "--redis-url", redis.url, "--prometheus", "true"]
            proxies.append(ProxyProcess(args, {"S3PROXY_REDIS_PASSWORD": PASSWORD}, port))
        for proxy in proxies:
            proxy.wait_ready()
        yield proxies
    finally:
        for proxy in proxies:
            proxy.kill()


def group_of(proxy: ProxyProcess) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(proxy.url + "/_proxy/ready", timeout=10).json()["group"]
    return status


def all_say(proxies: list[ProxyProcess], redis: str, instances: int = INSTANCES) -> bool:
    """Every worker asked (four asks per instance reach both workers) sees Redis so."""
    return all(
        (g := group_of(proxy))["redis"] == redis
        and (redis != "connected" or g["instances"] == instances)
        for proxy in proxies
        for _ in range(4)
    )


def through(balancer: str, path: str) -> list[bytes]:
    """One round of the balancer: one GET per instance (nginx's round robin, one worker)."""
    with httpx.Client() as client:
        return [client.get(balancer + path).content for _ in range(INSTANCES)]


def direct(proxies: list[ProxyProcess], path: str) -> list[bytes]:
    return [httpx.get(proxy.url + path).content for proxy in proxies]


def log_events(tmp: Path, i: int, event: str) -> list[dict[str, Any]]:
    lines = [
        line
        for f in sorted((tmp / f"logs-{i}").glob("*.log"))
        for line in f.read_text().splitlines()
    ]
    return [e for e in map(json.loads, lines) if e.get("event") == event]


def test_three_instances_behind_nginx(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    """Purge through one instance: all three serve the new page next. Redis killed: the
    group serves on and purges apply locally. Redis back (empty): every instance clears
    once and serves what S3 has. Redis taken back to an older copy: every instance clears
    once more, and purges reach every instance again."""
    put = lambda key, body: s3.client().put_object(Bucket=bucket, Key=key, Body=body)  # noqa: E731
    put("index.html", b"home")
    put("page.html", b"v1")
    put("other.html", b"o1")
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis", password=PASSWORD).start()
    try:
        with (
            instances(s3, bucket, redis, tmp_path) as proxies,
            nginx_balancer(tmp_path / "nginx", [p.port for p in proxies]) as balancer,
        ):
            wait_for(lambda: all_say(proxies, "connected"), timeout=30, what="a group of 3")
            assert through(balancer, "/page.html") == [b"v1"] * 3
            assert through(balancer, "/other.html") == [b"o1"] * 3
            put("page.html", b"v2")
            assert through(balancer, "/page.html") == [b"v1"] * 3  # cached for an hour

            # One purge, through the balancer: every instance applied it within a second.
            purged = httpx.delete(
                balancer + "/_proxy/_private/_cache/clear?path=/page.html", headers=AUTH
            ).json()
            assert purged["group"].pop("seconds") >= 0  # publish to the last acknowledgement
            assert purged["group"] == {"version": 1, "instances": 3, "acknowledged": 3}
            assert through(balancer, "/page.html") == [b"v2"] * 3
            assert direct(proxies, "/page.html") * 2 == [b"v2"] * 6  # and every worker

            # Redis dies: service goes on, a purge applies on the instance that got it.
            redis.kill()
            put("page.html", b"v3")
            put("other.html", b"o2")
            assert through(balancer, "/page.html") == [b"v2"] * 3
            wait_for(lambda: all_say(proxies, "unreachable"), timeout=30, what="outage seen")
            purged = httpx.delete(
                proxies[0].url + "/_proxy/_private/_cache/clear?path=/page.html", headers=AUTH
            ).json()
            assert purged["group"]["redis"] == "unreachable"
            assert direct(proxies, "/page.html") == [b"v3", b"v2", b"v2"]
            for proxy in proxies:
                metrics = httpx.get(proxy.url + "/_proxy/_private/metrics", headers=AUTH).text
                assert "s3proxy_redis_connected 0.0" in metrics

            # Redis back, empty: a new epoch proves events may be lost; everyone clears.
            redis.start()
            wait_for(lambda: all_say(proxies, "connected"), timeout=30, what="the group back")
            assert through(balancer, "/page.html") == [b"v3"] * 3
            assert through(balancer, "/other.html") == [b"o2"] * 3  # never purged: cleared

            # Redis taken back to an older copy under the connected workers: a purge it
            # lacks was applied everywhere, so the group clears once more and follows it.
            back = redis.rewind(in_place=True)
            purged = httpx.delete(
                balancer + "/_proxy/_private/_cache/clear?path=/nothing.html", headers=AUTH
            ).json()
            assert purged["group"]["acknowledged"] == 3
            put("other.html", b"o3")
            back()
            wait_for(lambda: direct(proxies, "/other.html") == [b"o3"] * 3, what="cleared")
            purged = httpx.delete(
                balancer + "/_proxy/_private/_cache/clear?path=/page.html", headers=AUTH
            ).json()
            assert purged["group"]["acknowledged"] == 3  # not skipped as applied
    finally:
        redis.kill()
    for i in range(INSTANCES):
        # the outage is logged once per instance, though each of its two workers retried
        assert len(log_events(tmp_path, i, "redis_unreachable")) == 1, i
        cleared = [e["reason"] for e in log_events(tmp_path, i, "group_cache_cleared")]
        # once for the empty Redis, once for the rollback (by whichever worker saw it first)
        assert cleared[:1] == [member.NEW_EPOCH] and len(cleared) == 2, (i, cleared)
        assert cleared[1] == member.NEW_EPOCH or cleared[1].startswith("rollback: "), cleared
    assert log_events(tmp_path, 0, "group_unsent_published")
