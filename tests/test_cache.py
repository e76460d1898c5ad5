"""The cache engine end to end: one S3 fetch per miss, restarts, crash leftovers, clears that
reach every worker, revalidation with If-None-Match, and the bounds on memory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from s3proxy.cache import Cache, object_hash
from s3proxy.cache.index import OLDEST, UNDER_PREFIX, Index, Record, successor
from s3proxy.meta import ObjectMeta
from tests.servers import Fault, ProxyProcess, ProxyServer, S3Server, cli_args, free_port
from tests.sink_servers import wait_for


async def _get_many(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=20) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(n)))


@pytest.mark.parametrize("size", [4096, 700_000], ids=["small", "streamed"])
def test_concurrent_misses_make_one_origin_get(
    s3: S3Server, bucket: str, put: Callable[..., None], proxy: ProxyServer, size: int
) -> None:
    """50 clients asking for the same cold key at once cause exactly one S3 GetObject, and
    every client gets every byte (a small body from memory, a larger one from its file)."""
    body = os.urandom(size)
    put("video.bin", body)
    s3.faults.append(Fault("/video.bin", delay=0.3))
    responses = asyncio.run(_get_many(f"{proxy.url}/video.bin", 50))
    assert [r.status_code for r in responses] == [200] * 50
    assert all(r.content == body for r in responses)
    assert s3.gets(bucket, "video.bin") == 1


def test_client_disconnect_does_not_cancel_the_fill(
    s3: S3Server, bucket: str, put: Callable[..., None], proxy: ProxyServer
) -> None:
    """A client that gives up mid-download leaves the fill running: the object is cached
    complete and the next client is served without a second S3 GET."""
    body = os.urandom(1_000_000)
    put("slow.bin", body)
    s3.faults.append(Fault("/slow.bin", chunk_delay=0.05))
    with httpx.stream("GET", f"{proxy.url}/slow.bin", timeout=10) as response:
        first = next(response.iter_raw())
    assert 0 < len(first) < len(body)  # the client left after the first piece
    response = httpx.get(f"{proxy.url}/slow.bin", timeout=10)
    assert response.content == body
    assert s3.gets(bucket, "slow.bin") == 1


def test_a_miss_is_answered_before_its_body_is_committed(
    s3: S3Server,
    bucket: str,
    put: Callable[..., None],
    proxy: ProxyServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client has the whole verified body before the fill commits it (an index write
    and a rename, off the response's path): a commit that holds the server's loop until the
    client has its answer does not hold the answer. Then the entry is stored whole, and the
    next request is a hit."""
    body = os.urandom(4096)
    put("small.bin", body)
    answered = threading.Event()
    commit = Cache.commit

    def commit_once_answered(self: Cache, *args: object, **kwargs: object) -> object:
        answered.wait(timeout=30)  # blocks the server's loop, as a slow disk would
        return commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Cache, "commit", commit_once_answered)
    try:
        response = httpx.get(f"{proxy.url}/small.bin", timeout=10)
    finally:
        answered.set()
    assert response.status_code == 200
    assert response.content == body
    assert httpx.get(f"{proxy.url}/small.bin").content == body
    assert s3.gets(bucket, "small.bin") == 1
    objects = Path(proxy.config.cache.cache_dir) / "objects"
    assert [p.name for p in objects.iterdir()] == [object_hash(bucket, "small.bin")]


