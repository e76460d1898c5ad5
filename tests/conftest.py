"""Fixtures: one moto S3 server per session, a fresh bucket per test, and s3proxy servers
configured per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from tests.group_servers import REDIS_SERVER, RedisServer
from tests.servers import KEY_ID, REGION, SECRET, ProxyServer, S3Server, free_port

_bucket_numbers = itertools.count()
#: Whether the servers the tests start answer fresh hits in the protocol (--fast-path).
FAST_PATH = os.environ.get("S3PROXY_FAST_PATH", "true")


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with S3Server().running() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A new, empty bucket."""
    name = f"site-{next(_bucket_numbers)}"
    s3.client().create_bucket(Bucket=name)
    s3.requests.clear()
    s3.faults.clear()
    s3.release()
    return name


@pytest.fixture
def put(s3: S3Server, bucket: str) -> Callable[..., None]:
    """``put(key, body, **extra)`` stores an object in the test's bucket."""

    def put_object(key: str, body: bytes, **extra: Any) -> None:
        s3.client().put_object(Bucket=bucket, Key=key, Body=body, **extra)

    return put_object


def seeded_bucket(s3: S3Server, prefix: str, objects: dict[str, bytes]) -> str:
    """A new bucket named ``prefix-N`` holding ``objects`` (key -> body): a module's fixture."""
    name = f"{prefix}-{next(_bucket_numbers)}"
    client = s3.client()
    client.create_bucket(Bucket=name)
    for key, body in objects.items():
        client.put_object(Bucket=name, Key=key, Body=body)
    return name


def proxy_config(s3: S3Server, cache_dir: Path, **settings: Any) -> Config:
    """A Config that points s3proxy at the test S3 server, one worker, no log file."""
    return Config.build(
        **{
            "region": REGION,
            "key": KEY_ID,
            "secret": SECRET,
            "endpoint_url": s3.endpoint_url,
            "path_style": True,
            "port": 0,
            "threads": 1,
            "cache_dir": str(cache_dir),
            "log_dir": None,
            # The whole suite runs with the fast path on (the default) and off:
            # S3PROXY_FAST_PATH=0 scripts/test.
            "fast_path": FAST_PATH,
            **settings,
        }
    )


@pytest.fixture
def base_config(s3: S3Server, bucket: str, tmp_path: Path) -> Config:
    return proxy_config(
        s3,
        tmp_path / "cache",
        bucket=bucket,
        auth_key="test-token",
        connect_timeout=2,
        read_timeout=5,
    )


@pytest.fixture
def start_proxy(base_config: Config) -> Iterator[Callable[..., ProxyServer]]:
    """``start_proxy(**overrides)`` runs s3proxy with the test's bucket; stopped at teardown."""
    servers: list[ProxyServer] = []

    def start(**overrides: Any) -> ProxyServer:
        config = base_config.replace(port=free_port(), **overrides)
        server = ProxyServer(config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def proxy(start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    return start_proxy()


@pytest.fixture
def http(proxy: ProxyServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        yield client


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sinks reconnect after 50 ms instead of 0.5 s, so outages are short to test."""
    from s3proxy.sinks import base

    monkeypatch.setattr(base, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(base, "BACKOFF_MAX", 0.2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a loopback port, for a group of instances (``--redis-url``)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    (tmp_path / "redis").mkdir()
    with RedisServer(tmp_path / "redis").running() as server:
        yield server
