"""Live reload of the sites file: a change of the file and SIGHUP swap the sites in every
worker; a bad file changes nothing and is reported; requests under load never fail and never
get another site's answer; clients of servers no longer used are closed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from tests.servers import KEY_ID, REGION, SECRET, ProxyProcess, ProxyServer, S3Server, free_port
from tests.sink_servers import wait_for

AUTH = {"authorization": "Bearer test-token"}


def sites(bucket: str, prefix_a: str = "a1", ttl: int = 0, extra: str = "") -> str:
    """Two sites on one bucket, told apart by their prefixes (a1/a2 are site a's, b site b's)."""
    return (
        f'[sites.a]\nhosts = ["a.test"]\nbucket = "{bucket}"\nprefix = "{prefix_a}"\n'
        f"ttl = {ttl}\n"
        f'[sites.b]\nhosts = ["b.test"]\nbucket = "{bucket}"\nprefix = "b"\nttl = {ttl}\n' + extra
    )


@pytest.fixture
def objects(s3: S3Server, bucket: str) -> None:
    for key in ("a1/index.html", "a2/index.html", "b/index.html"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())


@pytest.fixture
def sites_file(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "sites.toml"


@pytest.fixture
def proxy(
    base_config: Config, bucket: str, objects: None, sites_file: Path
) -> Iterator[ProxyServer]:
    sites_file.parent.mkdir()
    sites_file.write_text(sites(bucket))
    server = ProxyServer(base_config.replace(port=free_port(), sites_file=str(sites_file)))
    yield server.start()
    server.stop()


def get(proxy: Any, host: str) -> httpx.Response:
    return httpx.get(proxy.url + "/", headers={"host": host}, timeout=30)


def status(proxy: Any) -> dict[str, Any]:
    answer = httpx.get(proxy.url + "/_proxy/_private/config", headers=AUTH, timeout=10)
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def replace(path: Path, text: str) -> None:
    """Write ``text`` as an editor would: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_a_changed_file_is_served_and_reported(
    proxy: ProxyServer, bucket: str, sites_file: Path
) -> None:
    """Writing the file swaps the sites in: site a now serves its new prefix; the config
    endpoint gives the new version, when it was loaded and no error."""
    assert get(proxy, "a.test").text == "a1/index.html"
    first = status(proxy)
    assert (first["version"], first["last_error"], first["sites"]) == (1, None, ["a", "b"])
    replace(sites_file, sites(bucket, prefix_a="a2"))
    wait_for(lambda: get(proxy, "a.test").text == "a2/index.html", timeout=20, what="reload")
    second = status(proxy)
    assert second["version"] == 2 and second["loaded_at"] > first["loaded_at"]
    assert get(proxy, "b.test").text == "b/index.html"


def test_a_bad_file_changes_nothing_and_is_reported_until_fixed(
    proxy: ProxyServer, bucket: str, sites_file: Path
) -> None:
    """A bad file keeps the sites served and shows its one-line reason as last_error; a good
    file after it clears the error."""
    replace(sites_file, sites(bucket, prefix_a="a2", extra='[sites.c]\nhosts = ["a.test"]\n'))
    wait_for(lambda: status(proxy)["last_error"] is not None, timeout=20, what="refusal")
    error = status(proxy)["last_error"]
    assert error == f"{sites_file}: site c: bucket: missing (and no --bucket to inherit)" or (
        "site c: hosts: a.test is already site a's" in error
    )
    assert status(proxy)["version"] == 1
    assert get(proxy, "a.test").text == "a1/index.html"
    replace(sites_file, sites(bucket, prefix_a="a2"))
    wait_for(lambda: status(proxy)["last_error"] is None, timeout=20, what="the fixed file")
    assert status(proxy)["version"] == 2
    assert get(proxy, "a.test").text == "a2/index.html"


def test_the_config_endpoint_needs_the_token(proxy: ProxyServer) -> None:
    answer = httpx.get(proxy.url + "/_proxy/_private/config", timeout=10)
    assert answer.status_code == 403