def test_cache_survives_a_restart(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """A new process with the same cache dir serves a cached object without asking S3."""
    put("index.html", b"<p>kept</p>", ContentType="text/html")
    first = start_proxy()
    assert httpx.get(f"{first.url}/").content == b"<p>kept</p>"
    first.stop()
    second = start_proxy()
    response = httpx.get(f"{second.url}/")
    assert response.content == b"<p>kept</p>"
    assert s3.gets(bucket, "index.html") == 1


def test_expired_entry_is_revalidated_without_a_body(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """After the TTL, s3proxy asks S3 with If-None-Match; a 304 keeps the stored copy."""
    put("page.html", b"<p>v1</p>", ContentType="text/html")
    proxy = start_proxy(ttl=0)
    assert httpx.get(f"{proxy.url}/page.html").content == b"<p>v1</p>"
    assert httpx.get(f"{proxy.url}/page.html").content == b"<p>v1</p>"
    gets = [h for m, p, h in s3.requests if m == "GET" and p.endswith("/page.html")]
    assert len(gets) == 2
    assert "if-none-match" not in gets[0]
    assert gets[1]["if-none-match"].strip('"') != ""
    put("page.html", b"<p>v2</p>", ContentType="text/html")
    assert httpx.get(f"{proxy.url}/page.html").content == b"<p>v2</p>"
    site = proxy.app.resources.site
    assert site is not None
    # A request is counted after its response is sent, in the server's thread.
    wait_for(lambda: sum(site.counts.values()) == 3, timeout=5, what="3 requests counted")
    assert site.counts == {"miss": 2, "revalidated": 1}


def test_crash_leftovers_are_removed_and_never_served(
    s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """kill -9 in the middle of a fill leaves a temporary file; the next start removes it and
    serves the object whole."""
    body = os.urandom(2_000_000)
    put("big.bin", body)
    cache_dir = tmp_path / "cache"
    port = free_port()
    proxy = ProxyProcess(cli_args(s3, bucket, str(cache_dir), port, "--threads", "1"), {}, port)
    proxy.wait_ready()
    try:
        s3.faults.append(Fault("/big.bin", chunk_delay=0.1))
        with pytest.raises(httpx.HTTPError):
            with httpx.stream("GET", f"{proxy.url}/big.bin", timeout=5) as response:
                for _ in response.iter_bytes():
                    proxy.kill(signal.SIGKILL)
    finally:
        proxy.kill(signal.SIGKILL)
    leftovers = list((cache_dir / "objects").iterdir())
    assert leftovers and all(p.name.endswith(".tmp") for p in leftovers)

    proxy = ProxyProcess(cli_args(s3, bucket, str(cache_dir), port, "--threads", "1"), {}, port)
    proxy.wait_ready()
    try:
        assert not any(p.name.endswith(".tmp") for p in (cache_dir / "objects").iterdir())
        assert httpx.get(f"{proxy.url}/big.bin", timeout=10).content == body
    finally:
        proxy.kill()


def test_clear_reaches_every_worker(
    s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """With --threads 2, a clear answered by one worker makes every worker fetch anew."""
    put("index.html", b"old", ContentType="text/html")
    port = free_port()
    args = cli_args(s3, bucket, str(tmp_path / "c"), port, "--threads", "2", "--auth-key", "k")
    proxy = ProxyProcess(args, {}, port).wait_ready()
    try:
        # New connections spread over both workers; each caches "old" in its memory tier.
        for _ in range(40):
            assert httpx.get(f"{proxy.url}/").content == b"old"
        put("index.html", b"new", ContentType="text/html")
        cleared = httpx.delete(
            f"{proxy.url}/_proxy/_private/_cache/clear", headers={"Authorization": "Bearer k"}
        )
        assert cleared.status_code == 200
        bodies = {httpx.get(f"{proxy.url}/").content for _ in range(40)}
        assert bodies == {b"new"}
    finally:
        proxy.kill()


def _meta(size: int) -> ObjectMeta:
    return ObjectMeta(size=size, etag='"x"')


def test_memory_tier_stays_within_its_budget(tmp_path: Path) -> None:
    """Bodies kept in memory never exceed the byte budget; the oldest are dropped first."""
    cache = Cache(str(tmp_path), "b", memory_budget=10_000, memory_object_size=4_000)
    cache.open()
    try:
        for i in range(10):
            writer = cache.begin_write(f"k{i}")
            writer.write(b"x" * 3_000)
            cache.commit(writer, f"k{i}", _meta(3_000), 0, 1e12, cache.generation, b"x" * 3_000)
        assert cache.stats()["memory_bytes"] <= 10_000
        assert cache.get("k9") is not None and cache.get("k9").body is not None  # type: ignore[union-attr]
        assert cache.get("k0").body is None  # type: ignore[union-attr]
        assert cache.read_small(cache.get("k0")) == b"x" * 3_000  # type: ignore[arg-type]
    finally:
        cache.close()


def test_a_truncated_body_file_is_not_trusted(tmp_path: Path) -> None:
    """An index record whose body file has the wrong size (disk full, power loss) is a miss."""
    cache = Cache(str(tmp_path), "b")
    cache.open()
    writer = cache.begin_write("k")
    writer.write(b"abcdef")
    cache.commit(writer, "k", _meta(6), 0, 1e12, cache.generation)
    cache.close()
    path = tmp_path / "objects" / object_hash("b", "k")
    path.write_bytes(b"abc")
    reopened = Cache(str(tmp_path), "b")
    reopened.open()
    try:
        assert reopened.get("k") is None
    finally:
        reopened.close()


def test_a_fill_that_straddles_a_clear_is_not_stored(tmp_path: Path) -> None:
    """A body fetched before a clear is not installed after it (it may be the old version)."""
    cache = Cache(str(tmp_path), "b")
    cache.open()
    try:
        generation = cache.generation
        writer = cache.begin_write("k")
        writer.write(b"old")
        cache.clear()
        cache.commit(writer, "k", _meta(3), 0, 1e12, generation)
        assert cache.get("k") is None
        assert list((tmp_path / "objects").iterdir()) == []
    finally:
        cache.close()


def test_remembered_404s_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random missing paths cannot grow memory without bound."""
    monkeypatch.setattr("s3proxy.cache.memory.MAX_NEGATIVE", 100)
    cache = Cache(str(tmp_path), "b")
    cache.open()
    try:
        for i in range(1_000):
            cache.put_missing(f"missing/{i}", 0, 1e12)
        assert cache.stats()["negative_entries"] == 100
        assert cache.get("missing/999") is not None
        assert cache.get("missing/0") is None
    finally:
        cache.close()


def test_a_body_file_deleted_behind_our_back_is_fetched_again(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """A cron job may delete cache files (the original's README suggests one): the next
    request fetches the object again instead of failing."""
    body = os.urandom(3_000_000)  # above the memory tier: served from its file
    put("big.bin", body)
    proxy = start_proxy()
    assert httpx.get(f"{proxy.url}/big.bin").content == body
    for path in (Path(proxy.config.cache.cache_dir) / "objects").iterdir():
        path.unlink()
    response = httpx.get(f"{proxy.url}/big.bin")
    assert response.status_code == 200 and response.content == body
    assert s3.gets(bucket, "big.bin") == 2


def test_objects_over_the_size_limit_stream_through_uncached(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """Objects above --cache-max-object-size are streamed from S3 on every request and
    never written to the cache; a range is asked of S3 itself."""
    body = os.urandom(600_000)
    put("huge.bin", body)
    proxy = start_proxy(cache_max_object_size=100_000)
    for _ in range(2):
        response = httpx.get(f"{proxy.url}/huge.bin")
        assert response.status_code == 200 and response.content == body
    assert s3.gets(bucket, "huge.bin") == 2
    assert list((Path(proxy.config.cache.cache_dir) / "objects").iterdir()) == []
    ranged = httpx.get(f"{proxy.url}/huge.bin", headers={"range": "bytes=1000-1999"})
    assert ranged.status_code == 206
    assert ranged.content == body[1000:2000]
    assert ranged.headers["content-range"] == f"bytes 1000-1999/{len(body)}"
    ranges = [h.get("range") for m, p, h in s3.requests if m == "GET" and p.endswith("huge.bin")]
    assert ranges[-1] == "bytes=1000-1999"
    unsatisfiable = httpx.get(f"{proxy.url}/huge.bin", headers={"range": "bytes=700000-"})
    assert unsatisfiable.status_code == 416


def test_a_broken_passthrough_body_aborts_the_connection(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """A streamed-through body that breaks off is never a clean short response."""
    body = os.urandom(600_000)
    put("huge.bin", body)
    proxy = start_proxy(cache_max_object_size=100_000)
    s3.faults.append(Fault("/huge.bin", truncate_after=200_000))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{proxy.url}/huge.bin")


def test_stale_copy_stands_in_while_s3_fails(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """After the TTL, an S3 error serves the expired copy with an honest Age (stale-if-error);
    past the stale window, the client gets the 502."""
    put("page.html", b"kept", ContentType="text/html")
    proxy = start_proxy(ttl=0, stale_if_error=3600)
    assert httpx.get(f"{proxy.url}/page.html").content == b"kept"
    s3.faults.append(Fault("/page.html", status=500, times=100))
    response = httpx.get(f"{proxy.url}/page.html")
    assert response.status_code == 200 and response.content == b"kept"
    assert int(response.headers["age"]) >= 0
    strict = start_proxy(ttl=0, stale_if_error=0, cache_dir=proxy.config.cache.cache_dir + "-2")
    s3.faults.clear()
    assert httpx.get(f"{strict.url}/page.html").status_code == 200
    s3.faults.append(Fault("/page.html", status=500, times=100))
    # No stale copy may stand in: S3 is retried with backoff, then the client gets a 502.
    assert httpx.get(f"{strict.url}/page.html", timeout=60).status_code == 502


def test_disk_cache_stays_under_its_bound(
    s3: S3Server, bucket: str, put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """With --cache-max-size, the bodies stored never pass the bound, at any moment: room is
    made before each one is committed, by evicting the least recently used objects (here:
    not the one read again and again)."""
    size = 100_000
    for i in range(12):
        put(f"obj{i}.bin", bytes([i]) * size)
    proxy = start_proxy(cache_max_size=500_000, memory_object_size=0)
    objects = Path(proxy.config.cache.cache_dir) / "objects"
    stored: list[int] = []
    done = threading.Event()

    def sample() -> None:  # what du would say, over and over, while the cache fills
        while not done.is_set():
            total = 0
            for path in objects.iterdir():
                with contextlib.suppress(OSError):
                    total += 0 if path.name.endswith(".tmp") else path.stat().st_size
            stored.append(total)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with httpx.Client(base_url=proxy.url) as client:
            for i in range(12):
                assert client.get(f"/obj{i}.bin").content == bytes([i]) * size
                assert client.get("/obj0.bin").status_code == 200  # keep obj0 hot
                proxy.app.resources.cache.flush_access_times()  # what the 5 s task does
            last = objects / object_hash(bucket, "obj11.bin")
            wait_for(last.exists, timeout=10, what="the last body committed")
    finally:
        done.set()
        sampler.join()
    assert len(stored) > 12 and max(stored) <= 500_000
    names = {p.name for p in objects.iterdir()}
    assert object_hash(bucket, "obj0.bin") in names  # the hot object survived
    assert object_hash(bucket, "obj1.bin") not in names  # an old cold one went
    gets_before = s3.gets(bucket, "obj1.bin")
    assert httpx.get(f"{proxy.url}/obj1.bin").content == bytes([1]) * size
    assert s3.gets(bucket, "obj1.bin") == gets_before + 1


@pytest.mark.parametrize(
    ("honor", "ttl", "live_gets", "static_gets"),
    [
        pytest.param(False, 0, 3, 3, id="ttl-0-decides"),
        pytest.param(False, 3600, 1, 1, id="ttl-3600-decides"),
        pytest.param(True, 0, 3, 1, id="honoured-max-age-outlives-ttl"),
        pytest.param(True, 3600, 3, 1, id="honoured-no-cache-beats-ttl"),
    ],
)
def test_honor_cache_control_lets_each_object_set_its_freshness(
    honor: bool,
    ttl: int,
    live_gets: int,
    static_gets: int,
    s3: S3Server,
    put: Callable[..., None],
    start_proxy: Callable[..., ProxyServer],
) -> None:
    """With ``--honor-cache-control``, an object stored with ``Cache-Control: no-cache`` is
    checked with S3 (If-None-Match) on every request and one with ``max-age=3600`` is not,
    whatever ``--ttl`` says; without it, ``--ttl`` alone decides. Clients get the object's
    own Cache-Control either way."""
    put("live.json", b'{"v": 1}', ContentType="application/json", CacheControl="no-cache")
    put("app.css", b"a{}", ContentType="text/css", CacheControl="max-age=3600")
    proxy = start_proxy(ttl=ttl, honor_cache_control=honor)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            live, static = client.get("/live.json"), client.get("/app.css")
            assert (live.status_code, live.content) == (200, b'{"v": 1}')
            assert (static.status_code, static.content) == (200, b"a{}")
            assert live.headers["cache-control"] == "no-cache"
            assert static.headers["cache-control"] == "max-age=3600"

    def gets(name: str) -> list[dict[str, str]]:
        return [h for m, p, h in s3.requests if m == "GET" and p.endswith(name)]

    assert (len(gets("/live.json")), len(gets("/app.css"))) == (live_gets, static_gets)
    assert all("if-none-match" in h for h in gets("/live.json")[1:])


def _index(tmp_path: Path) -> Index:
    index = Index(tmp_path / "index")
    index.open()
    return index


def _record(key: str, size: int = 10, etag: str = '"e"') -> Record:
    return Record(key, ObjectMeta(size=size, etag=etag), 0, 1e12)


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        pytest.param("a/", "a0", id="ascii"),
        pytest.param("", None, id="everything"),
        pytest.param("x\U0010ffff", "y", id="last-code-point-carries"),
        pytest.param("\U0010ffff", None, id="nothing-above"),
        pytest.param("a\ud7ff", "a\ue000", id="skips-surrogates"),
    ],
)
def test_successor_bounds_every_key_under_a_prefix(prefix: str, bound: str | None) -> None:
    """The upper bound of a prefix's range is the least string above all its keys."""
    assert successor(prefix) == bound


def test_a_prefix_purge_takes_its_keys_and_no_other(tmp_path: Path) -> None:
    """Purging a prefix removes exactly the keys that start with it (neighbours in key order
    stay), and the byte count follows."""
    index = _index(tmp_path)
    try:
        keys = ["a", "a/", "a/1", "a/2/x", "a/\U0010ffff", "a0", "a.b", "b/1", "é/1"]
        for key in keys:
            index.put(key, _record(key), 0)
        removed = index.remove_prefix("a/")
        assert sorted(r.key for r in removed) == ["a/", "a/1", "a/2/x", "a/\U0010ffff"]
        assert index.usage() == (5, 50)
        assert [r.key for r in index.remove_prefix("é/")] == ["é/1"]
        assert index.get("a0") is not None and index.get("a/1") is None
    finally:
        index.close()


def test_index_queries_read_only_what_they_return(tmp_path: Path) -> None:
    """A purge is a range of the primary key and eviction reads the access-time queue from
    its oldest end: SQLite's plans search indexes, never sort or scan the records."""
    index = _index(tmp_path)
    try:
        purge, oldest = index.plan(UNDER_PREFIX), index.plan(OLDEST)
        assert purge == ["SEARCH s3proxy_objects USING PRIMARY KEY (key>? AND key<?)"]
        assert oldest[0] == "SCAN q"  # in primary-key (time) order, stopped by the LIMIT
        assert any("SEARCH o USING PRIMARY KEY (key=?)" in step for step in oldest)
        assert not any("TEMP B-TREE" in step for step in oldest)
    finally:
        index.close()


def test_eviction_takes_the_least_recently_used_first(tmp_path: Path) -> None:
    """Records leave in order of last use (a touch moves a key to the back), only as many
    as the bytes asked for, and purged keys left in the queue are passed over."""
    index = _index(tmp_path)
    try:
        for i, key in enumerate(["k0", "k1", "k2", "k3", "k4"]):
            index.put(key, _record(key), now=i)
        index.touch(["k0"], now=10)
        index.remove_prefix("k1")
        assert [r.key for r in index.take_oldest(need=15, limit=100)] == ["k2", "k3"]
        assert [r.key for r in index.take_oldest(need=1, limit=100)] == ["k4"]
        assert [r.key for r in index.take_oldest(need=1, limit=100)] == ["k0"]
        assert index.take_oldest(need=1, limit=100) == [] and index.usage() == (0, 0)
    finally:
        index.close()


def test_usage_follows_every_change(tmp_path: Path) -> None:
    """The byte count kept by the index matches its records through stores, replacements,
    variants and removals (what the size bound is checked against)."""
    index = _index(tmp_path)
    try:
        index.put("a", _record("a", 100), 0)
        index.put("b", _record("b", 50), 0)
        index.add_variant("a", 30)
        assert index.usage() == (2, 180)
        index.put("a", _record("a", 10), 1)  # a new version: its variants are gone
        assert index.usage() == (2, 60)
        index.remove("b")
        assert index.usage() == (1, 10)
        index.recount()
        assert index.usage() == (1, 10)
        assert index.clear() == 1 and index.usage() == (0, 0)
    finally:
        index.close()


def test_an_index_in_the_old_format_is_discarded(tmp_path: Path) -> None:
    """A cache dir written by an older s3proxy (pickled records in diskcache) opens empty:
    its records are dropped and its body files removed as leftovers."""
    import diskcache  # the old format, written as the old code wrote it

    name = object_hash("b", "k")
    with diskcache.Cache(str(tmp_path / "index"), eviction_policy="none") as old:
        old[name] = {"key": "k", "meta": {"size": 3}, "stored_at": 0, "expires_at": 1e12}
        old["total-bytes"] = 3
    (tmp_path / "objects").mkdir()
    (tmp_path / "objects" / name).write_bytes(b"abc")
    cache = Cache(str(tmp_path), "b")
    cache.open()
    try:
        assert cache.remove_leftovers() == 1
        assert cache.get("k") is None and cache.index.usage() == (0, 0)
    finally:
        cache.close()


def test_entries_are_immutable(tmp_path: Path) -> None:
    """An entry never changes under a request that holds it: loading its body into memory
    or revalidating it installs a new entry instead."""
    cache = Cache(str(tmp_path), "b")
    cache.open()
    try:
        writer = cache.begin_write("k")
        writer.write(b"abc")
        first = cache.commit(writer, "k", _meta(3), 0, 10, cache.generation)
        with pytest.raises(dataclasses.FrozenInstanceError):
            first.expires_at = 20  # type: ignore[misc]
        loaded = cache.get("k")
        assert loaded is first and cache.read_small(first) == b"abc"
        assert first.body is None and cache.get("k").body == b"abc"  # type: ignore[union-attr]
        refreshed = cache.refresh(cache.get("k"), 5, 20)  # type: ignore[arg-type]
        assert cache.get("k") is refreshed and refreshed.body == b"abc"
        assert (first.expires_at, refreshed.expires_at) == (10, 20)
    finally:
        cache.close()
