"""Resuming a large download, as download tools do: stop part way, then ask for the rest with
``Range`` (and ``If-Range``, so a changed object restarts cleanly with a 200)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest

from s3proxy.conditional import format_http_date, parse_http_date
from tests.servers import Fault, ProxyServer, S3Server

StartProxy = Callable[..., ProxyServer]

SIZE = 100 * 1024 * 1024
STOP_AFTER = 37 * 1024 * 1024  # the first download breaks off about here
CHUNK = 1024 * 1024
KEY = "downloads/big.bin"
CURL = shutil.which("curl")


@dataclass(frozen=True)
class Original:
    """The object's bytes, on disk (never all in memory), and their digest."""

    path: Path
    sha256: str


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    """100 MB of seeded random bytes, generated a chunk at a time."""
    path = tmp_path_factory.mktemp("resume") / "big.bin"
    rng, digest = random.Random(37), hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(SIZE // CHUNK):
            chunk = rng.randbytes(CHUNK)
            digest.update(chunk)
            f.write(chunk)
    return Original(path, digest.hexdigest())


@dataclass
class Big:
    """The 100 MB object behind an s3proxy, and how the proxy holds it."""

    url: str
    state: str  # cold, warm, or pass-through (larger than the cache takes)
    s3: S3Server
    bucket: str

    def s3_gets(self) -> list[dict[str, str]]:
        """The headers of each GetObject s3proxy sent for the object."""
        path = f"/{self.bucket}/{KEY}"
        return [h for m, p, h in self.s3.requests if m == "GET" and p == path]

    def check_origin_traffic(self, ranges: int) -> None:
        """Cached: S3 was asked once, whoever hung up. Passing through: one GetObject per
        request, and each honoured range was asked of S3 as a range."""
        gets = self.s3_gets()
        if self.state == "pass-through":
            assert sum("range" in h for h in gets) == ranges, gets
        else:
            assert len(gets) == 1, gets


@pytest.fixture(
    params=[
        pytest.param("cold", id="cold"),
        pytest.param("warm", id="warm"),
        pytest.param("pass-through", id="pass-through"),
    ]
)
def big(
    request: pytest.FixtureRequest,
    original: Original,
    s3: S3Server,
    bucket: str,
    start_proxy: StartProxy,
) -> Iterator[Big]:
    """The 100 MB object in the test's bucket, behind a fresh s3proxy: not yet cached (the
    first request streams while the cache fills), already cached, or over
    ``cache_max_object_size`` (streamed from S3, never stored)."""
    with original.path.open("rb") as body:
        s3.client().put_object(
            Bucket=bucket, Key=KEY, Body=body, ContentType="application/octet-stream"
        )
    state: str = request.param
    limit = SIZE // 2 if state == "pass-through" else SIZE
    url = f"{start_proxy(cache_max_object_size=limit).url}/{KEY}"
    s3.requests.clear()
    if state == "warm":
        warm_up(url)
    yield Big(url, state, s3, bucket)
    # moto keeps each object in a temporary file for the whole session: free the space.
    s3.client().delete_object(Bucket=bucket, Key=KEY)


def client() -> httpx.Client:
    # No proxies from the environment; "identity" as wget sends it: the bytes as stored.
    return httpx.Client(timeout=30, trust_env=False, headers={"accept-encoding": "identity"})


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_body(response: httpx.Response, out: BinaryIO, limit: int | None = None) -> int:
    """Write the body to ``out``, stopping once ``limit`` bytes have arrived; the count."""
    received = 0
    for chunk in response.iter_raw(CHUNK):
        out.write(chunk)
        received += len(chunk)
        if limit is not None and received >= limit:
            break
    return received


def interrupted_download(url: str, target: Path) -> httpx.Headers:
    """GET ``url`` into ``target`` and hang up after about :data:`STOP_AFTER` bytes, as a
    download does when the network drops; the response headers a tool keeps for resuming."""
    with client() as http, http.stream("GET", url) as response, target.open("wb") as out:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(SIZE)
        received = copy_body(response, out, STOP_AFTER)
        assert STOP_AFTER <= received < SIZE
        return response.headers
    # Leaving the blocks closes the response unread, and with it the connection.


def warm_up(url: str) -> None:
    """Fetch the whole object once, so s3proxy serves it from its cache."""
    with client() as http, http.stream("GET", url) as response:
        assert response.status_code == 200
        assert sum(len(chunk) for chunk in response.iter_raw(CHUNK)) == SIZE


def test_resume_with_if_range(big: Big, original: Original, tmp_path: Path) -> None:
    """A download broken off at 37 MB resumes with Range + If-Range: a 206 with exactly the
    rest, and the joined file is the object."""
    target = tmp_path / "big.bin"
    first = interrupted_download(big.url, target)
    have = target.stat().st_size
    resume = {"range": f"bytes={have}-", "if-range": first["etag"]}
    with (
        client() as http,
        http.stream("GET", big.url, headers=resume) as response,
        target.open("ab") as out,
    ):
        assert response.status_code == 206
        assert response.headers["content-range"] == f"bytes {have}-{SIZE - 1}/{SIZE}"
        assert response.headers["content-length"] == str(SIZE - have)
        assert response.headers["etag"] == first["etag"]
        assert copy_body(response, out) == SIZE - have
    assert target.stat().st_size == SIZE
    assert sha256_of(target) == original.sha256
    big.check_origin_traffic(ranges=1)


def test_stale_if_range_restarts_with_200(big: Big, original: Original, tmp_path: Path) -> None:
    """A Range whose If-Range names another version (another ETag, a weak one, an older
    Last-Modified) gets a 200 with the whole object, so the tool starts over; the current
    Last-Modified still gets the 206."""
    with client() as http:
        head = http.head(big.url)
    assert head.status_code == 200
    etag, last_modified = head.headers["etag"], head.headers["last-modified"]
    modified_at = parse_http_date(last_modified)
    assert modified_at is not None
    older = format_http_date(modified_at - 3600)
    other_etag = '"' + "0" * 32 + '"'
    assert other_etag != etag
    have = STOP_AFTER
    for if_range in (other_etag, "W/" + etag, older):
        target = tmp_path / "restart.bin"
        headers = {"range": f"bytes={have}-", "if-range": if_range}
        with (
            client() as http,
            http.stream("GET", big.url, headers=headers) as response,
            target.open("wb") as out,
        ):
            assert response.status_code == 200, if_range
            assert "content-range" not in response.headers
            assert response.headers["content-length"] == str(SIZE)
            assert response.headers["etag"] == etag
            assert copy_body(response, out) == SIZE
        assert sha256_of(target) == original.sha256, if_range
    # The date the tool was given is still current: the range is honoured.
    headers = {"range": f"bytes={SIZE - 10}-", "if-range": last_modified}
    with client() as http:
        response = http.get(big.url, headers=headers)
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"
    with original.path.open("rb") as f:
        f.seek(SIZE - 10)
        assert response.content == f.read()
    big.check_origin_traffic(ranges=1)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_resumes(big: Big, original: Original, tmp_path: Path) -> None:
    """``curl -C -`` continues a file that holds the first 37 MB: it asks for the rest with
    Range, gets a 206, and the file ends up identical to the object."""
    assert CURL is not None
    target = tmp_path / "big.bin"
    interrupted_download(big.url, target)
    have = target.stat().st_size
    # -q: no ~/.curlrc; no proxy; -f: an HTTP error fails. curl refuses (exit 33) a 200.
    done = subprocess.run(
        [CURL, "-q", "-sS", "-f", "--noproxy", "*", "-C", "-", "-o", str(target),
         "-w", "%{http_code} %{size_download}", big.url],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"206 {SIZE - have}"
    assert target.stat().st_size == SIZE
    assert sha256_of(target) == original.sha256
    big.check_origin_traffic(ranges=1)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_curl_resume_of_a_complete_file(big: Big, original: Original, tmp_path: Path) -> None:
    """``curl -C -`` on a file that is already complete asks for the bytes past its end, gets
    416 with ``Content-Range: bytes */size``, and leaves the file as it is."""
    assert CURL is not None
    target = tmp_path / "big.bin"
    shutil.copyfile(original.path, target)
    done = subprocess.run(
        [CURL, "-q", "-sS", "--noproxy", "*", "-C", "-", "-o", str(target),
         "-D", str(tmp_path / "headers"), "-w", "%{http_code}", big.url],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "416"
    headers = (tmp_path / "headers").read_text().lower()
    assert f"content-range: bytes */{SIZE}\n" in headers, headers
    assert target.stat().st_size == SIZE
    assert sha256_of(target) == original.sha256


def test_passed_through_range_is_from_the_version_if_range_names(
    s3: S3Server, bucket: str, start_proxy: StartProxy
) -> None:
    """A range of an object too large to cache is asked of S3 in a second GetObject; if the
    object is replaced between the two, the client must not get the new version's bytes under
    the old version's ETag (a resumed file would be silently corrupt)."""
    size = 256 * 1024
    versions = [random.Random(seed).randbytes(size) for seed in (1, 2)]
    key = "downloads/changing.bin"
    s3.client().put_object(Bucket=bucket, Key=key, Body=versions[0])
    url = f"{start_proxy(cache_max_object_size=1024).url}/{key}"
    with client() as http:
        old_etag = http.head(url).headers["etag"]
    path = f"/{bucket}/{key}"
    s3.requests.clear()
    # Both of the proxy's GetObjects wait a moment in front of S3: long enough to replace the
    # object after the first (whose headers the If-Range is checked against) has been seen.
    s3.faults.append(Fault(key, delay=1.0, times=2))
    result: list[httpx.Response] = []
    headers = {"range": "bytes=1000-", "if-range": old_etag}

    def download() -> None:
        with client() as http:
            result.append(http.get(url, headers=headers))

    downloader = threading.Thread(target=download)
    downloader.start()
    deadline = time.monotonic() + 10
    # (An s3proxy that asks S3 only once is done before this: nothing can change under it.)
    while downloader.is_alive() and sum(m == "GET" and p == path for m, p, _ in s3.requests) < 2:
        assert time.monotonic() < deadline, s3.requests
        time.sleep(0.01)
    s3.client().put_object(Bucket=bucket, Key=key, Body=versions[1])
    new_etag = s3.client().head_object(Bucket=bucket, Key=key)["ETag"]
    downloader.join(timeout=15)
    (response,) = result
    if response.status_code in (502, 503):
        return  # no bytes at all is safe: the tool retries, and its If-Range then fails
    etag = response.headers.get("etag")
    assert etag in (old_etag, new_etag), response.headers
    body = versions[0] if etag == old_etag else versions[1]
    if response.status_code == 206:
        assert response.headers["content-range"] == f"bytes 1000-{size - 1}/{size}"
        assert response.content == body[1000:], f"206 with ETag {etag}: bytes of another version"
    else:
        assert response.status_code == 200, response
        assert response.content == body
