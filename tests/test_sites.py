"""Many sites behind one proxy (``--config FILE``), through a real uvicorn server and moto:
routing by Host, caches that never mix, clearing per site, the per-server S3 bound."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from s3proxy.record import RequestRecord
from tests.servers import (
    KEY_ID,
    REGION,
    SECRET,
    Fault,
    ProxyServer,
    S3Server,
    free_port,
    s3_client,
)
from tests.sink_servers import wait_for

AUTH = {"authorization": "Bearer test-token"}


@dataclass
class MotoProcess:
    """moto in a process of its own: a second S3 server whose buckets are not the first's
    (moto's in-process servers share one backend)."""

    endpoint_url: str

    def client(self) -> Any:
        return s3_client(self.endpoint_url)


@pytest.fixture
def other_s3() -> Iterator[MotoProcess]:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            assert process.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.05)
        yield MotoProcess(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(15)


def server_table(name: str, s3: S3Server | MotoProcess, **extra: object) -> str:
    lines = [
        f"[servers.{name}]",
        f'endpoint_url = "{s3.endpoint_url}"',
        f'region = "{REGION}"',
        f'key = "{KEY_ID}"',
        f'secret = "{SECRET}"',
        "path_style = true",
        *(f"{key} = {json.dumps(value)}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def serve_file(base_config: Config, tmp_path: Path) -> Iterator[Callable[[str], ProxyServer]]:
    """``serve_file(text)``: s3proxy serving the sites file ``text``; stopped at teardown."""
    servers: list[ProxyServer] = []

    def serve(text: str) -> ProxyServer:
        path = tmp_path / "sites.toml"
        path.write_text(text)
        config = base_config.replace(port=free_port(), sites_file=str(path))
        servers.append(ProxyServer(config).start())
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


def get(proxy: ProxyServer, host: str, path: str = "/", **headers: str) -> httpx.Response:
    return httpx.get(proxy.url + path, headers={"host": host, **headers}, timeout=30)


def test_hosts_choose_sites_and_caches_never_mix(
    s3: S3Server,
    other_s3: MotoProcess,
    bucket: str,
    serve_file: Callable[[str], ProxyServer],
) -> None:
    """The same bucket name and key on two servers: each site serves its own object, on the
    miss and on every hit after it; a wildcard takes one label; an unknown host is a 404
    when no site is the default."""
    other_s3.client().create_bucket(Bucket=bucket)
    s3.client().put_object(Bucket=bucket, Key="index.html", Body=b"first server")
    other_s3.client().put_object(Bucket=bucket, Key="index.html", Body=b"second server")
    proxy = serve_file(
        server_table("one", s3)
        + server_table("two", other_s3)
        + f'[sites.a]\nhosts = ["a.test"]\nserver = "one"\nbucket = "{bucket}"\n'
        + f'[sites.b]\nhosts = ["*.b.test"]\nserver = "two"\nbucket = "{bucket}"\n'
    )
    for _ in range(3):
        assert get(proxy, "a.test").text == "first server"
        assert get(proxy, "A.TEST.:80").text == "first server"
        assert get(proxy, "x.b.test").text == "second server"
    assert s3.gets(bucket, "index.html") == 1
    for host in ("b.test", "y.x.b.test", "nowhere.test"):
        answer = get(proxy, host)
        assert (answer.status_code, answer.text) == (404, "No site is served at this host name\n")
        assert re.fullmatch(r"[0-9a-f]{22}", answer.headers["x-request-id"])
    sites = proxy.app.resources.sites()
    wait_for(lambda: sum(sum(site.counts.values()) for site in sites.values()) == 9)
    assert [site.counts for site in sites.values()] == [
        {"miss": 1, "hit": 5},
        {"miss": 1, "hit": 2},
    ]


def test_the_default_site_takes_unknown_hosts_and_headers_rules_apply(
    bucket: str, put: Callable[..., None], serve_file: Callable[[str], ProxyServer]
) -> None:
    """``default = true`` serves hosts no site claims; ``[[headers]]`` rules set headers on
    the paths they match, over the response's own."""
    put("index.html", b"home")
    put("assets/app.js", b"js", CacheControl="no-cache")
    proxy = serve_file(
        f'[sites.main]\ndefault = true\nbucket = "{bucket}"\n'
        '[[sites.main.headers]]\npaths = ["/assets/*"]\n'
        'set = { "Cache-Control" = "public, max-age=31536000, immutable", "X-Site" = "main" }\n'
    )
    records: list[RequestRecord] = []
    proxy.app.resources.sites()["main"].recorder = SimpleNamespace(emit=records.append)
    assert get(proxy, "anything.test").text == "home"
    wait_for(lambda: len(records) == 1)
    assert (records[0].site, records[0].resource) == ("main", "/")
    assert "x-site" not in get(proxy, "anything.test").headers
    for _ in range(2):
        asset = get(proxy, "anything.test", "/assets/app.js")
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.headers.get_list("cache-control") == ["public, max-age=31536000, immutable"]
        assert asset.headers["x-site"] == "main"


def test_x_forwarded_host_counts_only_from_trusted_proxies(
    s3: S3Server, bucket: str, base_config: Config, tmp_path: Path
) -> None:
    """Behind a trusted proxy X-Forwarded-Host chooses the site; from anyone else it is
    ignored (it would let any client pick another site's objects)."""
    s3.client().put_object(Bucket=bucket, Key="a/index.html", Body=b"site a")
    s3.client().put_object(Bucket=bucket, Key="b/index.html", Body=b"site b")
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[sites.a]\nhosts = ["a.test"]\nbucket = "{bucket}"\nprefix = "a"\ndefault = true\n'
        f'[sites.b]\nhosts = ["b.test"]\nbucket = "{bucket}"\nprefix = "b"\n'
    )
    for trusted, expected in (((), "site a"), (("127.0.0.1",), "site b")):
        config = base_config.replace(
            port=free_port(), sites_file=str(path), trusted_proxies=trusted
        )
        proxy = ProxyServer(config).start()
        try:
            assert get(proxy, "a.test", **{"x-forwarded-host": "b.test"}).text == expected
        finally:
            proxy.stop()


def test_clear_takes_a_site(
    s3: S3Server, bucket: str, serve_file: Callable[[str], ProxyServer]
) -> None:
    """``?site=NAME&path=`` drops that site's entry only; ``?site=NAME`` all of that site's;
    no ``site``: the path in every site; an unknown site is a 404."""
    for key in ("a/x.html", "b/x.html", "a/y.html", "b/y.html"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())
    proxy = serve_file(
        f'[sites.a]\nhosts = ["a.test"]\nbucket = "{bucket}"\nprefix = "a"\n'
        f'[sites.b]\nhosts = ["b.test"]\nbucket = "{bucket}"\nprefix = "b"\n'
    )

    def warm() -> list[str]:
        """Each site's x.html and y.html: whether S3 was asked (miss) or not (hit)."""
        answers = []
        for site in ("a", "b"):
            for name in ("x.html", "y.html"):
                before = s3.gets(bucket, f"{site}/{name}")
                assert get(proxy, f"{site}.test", f"/{name}").text == f"{site}/{name}"
                answers.append("miss" if s3.gets(bucket, f"{site}/{name}") > before else "hit")
        return answers

    warm()
    clear = proxy.url + "/_proxy/_private/_cache/clear"
    answer = httpx.get(clear, params={"site": "a", "path": "/x.html"}, headers=AUTH)
    assert answer.json() == {
        "cleared": True,
        "key": "a/x.html",
        "dropped": ["a/x.html"],
        "site": "a",
    }
    assert warm() == ["miss", "hit", "hit", "hit"]
    answer = httpx.get(clear, params={"site": "b"}, headers=AUTH)
    assert sorted(answer.json()["dropped"]) == ["b/x.html", "b/y.html"]
    assert warm() == ["hit", "hit", "miss", "miss"]
    answer = httpx.get(clear, params={"path": "/y.html"}, headers=AUTH)
    assert answer.json()["sites"] == {
        "a": {"key": "a/y.html", "dropped": ["a/y.html"]},
        "b": {"key": "b/y.html", "dropped": ["b/y.html"]},
    }
    assert warm() == ["hit", "miss", "hit", "miss"]
    assert httpx.get(clear, params={"site": "c"}, headers=AUTH).status_code == 404
    assert httpx.get(clear, headers=AUTH).json()["cleared"] is True
    assert warm() == ["miss"] * 4


def test_max_connections_bounds_a_burst_of_cold_keys(
    s3: S3Server, bucket: str, serve_file: Callable[[str], ProxyServer]
) -> None:
    """A burst of 12 cold keys through a server with ``max_connections = 3`` never has more
    than 3 requests at S3 at once, and every request is answered."""
    for n in range(12):
        s3.client().put_object(Bucket=bucket, Key=f"k{n}.txt", Body=b"x")
        s3.faults.append(Fault(f"k{n}.txt", delay=0.2))
    proxy = serve_file(
        server_table("slow", s3, max_connections=3)
        + f'[sites.a]\nhosts = ["a.test"]\nserver = "slow"\nbucket = "{bucket}"\n'
    )
    s3.most_in_flight = 0

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.url, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.get(f"/k{n}.txt", headers={"host": "a.test"}) for n in range(12))
            )
        return [a.status_code for a in answers]

    assert asyncio.run(burst()) == [200] * 12
    assert s3.most_in_flight == 3


def test_check_and_the_request_line_name_each_site(
    s3: S3Server, bucket: str, base_config: Config, tmp_path: Path
) -> None:
    """``s3proxy check --config FILE`` checks each site's bucket: one that exists passes,
    one that does not is named with its site."""
    from s3proxy.checklist import run_checks

    s3.client().put_object(Bucket=bucket, Key="index.html", Body=b"home")
    path = tmp_path / "sites.toml"
    path.write_text(
        f'[sites.good]\nhosts = ["a.test"]\nbucket = "{bucket}"\n'
        '[sites.bad]\nhosts = ["b.test"]\nbucket = "no-such-bucket-here"\n'
    )
    items = {item.name: item for item in run_checks(base_config.replace(sites_file=str(path)))}
    assert items[f"site good: bucket {bucket}"].ok
    assert not items["site bad: bucket no-such-bucket-here"].ok
    assert "no such bucket" in items["site bad: bucket no-such-bucket-here"].reason
