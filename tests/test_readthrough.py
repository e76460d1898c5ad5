"""Small misses: read whole and verified before anyone is answered, sent from memory, stored
after (s3proxy.readthrough.SMALL_BODY)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx

from s3proxy.cache import object_hash
from s3proxy.readthrough import SMALL_BODY
from tests.servers import Fault, ProxyServer, S3Server
from tests.sink_servers import wait_for


def stored(proxy: ProxyServer, bucket: str, key: str) -> Path:
    """The cached file of ``key`` once no fill runs (a miss is answered before its commit)."""
    readthrough = proxy.app.resources.site.readthrough
    wait_for(lambda: not readthrough.busy, what="the fill committed")
    return Path(proxy.config.cache.cache_dir) / "objects" / object_hash(bucket, key)


def test_a_small_body_that_fails_its_etag_is_a_502(
    s3: S3Server, bucket: str, put: Callable[..., None], proxy: ProxyServer
) -> None:
    """Nothing of a small body is sent before all of it is verified: a corrupt one is our 502
    (no response had started), not a 200 cut off, and the next GET serves and stores it."""
    body = os.urandom(SMALL_BODY)
    put("small.bin", body)
    s3.faults.append(Fault("/small.bin", corrupt_at=SMALL_BODY - 10))
    r = httpx.get(f"{proxy.url}/small.bin", timeout=10)
    assert r.status_code == 502 and r.content.strip() == b"Bad Gateway"
    assert not stored(proxy, bucket, "small.bin").exists()
    r = httpx.get(f"{proxy.url}/small.bin", timeout=10)
    assert r.status_code == 200 and r.content == body
    assert stored(proxy, bucket, "small.bin").read_bytes() == body
    assert s3.gets(bucket, "small.bin") == 2
