"""A cache that cannot store — a full disk, a quota — never costs a response: bodies stream
from S3 uncached, nothing partial is left in the cache, and what is cached is still served.

The failure is injected at the filesystem boundary of the one module that writes the cache's
files, :mod:`s3proxy.cache.files`: its ``os`` is replaced by :class:`FullDisk`, which passes
every call to the real ``os`` except the creation of, and writes to, temporary body files.
(The tests run as root in CI, so permissions cannot make a directory unwritable, and mounting
a small filesystem is not allowed there.)
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy import readthrough
from s3proxy.cache import files, object_hash
from s3proxy.cache.faults import DiskFaults
from tests.servers import Fault, ProxyServer, S3Server
from tests.sink_servers import wait_for

StartProxy = Callable[..., ProxyServer]
SIZE = 2_000_000  # above the memory tier: the body is read back from its file


class FullDisk:
    """Stands in for ``os`` in :mod:`s3proxy.cache.files`. With ``room=None`` no temporary
    file can be created (ENOSPC, as when a directory needs a block the disk does not have);
    with ``room=n``, writes to temporary files succeed for ``n`` bytes in all, then one short
    write, then ENOSPC — what a filesystem that fills up does; ``statvfs`` reports the room
    left. With ``file_limit=n``, no file may grow past ``n`` bytes (EFBIG, as for a file
    system's largest file or ``RLIMIT_FSIZE``), whatever the room."""

    def __init__(
        self, room: int | None, *, rename: bool = True, file_limit: int | None = None
    ) -> None:
        self.room = room
        self.rename = rename
        self.file_limit = file_limit
        self.created = 0
        self._fds: dict[int, int] = {}  # fd -> bytes written
        self._lock = threading.Lock()  # large chunks are written from threads

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if not (str(path).endswith(".tmp") and flags & os.O_CREAT):
            return os.open(path, flags, mode)
        if self.room is None:
            raise _error(errno.ENOSPC)
        fd = os.open(path, flags, mode)
        self._fds[fd] = 0
        self.created += 1
        return fd

    def write(self, fd: int, data: Any) -> int:
        if fd not in self._fds or self.room is None:
            return os.write(fd, data)
        with self._lock:
            n = min(len(data), self.room)
            if self.file_limit is not None:
                n = min(n, self.file_limit - self._fds[fd])
                if n == 0:
                    raise _error(errno.EFBIG)
            if n == 0:
                raise _error(errno.ENOSPC)
            self.room -= n
            self._fds[fd] += n
        return os.write(fd, data[:n])

    def close(self, fd: int) -> None:
        self._fds.pop(fd, None)
        os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        if not self.rename and src.endswith(".tmp"):
            raise _error(errno.ENOSPC)  # a directory that would have to grow
        os.replace(src, dst)

    def statvfs(self, path: Any) -> Any:
        free = self.room if self.room is not None else 0
        return types.SimpleNamespace(f_bavail=free, f_frsize=1)


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Warnings:
    """Records the events ``s3proxy.readthrough`` logs at warning level."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def once(self) -> dict[str, Any]:
        """The fields of the one warning logged; fails unless it is the only one and says
        the cache could not store."""
        ((event, fields),) = self.events
        assert event == "cache_cannot_store"
        return fields


@dataclass
class Disk:
    """One test's stage: objects put in S3, the proxy started on them, the cache's file system
    (which :meth:`fill` replaces by a :class:`FullDisk` from then on) and the warnings
    ``s3proxy.readthrough`` logs."""

    s3: S3Server
    bucket: str
    put: Callable[..., None]
    start_proxy: StartProxy
    warnings: Warnings
    monkeypatch: pytest.MonkeyPatch
    proxy: ProxyServer | None = None

    def video(self) -> bytes:
        """Puts ``video.bin``, SIZE random bytes, and returns them."""
        body = os.urandom(SIZE)
        self.put("video.bin", body)
        return body

    def start(self, **options: Any) -> ProxyServer:
        self.proxy = self.start_proxy(**options)
        return self.proxy

    def fill(self, room: int | None, **kwargs: Any) -> FullDisk:
        """From now on the cache writes its files through a :class:`FullDisk` (its
        arguments)."""
        full = FullDisk(room, **kwargs)
        self.monkeypatch.setattr(files, "os", full)
        return full

    def files(self) -> list[str]:
        """The names of the cache's body files, once no fill is running (a miss is answered
        before its file is committed)."""
        assert self.proxy is not None
        readthrough = self.proxy.app.resources.site.readthrough
        wait_for(lambda: not readthrough.busy, what="the proxy's fills done")
        objects = Path(self.proxy.config.cache.cache_dir) / "objects"
        return sorted(p.name for p in objects.iterdir())

    def gets(self, key: str) -> list[dict[str, str]]:
        """The headers of each GetObject S3 had for ``key``."""
        return [h for m, p, h in self.s3.requests if m == "GET" and p == f"/{self.bucket}/{key}"]


@pytest.fixture
def disk(
    s3: S3Server,
    bucket: str,
    put: Callable[..., None],
    start_proxy: StartProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> Disk:
    warnings = Warnings()
    monkeypatch.setattr(readthrough, "_logger", warnings)
    return Disk(s3, bucket, put, start_proxy, warnings, monkeypatch)


async def _get_many(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n), timeout=20) as client:
        return await asyncio.gather(*(client.get(url) for _ in range(n)))


def test_a_cache_that_cannot_create_files_passes_through(disk: Disk) -> None:
    """With no room for a cache file, misses are 200s (206, 404 pages...) streamed from S3,
    asked again each time, nothing is stored, hits are still served, and one warning with
    the OS's reason is logged, not one per request."""
    body = os.urandom(SIZE)
    page = b"<p>" + b"x" * 4000 + b"</p>"  # compressible: a client asks for gzip
    disk.put("hot.bin", b"cached before")
    disk.put("big.bin", body)
    disk.put("page.html", page, ContentType="text/html")
    disk.put("404.html", b"<p>not here</p>", ContentType="text/html")
    proxy = disk.start(error_document="404.html")
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        assert http.get("/hot.bin").content == b"cached before"
        cached = disk.files()
        full = disk.fill(None)
        for _ in range(2):
            r = http.get("/big.bin")
            assert r.status_code == 200 and r.content == body
        assert len(disk.gets("big.bin")) == 2
        ranged = http.get("/big.bin", headers={"range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == body[100:200]
        html = http.get("/page.html", headers={"accept-encoding": "gzip"})
        assert html.status_code == 200 and html.content == page
        missing = http.get("/nope.html")
        assert missing.status_code == 404 and missing.content == b"<p>not here</p>"
        assert http.get("/hot.bin").content == b"cached before"
    assert len(disk.gets("hot.bin")) == 1
    assert disk.files() == cached and full.created == 0
    assert proxy.app.resources.cache.get("big.bin") is None
    assert disk.warnings.once()["error"] == "cannot create a cache file: No space left on device"


def test_a_disk_that_fills_mid_body_still_serves_every_byte(disk: Disk) -> None:
    """When a write fails part way, every client waiting on the fill still gets the whole,
    correct body (what the file held, then the rest asked of S3 with a Range and If-Match),
    the partial file is removed and nothing is recorded; the next request passes through
    without trying the cache while the disk has no room, and the first miss after space is
    freed caches again (no fixed wait)."""
    body = disk.video()
    proxy = disk.start()
    etag = disk.s3.client().head_object(Bucket=disk.bucket, Key="video.bin")["ETag"]
    full = disk.fill(300_000)
    # Slow enough that all four clients join the fill and read its file before it fails.
    disk.s3.faults.append(Fault("/video.bin", delay=0.3, chunk_delay=0.02))
    responses = asyncio.run(_get_many(f"{proxy.url}/video.bin", 4))
    assert [r.status_code for r in responses] == [200] * 4
    assert all(r.content == body for r in responses)
    first, *rest = disk.gets("video.bin")
    assert "range" not in first and 1 <= len(rest) <= 4
    for resumed in rest:  # the file's bytes, then the rest of the same version from S3
        offset = int(resumed.get("range", "bytes=0-").removeprefix("bytes=").rstrip("-"))
        assert offset <= 300_000 and resumed["if-match"] == etag
    assert full.created == 1 and disk.files() == []
    assert proxy.app.resources.cache.get("video.bin") is None
    assert disk.warnings.once()["error"] == "cannot write a cache file: No space left on device"

    gets = len(disk.gets("video.bin"))
    r = httpx.get(f"{proxy.url}/video.bin", timeout=10)
    assert r.status_code == 200 and r.content == body
    assert len(disk.gets("video.bin")) == gets + 1 and full.created == 1

    full.room = 10 * SIZE  # space was freed
    assert httpx.get(f"{proxy.url}/video.bin", timeout=10).content == body
    assert disk.files() == [object_hash(disk.bucket, "video.bin")]
    assert httpx.get(f"{proxy.url}/video.bin", timeout=10).content == body
    assert len(disk.gets("video.bin")) == gets + 2


def test_a_range_on_a_cold_key_survives_a_disk_that_fills(disk: Disk) -> None:
    """A Range waits for the body to be stored; when the disk fills first, the range is asked
    of S3 instead (a 206, not a 502)."""
    body = disk.video()
    proxy = disk.start()
    disk.fill(300_000)
    r = httpx.get(f"{proxy.url}/video.bin", headers={"range": "bytes=1500000-1500099"})
    assert r.status_code == 206 and r.content == body[1_500_000:1_500_100]
    assert r.headers["content-range"] == f"bytes 1500000-1500099/{SIZE}"
    assert disk.files() == []


def test_a_commit_that_fails_keeps_nothing_and_serves_the_body(disk: Disk) -> None:
    """A body written whole whose rename into place fails is served complete from its file
    (no second S3 GET), and neither the file nor an index record is left."""
    body = disk.video()
    proxy = disk.start()
    disk.fill(10 * SIZE, rename=False)
    r = httpx.get(f"{proxy.url}/video.bin", timeout=10)
    assert r.status_code == 200 and r.content == body
    assert len(disk.gets("video.bin")) == 1
    assert disk.files() == [] and proxy.app.resources.cache.get("video.bin") is None
    assert disk.warnings.once()["error"] == "cannot store 'video.bin': No space left on device"


def test_a_file_too_large_for_the_file_system_passes_that_object_through(disk: Disk) -> None:
    """EFBIG is about one object, not the disk: the object is served whole, later requests
    for it (and for anything as large) stream from S3 without trying the cache again, and
    smaller objects are still cached meanwhile."""
    body, small = os.urandom(SIZE), os.urandom(100_000)
    disk.put("big.bin", body)
    disk.put("small.bin", small)
    proxy = disk.start()
    full = disk.fill(10 * SIZE, file_limit=500_000)
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        for _ in range(2):
            r = http.get("/big.bin")
            assert r.status_code == 200 and r.content == body
        assert full.created == 1  # the second request did not try the cache
        for _ in range(2):
            assert http.get("/small.bin").content == small
    assert len(disk.gets("small.bin")) == 1
    assert disk.files() == [object_hash(disk.bucket, "small.bin")]
    assert disk.warnings.once()["error"] == "cannot write a cache file: File too large"


def test_caching_resumes_on_the_first_miss_after_the_directory_is_back(disk: Disk) -> None:
    """With the cache's directory removed (a cron job, an operator), misses stream from S3;
    the first miss after it is recreated is cached again, with no fixed wait."""
    body = disk.video()
    proxy = disk.start()
    objects = Path(proxy.config.cache.cache_dir) / "objects"
    shutil.rmtree(objects)
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        for _ in range(2):
            r = http.get("/video.bin")
            assert r.status_code == 200 and r.content == body
        assert not objects.exists()  # not tried again while it is gone
        objects.mkdir()
        assert http.get("/video.bin").content == body
        assert disk.files() == [object_hash(disk.bucket, "video.bin")]
        assert http.get("/video.bin").content == body
    assert len(disk.gets("video.bin")) == 3
    disk.warnings.once()


class Directory:
    """What :class:`DiskFaults` asks of the file system, as plain settings."""

    def __init__(self) -> None:
        self.free: int | None = 0
        self.exists = True

    def free_bytes(self) -> int | None:
        return self.free

    def present(self) -> bool:
        return self.exists


@pytest.mark.parametrize(
    ("code", "size", "later", "expected"),
    [
        pytest.param(
            errno.EFBIG,
            5_000,
            [(0, 4_999, True), (0, 5_000, False)],
            None,
            id="efbig-bounds-object-size-only",
        ),
        pytest.param(
            errno.ENOSPC, 0, [(0, 100, False)], {"free": 99}, id="enospc-until-room-for-the-object"
        ),
        pytest.param(errno.ENOSPC, 0, [(0, 100, True)], {"free": 100}, id="enospc-over-once-room"),
        pytest.param(
            errno.EDQUOT, 0, [(0, 100, True)], {"free": 1 << 30}, id="quota-like-no-space"
        ),
        pytest.param(errno.ENOENT, 0, [(0, 1, False)], {"exists": False}, id="gone-until-back"),
        pytest.param(errno.ENOENT, 0, [(0, 1, True)], {"exists": True}, id="back-at-once"),
        pytest.param(
            errno.EIO, 0, [(0.9, 1, False), (1.0, 1, True)], None, id="eio-backs-off-one-second"
        ),
    ],
)
def test_disk_faults_by_cause(
    code: int,
    size: int,
    later: list[tuple[float, int, bool]],
    expected: dict[str, Any] | None,
) -> None:
    """Each cause decides which objects are tried and when: (seconds later, object size,
    tried?)."""
    now = [100.0]
    directory = Directory()
    for name, value in (expected or {}).items():
        setattr(directory, name, value)
    faults = DiskFaults(directory, clock=lambda: now[0])  # type: ignore[arg-type]
    faults.failed(_error(code), size)
    for seconds, object_size, tried in later:
        now[0] = 100.0 + seconds
        assert (faults.refusal(object_size) is None) == tried


def test_eio_backs_off_longer_each_time_and_a_store_resets_it() -> None:
    """Repeated I/O errors double the wait (up to a bound); a body stored resets it."""
    now = [0.0]
    faults = DiskFaults(Directory(), clock=lambda: now[0])  # type: ignore[arg-type]
    waits = []
    for _ in range(8):
        faults.failed(_error(errno.EIO), 0)
        start = now[0]
        while faults.refusal(1) is not None:
            now[0] += 0.5
        waits.append(now[0] - start)
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60]
    faults.stored()
    assert faults.refusal(1) is None
    faults.failed(_error(errno.EIO), 0)
    now[0] += 1
    assert faults.refusal(1) is None
