"""Runtime sites in a group of instances (``--redis-url`` with ``--config``): a registration
or removal on one instance is served by every instance, by one that starts later and by one
that was away; a reload of one instance's sites file keeps them; Redis away refuses changes
but serves on, and Redis restarted empty gets the set back. s3proxy under uvicorn in this
process, one cache dir and one sites file each, a real ``redis-server``, moto as S3."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from s3proxy.group.bus import Bus
from s3proxy.registry import newer
from tests.group_servers import RedisServer
from tests.servers import ProxyProcess, ProxyServer, S3Server, free_port
from tests.sink_servers import wait_for
from tests.test_group import group_status, joined
from tests.test_registry import AUTH, delete, error, home, listing, put, replace, sites_text

GONE = "No site is served at this host name\n"


@pytest.mark.parametrize(
    ("stamp", "than", "expected"),
    [
        pytest.param("e1:5", "", True, id="any-over-none"),
        pytest.param("e1:5", "e1:4", True, id="later"),
        pytest.param("e1:5", "e1:5", False, id="same"),
        pytest.param("e1:4", "e1:10", False, id="older"),
        pytest.param("e2:1", "e1:10", True, id="new-epoch"),
        pytest.param("", "e1:1", False, id="none"),
    ],
)
def test_newer(stamp: str, than: str, expected: bool) -> None:
    """A copy is replaced only by a later stamp of its epoch, or by another epoch's."""
    assert newer(stamp, than) is expected


@pytest.fixture
def instance(
    base_config: Config, s3: S3Server, bucket: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Callable[[str], ProxyServer]]:
    """``instance(name)``: an instance with its own cache dir and copy of the sites file
    (site a), in the group; the same name again restarts on the same disk."""
    for key in ("a/index.html", "r/index.html", "s/index.html"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())
    servers: list[ProxyServer] = []

    def start(name: str) -> ProxyServer:
        sites = tmp_path / f"conf-{name}" / "sites.toml"
        if not sites.exists():
            sites.parent.mkdir()
            sites.write_text(sites_text(bucket))
        config = base_config.replace(
            port=free_port(),
            sites_file=str(sites),
            cache_dir=str(tmp_path / f"cache-{name}"),
            redis_url=redis_server.url,
        )
        servers.append(ProxyServer(config).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def group(instance: Callable[[str], ProxyServer], *names: str) -> list[ProxyServer]:
    servers = [instance(name) for name in names]
    wait_for(lambda: joined(servers), what="every instance in the group")
    return servers


def site(bucket: str, name: str) -> dict[str, Any]:
    return {"hosts": [f"{name}.test"], "bucket": bucket, "prefix": name, "ttl": 0}


def config_version(server: ProxyServer) -> int:
    answer = httpx.get(server.url + "/_proxy/_private/config", headers=AUTH)
    version: int = answer.json()["version"]
    return version


def serving(servers: list[ProxyServer], host: str, page: str) -> bool:
    return all(home(server, host) == page for server in servers)


def test_changes_on_any_instance_reach_every_instance(
    instance: Callable[[str], ProxyServer], bucket: str
) -> None:
    """A PUT on A is served by B (both acknowledged); a PUT and a DELETE on B reach A; an
    instance away meanwhile and restarted on its disk drops what was deleted and serves what
    was added; a new instance started later serves the same set."""
    a, b = group(instance, "a", "b")
    created = put(a, "r", site(bucket, "r"))
    assert created.status_code == 201
    assert created.json()["served"] is True and created.json()["group"]["instances"] == 2
    wait_for(lambda: serving([a, b], "r.test", "r/index.html"), what="r on both")

    assert put(b, "s", site(bucket, "s")).status_code == 201
    assert delete(b, "r").json()["group"]["instances"] == 2
    wait_for(lambda: serving([a, b], "r.test", GONE), what="r gone on both")
    wait_for(lambda: serving([a, b], "s.test", "s/index.html"), what="s on both")

    b.stop()  # away while A changes both ways
    assert put(a, "r", site(bucket, "r")).status_code == 201
    assert delete(a, "s").status_code == 200
    everyone = [a, instance("b"), instance("c")]
    wait_for(lambda: joined(everyone), what="b back and c in the group")
    wait_for(lambda: serving(everyone, "r.test", "r/index.html"), what="r back everywhere")
    wait_for(lambda: serving(everyone, "s.test", GONE), what="s gone everywhere")
    assert [set(listing(server)) for server in everyone] == [{"a", "r"}] * 3


def test_every_worker_of_an_instance_serves_a_change(
    instance: Callable[[str], ProxyServer],
    s3: S3Server,
    bucket: str,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """The real command with two workers in the group (and no --bucket, which instance a
    has): a PUT and a DELETE on another instance are served by both its workers (twenty
    requests over fresh connections)."""
    (a,) = group(instance, "a")
    sites = str(tmp_path / "conf-a" / "sites.toml")
    cache = str(tmp_path / "cache-two")
    # No --bucket here, where instance a has one: instances with a sites file are one group.
    proxy = ProxyProcess.two_workers(sites, s3, cache, "--redis-url", redis_server.url)
    fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))  # reach both
    try:
        stats = proxy.url + "/_proxy/_private/_cache/stats"
        workers = lambda: {fresh.get(stats, headers=AUTH).json()["worker"] for _ in range(20)}  # noqa: E731
        wait_for(lambda: len(workers()) == 2, timeout=30, what="both workers answering")
        answers = lambda: {fresh.get(proxy.url, headers={"host": "r.test"}).text for _ in range(20)}  # noqa: E731
        assert put(a, "r", site(bucket, "r")).status_code == 201
        wait_for(lambda: answers() == {"r/index.html"}, what="r in every worker")
        assert delete(a, "r").status_code == 200
        wait_for(lambda: answers() == {GONE}, what="r gone from every worker")
    finally:
        fresh.close()
        proxy.kill()


