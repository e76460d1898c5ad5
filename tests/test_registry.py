"""Sites registered at runtime (``/_proxy/_private/sites``), through a real uvicorn server and
moto: every error code, served at once, kept across a restart and a reload of the sites file,
effective in every worker of a two-worker server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from tests.servers import ProxyProcess, ProxyServer, S3Server, free_port
from tests.sink_servers import wait_for

AUTH = {"authorization": "Bearer test-token"}
SITES = "/_proxy/_private/sites"


def sites_text(bucket: str, extra: str = "") -> str:
    return f'[sites.a]\nhosts = ["a.test"]\nbucket = "{bucket}"\nprefix = "a"\nttl = 0\n' + extra


@pytest.fixture
def objects(s3: S3Server, bucket: str) -> None:
    for key in ("a/index.html", "r/index.html", "r2/index.html"):
        s3.client().put_object(Bucket=bucket, Key=key, Body=key.encode())


@pytest.fixture
def sites_file(tmp_path: Path, bucket: str) -> Path:
    path = tmp_path / "conf" / "sites.toml"
    path.parent.mkdir()
    path.write_text(sites_text(bucket))
    return path


@pytest.fixture
def config(base_config: Config, objects: None, sites_file: Path) -> Config:
    return base_config.replace(sites_file=str(sites_file))


@pytest.fixture
def proxy(config: Config) -> Iterator[ProxyServer]:
    server = ProxyServer(config.replace(port=free_port()))
    yield server.start()
    server.stop()


def put(proxy: Any, name: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.put(f"{proxy.url}{SITES}/{name}", json=body, headers=AUTH, timeout=30, **kwargs)


def delete(proxy: Any, name: str) -> httpx.Response:
    return httpx.delete(f"{proxy.url}{SITES}/{name}", headers=AUTH, timeout=30)


def listing(proxy: Any) -> dict[str, dict[str, Any]]:
    answer = httpx.get(proxy.url + SITES, headers=AUTH, timeout=30)
    assert answer.status_code == 200
    return {site["name"]: site for site in answer.json()["sites"]}


def home(proxy: Any, host: str) -> str:
    return httpx.get(proxy.url + "/", headers={"host": host}, timeout=30).text


def error(answer: httpx.Response) -> tuple[int, str]:
    code: str = answer.json()["error"]["code"]
    assert answer.json()["error"]["message"]
    return answer.status_code, code


def test_register_replace_and_delete(proxy: ProxyServer, bucket: str) -> None:
    """A registered site is served at once and listed beside the file's; a second PUT
    replaces it (200), DELETE stops it."""
    assert home(proxy, "r.test") == "No site is served at this host name\n"
    created = put(proxy, "r", {"hosts": ["R.test."], "bucket": bucket, "prefix": "r", "ttl": 0})
    assert created.status_code == 201
    assert created.json() == {
        "name": "r", "source": "registered", "served": True, "hosts": ["r.test"],
        "default": False, "server": "default", "bucket": bucket, "prefix": "r/",
    }  # fmt: skip
    assert home(proxy, "r.test") == "r/index.html"
    assert home(proxy, "a.test") == "a/index.html"
    assert {n: s["source"] for n, s in listing(proxy).items()} == {"a": "file", "r": "registered"}
    one = httpx.get(f"{proxy.url}{SITES}/r", headers=AUTH, timeout=30)
    assert one.json()["prefix"] == "r/"
    replaced = put(proxy, "r", {"hosts": ["r.test"], "bucket": bucket, "prefix": "r2", "ttl": 0})
    assert replaced.status_code == 200
    assert home(proxy, "r.test") == "r2/index.html"
    assert delete(proxy, "r").json() == {"deleted": "r"}
    assert home(proxy, "r.test") == "No site is served at this host name\n"
    assert set(listing(proxy)) == {"a"}


def test_every_refusal_has_its_code(proxy: ProxyServer, bucket: str) -> None:
    """Each refusal is JSON with a stable code; none of them changes what is served."""
    site = {"hosts": ["r.test"], "bucket": bucket}
    assert error(put(proxy, "r", {**site, "ttl": "soon"})) == (400, "INVALID_SITE")
    assert error(put(proxy, "r", {**site, "colour": "red"})) == (400, "INVALID_SITE")
    assert error(put(proxy, "r", ["not", "a", "table"])) == (400, "INVALID_SITE")
    assert error(put(proxy, "bad.name", site)) == (400, "INVALID_SITE")
    bad_json = httpx.put(f"{proxy.url}{SITES}/r", content=b"{", headers=AUTH, timeout=30)
    assert error(bad_json) == (400, "INVALID_SITE")
    assert error(put(proxy, "r", {**site, "server": ["a"]})) == (400, "INVALID_SITE")
    assert error(put(proxy, "r", {**site, "server": "nowhere"})) == (404, "SERVER_NOT_FOUND")
    secret = {"paths": ["/*"], "allow": "signed", "secret": {"file": "/nonexistent/secret"}}
    assert error(put(proxy, "r", {**site, "access": [secret]})) == (400, "INVALID_SITE")
    assert error(put(proxy, "r", {"hosts": ["A.test"], "bucket": bucket})) == (409, "HOST_TAKEN")
    assert error(put(proxy, "a", site)) == (409, "SITE_FROM_FILE")
    assert error(delete(proxy, "a")) == (409, "SITE_FROM_FILE")
    assert error(delete(proxy, "r")) == (404, "SITE_NOT_FOUND")
    one = httpx.get(f"{proxy.url}{SITES}/r", headers=AUTH, timeout=30)
    assert error(one) == (404, "SITE_NOT_FOUND")
    assert put(proxy, "d", {"default": True, "bucket": bucket, "prefix": "r"}).status_code == 201
    taken = put(proxy, "e", {"default": True, "bucket": bucket})
    assert error(taken) == (409, "HOST_TAKEN") and "already the default" in taken.text
    assert set(listing(proxy)) == {"a", "d"}
    assert home(proxy, "a.test") == "a/index.html"


def test_the_api_needs_the_token(proxy: ProxyServer, bucket: str) -> None:
    assert httpx.get(proxy.url + SITES, timeout=10).status_code == 403
    answer = httpx.put(f"{proxy.url}{SITES}/r", json={"bucket": bucket, "default": True})
    assert answer.status_code == 403
    assert set(listing(proxy)) == {"a"}


def test_without_a_sites_file_nothing_registers(
    start_proxy: Callable[..., ProxyServer], bucket: str
) -> None:
    proxy = start_proxy()
    assert error(httpx.get(proxy.url + SITES, headers=AUTH)) == (404, "NO_SITES_FILE")
    assert error(put(proxy, "r", {"bucket": bucket, "default": True})) == (404, "NO_SITES_FILE")


def test_registrations_survive_a_restart(config: Config, bucket: str) -> None:
    """Kept in the state file beside the cache: a new server on the same cache dir serves
    them, and the state file is whole JSON naming them."""
    first = ProxyServer(config.replace(port=free_port())).start()
    try:
        assert put(first, "r", {"hosts": ["r.test"], "bucket": bucket, "prefix": "r"}).is_success
    finally:
        first.stop()
    state = Path(config.cache.cache_dir) / "registry" / "sites.json"
    assert '"r"' in state.read_text()
    second = ProxyServer(config.replace(port=free_port())).start()
    try:
        assert home(second, "r.test") == "r/index.html"
        assert listing(second)["r"]["source"] == "registered"
    finally:
        second.stop()


def test_a_reload_of_the_file_keeps_registrations(
    proxy: ProxyServer, bucket: str, sites_file: Path
) -> None:
    """Rewriting the sites file keeps the registered site; a file that claims its host wins
    (the registration is listed, not served, with its problem) until the file lets go."""
    assert put(proxy, "r", {"hosts": ["r.test"], "bucket": bucket, "prefix": "r"}).is_success
    claims = '[sites.b]\nhosts = ["r.test"]\nbucket = "' + bucket + '"\nprefix = "r2"\n'
    replace(sites_file, sites_text(bucket, claims))
    wait_for(lambda: home(proxy, "r.test") == "r2/index.html", timeout=20, what="the file's b")
    shadowed = listing(proxy)["r"]
    assert shadowed["served"] is False and "r.test is already site b's" in shadowed["problem"]
    replace(sites_file, sites_text(bucket).replace('"a"', '"a2"'))
    wait_for(lambda: home(proxy, "r.test") == "r/index.html", timeout=20, what="r served again")
    assert listing(proxy)["r"]["served"] is True
    assert "last_error" in httpx.get(proxy.url + "/_proxy/_private/config", headers=AUTH).json()


def replace(path: Path, text: str) -> None:
    new = path.with_suffix(".new")
    new.write_text(text)
    os.replace(new, path)


def test_every_worker_serves_registrations(
    s3: S3Server, bucket: str, objects: None, sites_file: Path, tmp_path: Path
) -> None:
    """The real command with two workers: a PUT answered by one worker is served by both
    (twenty requests over fresh connections reach both), and so is a DELETE."""
    proxy = ProxyProcess.two_workers(str(sites_file), s3, str(tmp_path / "cache"))
    try:

        def answers() -> set[str]:
            return {home(proxy, "r.test") for _ in range(20)}

        def workers() -> set[int]:
            stats = proxy.url + "/_proxy/_private/_cache/stats"
            return {httpx.get(stats, headers=AUTH).json()["worker"] for _ in range(20)}

        wait_for(lambda: len(workers()) == 2, timeout=30, what="both workers answering")
        assert put(proxy, "r", {"hosts": ["r.test"], "bucket": bucket, "prefix": "r"}).is_success
        wait_for(lambda: answers() == {"r/index.html"}, timeout=30, what="every worker serving")
        assert delete(proxy, "r").is_success
        gone = "No site is served at this host name\n"
        wait_for(lambda: answers() == {gone}, timeout=30, what="every worker dropping it")
    finally:
        proxy.kill()