def test_clients_of_servers_no_longer_used_close_once_idle(
    proxy: ProxyServer, s3: S3Server, bucket: str, sites_file: Path
) -> None:
    """Moving the sites to another server table closes the old server's client after the
    swap (nothing is in flight on it), and the new one serves."""
    assert get(proxy, "a.test").status_code == 200
    (old,) = proxy.app.resources.hosting.served.clients.values()
    server = (
        f'[servers.other]\nendpoint_url = "{s3.endpoint_url}"\nregion = "{REGION}"\n'
        f'key = "{KEY_ID}"\nsecret = "{SECRET}"\npath_style = true\nmax_connections = 5\n'
    )
    replace(sites_file, server + sites(bucket).replace("ttl = 0\n", 'ttl = 0\nserver = "other"\n'))
    wait_for(lambda: old.closed, timeout=20, what="the old client closed")
    (new,) = proxy.app.resources.hosting.served.clients.values()
    assert new is not old and new.config.s3_max_connections == 5
    assert get(proxy, "a.test").text == "a1/index.html"


def test_reload_under_load_fails_no_request_and_mixes_no_sites(
    proxy: ProxyServer, bucket: str, sites_file: Path
) -> None:
    """Clients keep asking both sites (ttl 0: every request revalidates with S3, so requests
    are in flight at each swap) while the file is rewritten ten times: every answer is a 200
    with its own site's body."""
    answers: dict[str, set[str]] = {"a.test": set(), "b.test": set()}
    failures: list[str] = []
    versions: list[int] = []

    async def hammer(client: httpx.AsyncClient, host: str, stop: asyncio.Event) -> int:
        count = 0
        while not stop.is_set():
            answer = await client.get("/", headers={"host": host})
            count += 1
            if answer.status_code != 200:
                failures.append(f"{host}: {answer.status_code} {answer.text}")
            answers[host].add(answer.text)
        return count

    async def rewrite(stop: asyncio.Event) -> None:
        try:
            for n in range(10):
                replace(sites_file, sites(bucket, prefix_a=("a2", "a1")[n % 2]))
                version = 2 + n
                done = lambda: status(proxy)["version"] >= version  # noqa: B023, E731
                await asyncio.to_thread(wait_for, done, 30, f"version {version}")
                versions.append(version)
        finally:
            stop.set()

    async def scenario() -> list[int]:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            loops = [hammer(client, host, stop) for host in ("a.test", "b.test") for _ in (0, 1)]
            *counts, _ = await asyncio.gather(*loops, rewrite(stop))
        return counts

    counts = asyncio.run(scenario())
    assert failures == []
    assert versions == list(range(2, 12))
    assert answers == {"a.test": {"a1/index.html", "a2/index.html"}, "b.test": {"b/index.html"}}
    assert all(count > 5 for count in counts), counts


def test_sighup_reloads_every_worker(
    s3: S3Server, bucket: str, objects: None, tmp_path: Path
) -> None:
    """The real command with two workers: SIGHUP to the server makes every worker load the
    file. The file here is a link to another directory, whose changes the watcher does not
    see: only the signal can have reloaded it."""
    real = tmp_path / "real" / "sites.toml"
    real.parent.mkdir()
    real.write_text(sites(bucket))
    link = tmp_path / "conf" / "sites.toml"
    link.parent.mkdir()
    link.symlink_to(real)
    proxy = ProxyProcess.two_workers(str(link), s3, str(tmp_path / "cache"))
    try:
        hosts: Callable[[], set[str]] = lambda: {  # noqa: E731
            httpx.get(proxy.url + "/", headers={"host": "a.test"}).text for _ in range(20)
        }
        wait_for(lambda: hosts() == {"a1/index.html"}, timeout=30, what="both workers serving")
        real.write_text(sites(bucket, prefix_a="a2"))
        assert hosts() == {"a1/index.html"}  # the watcher did not see it
        os.kill(proxy.proc.pid, signal.SIGHUP)  # the server, not its workers
        wait_for(lambda: hosts() == {"a2/index.html"}, timeout=30, what="every worker reloaded")
        assert status(proxy)["version"] == 2
    finally:
        proxy.kill()