def test_a_reload_keeps_registrations_and_a_conflict_is_reported(
    instance: Callable[[str], ProxyServer], bucket: str, tmp_path: Path
) -> None:
    """A's sites file rewritten: A still serves the registered site. A's file claiming its
    host: A serves the file's site, lists the registration as not served and says so in
    readiness, B still serves it, and changes from B still reach A; the file letting go, A
    serves it again."""
    a, b = group(instance, "a", "b")
    assert put(b, "r", site(bucket, "r")).status_code == 201
    a_file = tmp_path / "conf-a" / "sites.toml"
    loaded = config_version(a)
    replace(a_file, sites_text(bucket).replace("ttl = 0", "ttl = 1"))
    wait_for(lambda: config_version(a) > loaded, what="the file reloaded")  # and r kept:
    assert serving([a, b], "r.test", "r/index.html")

    claims = f'[sites.f]\nhosts = ["r.test"]\nbucket = "{bucket}"\nprefix = "s"\n'
    replace(a_file, sites_text(bucket, claims))
    wait_for(lambda: home(a, "r.test") == "s/index.html", what="A's file claiming r.test")
    shadowed = listing(a)["r"]
    assert shadowed["served"] is False and "r.test is already site f's" in shadowed["problem"]
    ready = httpx.get(a.url + "/_proxy/ready").json()
    assert ready["ready"] is True and "r" in ready["sites_not_served"]
    assert home(b, "r.test") == "r/index.html"
    assert put(b, "t", {**site(bucket, "t"), "prefix": "r"}).status_code == 201
    wait_for(lambda: home(a, "t.test") == "r/index.html", what="a later change on A")

    replace(a_file, sites_text(bucket))
    wait_for(lambda: home(a, "r.test") == "r/index.html", what="r served again on A")


