"""A group of instances on one Redis (``--redis-url``): purges everywhere, Redis away, catching
up. s3proxy under uvicorn in this process, one cache dir each, a real ``redis-server``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing

from s3proxy.config import Config
from s3proxy.group import member
from s3proxy.group.bus import Bus
from s3proxy.group.state import InstanceState, Known, Step, step
from tests.group_servers import REDIS_SERVER, RedisServer
from tests.servers import ProxyServer, S3Server, free_port
from tests.sink_servers import wait_for

AUTH = {"authorization": "Bearer test-token"}


@pytest.mark.parametrize(
    ("epoch", "version", "id_", "expected"),
    [
        pytest.param("e", 5, "9-1", Step.APPLY, id="next"),
        pytest.param("e", 4, "8-0", Step.SKIP, id="applied-by-a-sibling"),
        pytest.param("e", 7, "9-1", Step.CLEAR, id="gap"),
        pytest.param("f", 1, "9-1", Step.CLEAR, id="new-epoch"),
        pytest.param("d", 3, "7-5", Step.SKIP, id="an-older-epoch-seen"),
        pytest.param("e", 2, "9-1", Step.ROLLBACK, id="unseen-but-not-after-ours"),
        pytest.param("e", 4, "10-0", Step.ROLLBACK, id="ours-again-unseen"),
    ],
)
def test_step(epoch: str, version: int, id_: str, expected: Step) -> None:
    """An instance that applied version 4 of epoch e (stream id 8-0): the next version is
    applied, an entry it saw skipped, a gap or a new epoch clears, and an unseen entry with a
    version not after its own proves Redis went back to an older copy of its data."""
    assert step(Known("i", "e", 4, "8-0"), epoch, version, id_) is expected


def test_instance_state_is_made_once_and_kept(tmp_path: Path) -> None:
    """The instance id is written on first read and read back by the next process."""
    first = InstanceState(str(tmp_path)).read()
    with InstanceState(str(tmp_path)).locked() as known:
        assert known.instance == first.instance
        known.version = 7
    assert InstanceState(str(tmp_path)).read().version == 7


def test_no_redis_import_without_the_flag() -> None:
    """Without --redis-url the server's modules do not load redis-py at all."""
    code = (
        "import sys, s3proxy.cli, s3proxy.app, s3proxy.resources, s3proxy.management;"
        "assert 'redis' not in sys.modules and 's3proxy.group' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def group_status(server: ProxyServer) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(server.url + "/_proxy/ready").json()["group"]
    return status


def joined(servers: list[ProxyServer]) -> bool:
    return all(
        (s := group_status(server))["redis"] == "connected" and s["instances"] == len(servers)
        for server in servers
    )


@pytest.fixture
def instances(
    redis_server: RedisServer, start_proxy: Callable[..., ProxyServer], tmp_path: Path
) -> Callable[[int], list[ProxyServer]]:
    """``instances(n)``: n servers in one group, each its own cache dir, every one joined.
    (Redis is set up first so that it stops last.)"""

    def start(n: int) -> list[ProxyServer]:
        servers = [
            start_proxy(
                cache_dir=str(tmp_path / f"cache-{i}"), ttl=3600, redis_url=redis_server.url
            )
            for i in range(n)
        ]
        wait_for(lambda: joined(servers), what="every instance in the group")
        return servers

    return start


def bodies(servers: list[ProxyServer], path: str) -> list[bytes]:
    return [httpx.get(server.url + path).content for server in servers]


def seconds(answer: dict[str, Any]) -> dict[str, float]:
    """The answer's publish-to-last-acknowledgement time (acknowledgements are counted only
    within a second, so ``acknowledged`` is what says "in time")."""
    took: float = answer["group"]["seconds"]
    return {"seconds": took}


def purge(server: ProxyServer, query: str = "") -> dict[str, Any]:
    answer = httpx.delete(server.url + "/_proxy/_private/_cache/clear" + query, headers=AUTH)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_purge_on_one_instance_reaches_every_instance(
    instances: Callable[[int], list[ProxyServer]], put: Callable[..., None]
) -> None:
    """A path purge through one instance drops the page on the others too; the answer says
    both instances acknowledged."""
    servers = instances(2)
    put("page.html", b"v1")
    assert bodies(servers, "/page.html") == [b"v1", b"v1"]
    put("page.html", b"v2")
    assert bodies(servers, "/page.html") == [b"v1", b"v1"]  # cached for an hour
    answer = purge(servers[0], "?path=/page.html")
    assert answer["group"] == {"version": 1, "instances": 2, "acknowledged": 2} | seconds(answer)
    assert bodies(servers, "/page.html") == [b"v2", b"v2"]


def test_clear_and_prefix_reach_every_instance(
    instances: Callable[[int], list[ProxyServer]], put: Callable[..., None]
) -> None:
    """A prefix purge and a clear, each through the other instance, apply everywhere in
    version order."""
    servers = instances(2)
    put("docs/a.html", b"a1")
    put("b.html", b"b1")
    assert bodies(servers, "/docs/a.html") + bodies(servers, "/b.html") == [b"a1"] * 2 + [b"b1"] * 2
    put("docs/a.html", b"a2")
    put("b.html", b"b2")
    assert purge(servers[1], "?prefix=/docs/")["group"]["acknowledged"] == 2
    assert bodies(servers, "/docs/a.html") + bodies(servers, "/b.html") == [b"a2"] * 2 + [b"b1"] * 2
    answer = purge(servers[0])
    assert answer["group"] == {"version": 2, "instances": 2, "acknowledged": 2} | seconds(answer)
    assert bodies(servers, "/b.html") == [b"b2", b"b2"]


def test_redis_away_briefly_purges_apply_here_and_are_sent_on_return(
    instances: Callable[[int], list[ProxyServer]],
    put: Callable[..., None],
    redis_server: RedisServer,
) -> None:
    """Redis away (restarted with its data): both instances keep serving, a purge applies on
    the instance that got it and reaches the other when Redis is back; nothing else is
    cleared after so short an outage."""
    servers = instances(2)
    put("page.html", b"v1")
    put("other.html", b"o1")
    assert (
        bodies(servers, "/page.html") + bodies(servers, "/other.html") == [b"v1"] * 2 + [b"o1"] * 2
    )
    put("page.html", b"v2")
    put("other.html", b"o2")
    redis_server.shutdown_saving()
    wait_for(lambda: all(group_status(s)["redis"] == "unreachable" for s in servers))
    answer = purge(servers[0], "?path=/page.html")
    assert answer["group"]["redis"] == "unreachable"
    assert bodies(servers, "/page.html") == [b"v2", b"v1"]  # applied here only, so far
    redis_server.start()
    wait_for(lambda: bodies(servers, "/page.html") == [b"v2", b"v2"], what="the unsent purge")
    assert bodies(servers, "/other.html") == [b"o1", b"o1"]  # not cleared: no event was missed


def test_redis_away_longer_than_the_grace_clears_on_return(
    instances: Callable[[int], list[ProxyServer]],
    put: Callable[..., None],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An instance whose Redis was away longer than the grace period clears its cache when
    Redis is back, even with the same data: another instance may have purged meanwhile."""
    monkeypatch.setattr(member, "OUTAGE_GRACE", 0.2)
    servers = instances(2)
    put("other.html", b"o1")
    assert bodies(servers, "/other.html") == [b"o1", b"o1"]
    put("other.html", b"o2")
    redis_server.shutdown_saving()
    wait_for(lambda: all(group_status(s)["redis"] == "unreachable" for s in servers))
    assert bodies(servers, "/other.html") == [b"o1", b"o1"]  # still served from the caches
    time.sleep(0.3)  # the outage itself: longer than the grace period
    redis_server.start()
    wait_for(lambda: joined(servers), what="both back in the group")
    assert bodies(servers, "/other.html") == [b"o2", b"o2"]


def test_an_instance_restarted_on_its_disk_catches_up(
    instances: Callable[[int], list[ProxyServer]],
    start_proxy: Callable[..., ProxyServer],
    put: Callable[..., None],
) -> None:
    """An instance stopped while another purged applies that purge when it starts again on
    the same cache dir, and keeps the rest of its cache: the stream proves nothing else was
    missed."""
    first, second = instances(2)
    put("page.html", b"v1")
    put("other.html", b"o1")
    assert bodies([second], "/page.html") + bodies([second], "/other.html") == [b"v1", b"o1"]
    second.stop()
    put("page.html", b"v2")
    put("other.html", b"o2")
    assert purge(first, "?path=/page.html")["group"]["acknowledged"] == 1
    config = second.config
    again = start_proxy(
        cache_dir=config.cache.cache_dir, ttl=3600, redis_url=config.group.redis_url
    )
    wait_for(lambda: group_status(again)["version"] == 1, what="the missed purge applied")
    assert bodies([again], "/page.html") + bodies([again], "/other.html") == [b"v2", b"o1"]


def test_an_unknown_event_type_is_skipped_in_order(
    instances: Callable[[int], list[ProxyServer]], redis_server: RedisServer, bucket: str
) -> None:
    """An event type this version does not know (a newer instance's) is acknowledged and
    skipped; the versions after it apply as usual."""
    servers = instances(2)

    async def publish() -> tuple[int, int]:
        bus = Bus(redis_server.url, None, f"s3proxy:{bucket}:")
        try:
            sent = await bus.publish("site_rename", {"name": "docs"}, "a-newer-instance")
            return sent.version, await bus.acks(sent.id, 2, member.ACK_WAIT)
        finally:
            await bus.close()

    assert asyncio.run(publish()) == (1, 2)
    answer = purge(servers[0])
    assert answer["group"] == {"version": 2, "instances": 2, "acknowledged": 2} | seconds(answer)


def test_tls_and_a_password(
    start_proxy: Callable[..., ProxyServer],
    put: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """rediss:// to a Redis that speaks only TLS, its certificate checked against a private CA
    (OpenSSL's SSL_CERT_FILE), the password from --redis-password: a purge still reaches the
    other instance."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis", password="tls-secret", tls=True)
    assert redis.ca is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(redis.ca))
    with redis.running():
        servers = [
            start_proxy(
                cache_dir=str(tmp_path / f"cache-{i}"),
                ttl=3600,
                redis_url=redis.url,
                redis_password="tls-secret",
            )
            for i in range(2)
        ]
        wait_for(lambda: joined(servers), what="both instances over TLS")
        put("page.html", b"v1")
        assert bodies(servers, "/page.html") == [b"v1", b"v1"]
        put("page.html", b"v2")
        assert purge(servers[1], "?path=/page.html")["group"]["acknowledged"] == 2
        assert bodies(servers, "/page.html") == [b"v2", b"v2"]
        for server in servers:
            server.stop()  # before Redis goes


def test_readiness_and_gauge_show_redis(
    start_proxy: Callable[..., ProxyServer], redis_server: RedisServer, tmp_path: Path
) -> None:
    """/_proxy/ready stays 200 with Redis away and says so in its details; the Prometheus
    gauge s3proxy_redis_connected goes from 1 to 0."""
    server = start_proxy(ttl=3600, redis_url=redis_server.url, prometheus=True)
    wait_for(lambda: joined([server]))

    def gauge() -> str:
        text = httpx.get(server.url + "/_proxy/_private/metrics", headers=AUTH).text
        (line,) = [x for x in text.splitlines() if x.startswith("s3proxy_redis_connected ")]
        return line.split()[1]

    assert gauge() == "1.0"
    redis_server.kill()
    # The first error may be the dying server's (a reset); the next attempt's is the refusal.
    wait_for(lambda: "Connection refused" in (group_status(server).get("error") or ""))
    ready = httpx.get(server.url + "/_proxy/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["group"]["redis"] == "unreachable"
    assert gauge() == "0.0"


def test_a_site_purge_reaches_every_instance(
    redis_server: RedisServer, base_config: Config, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """With a sites file, ``?site=a&path=`` on one instance drops site a's page on the other
    too (the event carries the namespaced cache key), and site b's page with the same path
    stays."""
    for key in ("a/x.html", "b/x.html"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=b"1")
    sites = tmp_path / "sites.toml"
    sites.write_text(
        f'[sites.a]\nhosts = ["a.test"]\nbucket = "{bucket}"\nprefix = "a"\n'
        f'[sites.b]\nhosts = ["b.test"]\nbucket = "{bucket}"\nprefix = "b"\n'
    )
    servers = []
    try:
        for i in range(2):
            config = base_config.replace(
                port=free_port(),
                sites_file=str(sites),
                cache_dir=str(tmp_path / f"cache-{i}"),
                ttl=3600,
                redis_url=redis_server.url,
            )
            servers.append(ProxyServer(config).start())
        wait_for(lambda: joined(servers), what="both instances in the group")

        def pages() -> list[bytes]:
            return [
                httpx.get(server.url + "/x.html", headers={"host": host}).content
                for host in ("a.test", "b.test")
                for server in servers
            ]

        assert pages() == [b"1"] * 4
        for key in ("a/x.html", "b/x.html"):
            s3.client().put_object(Bucket=bucket, Key=key, Body=b"2")
        answer = purge(servers[0], "?site=a&path=/x.html")
        assert answer["group"]["acknowledged"] == 2
        assert pages() == [b"2", b"2", b"1", b"1"]
    finally:
        for server in servers:
            server.stop()


def clears(logs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The captured ``group_cache_cleared`` reasons, by instance."""
    cleared: dict[str, list[str]] = {}
    for line in logs:
        if line["event"] == "group_cache_cleared":
            cleared.setdefault(line["instance"], []).append(line["reason"])
    return cleared


@pytest.mark.parametrize("in_place", [False, True], ids=["restarted-on-a-backup", "in-place"])
def test_redis_restored_from_an_older_copy_clears_once_and_purges_flow_again(
    instances: Callable[[int], list[ProxyServer]],
    put: Callable[..., None],
    redis_server: RedisServer,
    in_place: bool,
) -> None:
    """Redis taken back to a copy older than the last purge (the same epoch, a lower
    version), restarted on it or rewritten under connected instances: each instance clears
    once, the first to see it proving the rollback (it renames the epoch, so the other
    follows whenever it looks), and both take Redis's version. A purge after it, whose
    version both had already applied, reaches the other instance."""
    servers = instances(2)
    assert purge(servers[0], "?path=/nothing.html")["group"]["acknowledged"] == 2
    back = redis_server.rewind(in_place)  # to version 1
    assert purge(servers[1], "?path=/nothing.html")["group"]["acknowledged"] == 2
    put("page.html", b"v1")
    assert bodies(servers, "/page.html") == [b"v1", b"v1"]
    put("page.html", b"v2")
    with structlog.testing.capture_logs() as logs:
        back()
        wait_for(
            lambda: all((s := group_status(x))["version"] == 1 and s["redis"] == "connected"
                        for x in servers),
            what="both back at Redis's version",
        )  # fmt: skip
        assert bodies(servers, "/page.html") == [b"v2", b"v2"]  # cleared
        put("page.html", b"v3")
        answer = purge(servers[1], "?path=/page.html")
        assert answer["group"] == {"version": 2, "instances": 2, "acknowledged": 2} | seconds(
            answer
        )
        assert bodies(servers, "/page.html") == [b"v3", b"v3"]
    reasons = sorted(reason for found in clears(logs).values() for reason in found)
    assert len(clears(logs)) == 2 and len(reasons) == 2, reasons
    assert reasons[0] == member.NEW_EPOCH and reasons[1].startswith("rollback: "), reasons


def test_redis_flushed_clears_each_instance_once(
    instances: Callable[[int], list[ProxyServer]],
    start_proxy: Callable[..., ProxyServer],
    put: Callable[..., None],
    redis_server: RedisServer,
) -> None:
    """FLUSHALL while two instances are connected and a third is stopped: with no event
    coming, the connected ones notice by their heartbeat, clear once each and converge on
    the new epoch; the stopped one, started again on its disk, clears once too."""
    servers = instances(3)
    put("page.html", b"v1")
    assert bodies(servers, "/page.html") == [b"v1"] * 3
    put("page.html", b"v2")
    away = servers.pop()
    away.stop()
    with structlog.testing.capture_logs() as logs:
        with redis_server.client() as client:
            client.flushall()
        wait_for(lambda: bodies(servers, "/page.html") == [b"v2", b"v2"], 30, "both cleared")
        config = away.config
        servers.append(
            start_proxy(
                cache_dir=config.cache.cache_dir, ttl=3600, redis_url=config.group.redis_url
            )
        )
        wait_for(lambda: joined(servers), what="all three in the group")
        assert bodies(servers, "/page.html") == [b"v2"] * 3
        assert purge(servers[0], "?path=/nothing.html")["group"]["acknowledged"] == 3
    assert list(clears(logs).values()) == [[member.NEW_EPOCH]] * 3


def test_a_rollback_renames_the_epoch_once(redis_server: RedisServer) -> None:
    """Redis's side: an instance that applied version 2 finds a Redis rewound to version 1
    even after new events took versions 2 and 3 again (by the entry after its last id), the
    epoch is renamed with the registrations' stamp, and nobody renames it again: not the
    same instance's next look, not a suspicion from the old epoch, not a new instance."""

    async def scenario() -> None:
        bus = Bus(redis_server.url, None, "s3proxy:t:")
        try:
            epoch = (await bus.head(None, 0, "0-0")).epoch
            await bus.publish(member.INVALIDATE, [], "x")
            back = redis_server.rewind(in_place=True)  # to version 1
            applied = await bus.publish(member.INVALIDATE, [], "x")
            back()
            for _ in range(2):  # versions 2 and 3 again, after the applied one's id
                await bus.publish(member.INVALIDATE, [], "x")
            found = await bus.head(epoch, applied.version, applied.id)
            assert found.rolled_back and found.epoch != epoch and found.version == 3
            assert (await bus.registrations({"r": {}})).stamp == f"{found.epoch}:3"
            again = await bus.head(epoch, applied.version, applied.id, suspect=epoch)
            assert (again.epoch, again.rolled_back) == (found.epoch, False)
            fresh = await bus.head(None, 0, "0-0")
            assert (fresh.epoch, fresh.rolled_back) == (found.epoch, False)
        finally:
            await bus.close()

    asyncio.run(scenario())