def test_redis_away_refuses_changes_and_redis_back_empty_gets_them_again(
    instance: Callable[[str], ProxyServer],
    bucket: str,
    redis_server: RedisServer,
) -> None:
    """Redis killed: both instances serve the registered site on, a change answers 503
    GROUP_UNAVAILABLE and changes nothing. Redis back with no data: the set is stored again
    from the instances' copies, and changes flow again."""
    a, b = group(instance, "a", "b")
    assert put(a, "r", site(bucket, "r")).status_code == 201
    wait_for(lambda: serving([a, b], "r.test", "r/index.html"), what="r on both")
    redis_server.kill()
    wait_for(lambda: all(group_status(s)["redis"] == "unreachable" for s in (a, b)))
    assert error(put(b, "s", site(bucket, "s"))) == (503, "GROUP_UNAVAILABLE")
    assert error(delete(a, "r")) == (503, "GROUP_UNAVAILABLE")
    assert serving([a, b], "r.test", "r/index.html") and serving([a, b], "s.test", GONE)

    redis_server.start()
    wait_for(lambda: joined([a, b]), what="both back in the group")

    async def stored() -> set[str]:
        bus = Bus(redis_server.url, None, "s3proxy:sites:")
        try:
            return set((await bus.registrations({})).tables)
        finally:
            await bus.close()

    wait_for(lambda: asyncio.run(stored()) == {"r"}, what="the set stored again")
    assert put(b, "s", site(bucket, "s")).status_code == 201
    wait_for(lambda: serving([a, b], "s.test", "s/index.html"), what="s on both")
    assert serving([a, b], "r.test", "r/index.html")


def test_a_change_is_stored_only_over_the_set_it_was_checked_against(
    redis_server: RedisServer,
) -> None:
    """Redis's script: a change checked against an older stamp writes nothing; the set is
    seeded from the first caller only while none is stored."""

    async def scenario() -> None:
        bus = Bus(redis_server.url, None, "s3proxy:t:")
        try:
            assert (await bus.registrations({})).stamp == ""  # nothing to seed with
            seeded = await bus.registrations({"r": {"prefix": "r"}})
            assert seeded.tables == {"r": {"prefix": "r"}} and seeded.stamp.endswith(":0")
            assert await bus.change_site("site_put", "s", {}, "", "x") is None
            stored = await bus.change_site("site_put", "s", {"prefix": "s"}, seeded.stamp, "x")
            assert stored is not None and stored[1].endswith(":1")
            assert await bus.change_site("site_delete", "r", None, seeded.stamp, "x") is None
            assert (await bus.change_site("site_delete", "r", None, stored[1], "x")) is not None
            again = await bus.registrations({"z": {}})
            assert again.tables == {"s": {"prefix": "s"}} and again.stamp.endswith(":2")
        finally:
            await bus.close()

    asyncio.run(scenario())


def test_redis_restored_from_an_older_copy_serves_its_registrations(
    instance: Callable[[str], ProxyServer], bucket: str, redis_server: RedisServer
) -> None:
    """Redis restored from a snapshot taken after r was registered and before s was: both
    instances take Redis's set (s disappears everywhere, r stays), and changes are stored
    again rather than refused as GROUP_BUSY against the copies' newer stamps."""
    a, b = group(instance, "a", "b")
    assert put(a, "r", site(bucket, "r")).status_code == 201
    snapshot = redis_server.snapshot()
    assert put(b, "s", site(bucket, "s")).status_code == 201
    wait_for(lambda: serving([a, b], "s.test", "s/index.html"), what="s on both")
    redis_server.restore(snapshot)
    wait_for(lambda: serving([a, b], "s.test", GONE), what="s gone everywhere")
    assert serving([a, b], "r.test", "r/index.html")
    assert put(a, "t", {**site(bucket, "t"), "prefix": "r"}).status_code == 201
    wait_for(lambda: serving([a, b], "t.test", "r/index.html"), what="t on both")
    assert [set(listing(server)) for server in (a, b)] == [{"a", "r", "t"}] * 2
