"""Resuming ``s3proxy publish`` after the process is killed between parts, ``--abort-stale``,
the streaming :class:`~s3proxy.publish.uploader.Uploader`, and purging proxies after."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from s3proxy.exceptions import PublishError
from s3proxy.publish import progress
from s3proxy.publish.bucket import Bucket
from s3proxy.publish.uploader import Uploader
from tests.publish_faults import Rule
from tests.servers import KEY_ID, REGION, SECRET, ProxyServer
from tests.test_publish import PARTS, Site, make_tree, site, tree_contents

__all__ = ["site"]  # the fixture, used by name
MiB = 1024 * 1024


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_killed_between_parts_resumes(site: Site, tmp_path: Path) -> None:
    """``kill -9`` of a publish with two of five parts uploaded: the object is not visible,
    and the next publish continues the same upload (ListParts), sending only the three
    missing parts, and leaves the bucket byte-equal to the tree."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(33 * MiB), "a.txt": b"a"})
    site.faults.rules.append(Rule(r"partNumber=[345]", delay=30, times=100))
    flags = ["--region", REGION, "--key", KEY_ID, "--secret", SECRET, "--path-style", "true"]
    flags += ["--endpoint-url", site.faults.endpoint_url, "--state-dir", str(site.state_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "s3proxy", "publish", str(root), "--bucket", site.bucket,
         "--jobs", "2", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = site.s3.client()

    def parts_uploaded() -> int:
        uploads = client.list_multipart_uploads(Bucket=site.bucket).get("Uploads", [])
        if not uploads:
            return 0
        upload = uploads[0]
        listed = client.list_parts(Bucket=site.bucket, Key="big.bin", UploadId=upload["UploadId"])
        return len(listed.get("Parts", []))

    try:
        wait_for(lambda: parts_uploaded() == 2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert "big.bin" not in site.contents()
    site.faults.rules.clear()
    before = site.faults.count(PARTS)
    summary = site.run(root)
    assert site.faults.count(PARTS) - before == 3 and not summary.failed
    assert site.faults.count(r"^GET \S+uploadId=") == 1  # one ListParts
    assert site.contents() == tree_contents(root)
    assert client.list_multipart_uploads(Bucket=site.bucket).get("Uploads", []) == []


def test_ctrl_c_says_how_to_resume(site: Site, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) mid-publish: exit 130 and one line saying to run it again; the rerun
    finishes the job."""
    root = make_tree(tmp_path / "site", {"a.txt": b"a", "b.txt": b"b"})
    site.faults.rules.append(Rule(r"^PUT ", delay=30, times=100))
    flags = ["--region", REGION, "--key", KEY_ID, "--secret", SECRET, "--path-style", "true"]
    flags += ["--endpoint-url", site.faults.endpoint_url, "--state-dir", str(site.state_dir)]
    process = subprocess.Popen(
        [sys.executable, "-m", "s3proxy", "publish", str(root), "--bucket", site.bucket, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: site.faults.count(r"^PUT ") >= 1)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert err.strip() == "s3proxy publish: interrupted; run it again to resume"
    site.faults.rules.clear()
    site.run(root)
    assert site.contents() == tree_contents(root)


def test_abort_stale(site: Site, tmp_path: Path) -> None:
    """--abort-stale aborts the uploads under the prefix older than the age, none outside
    the prefix, none younger; a dry run only counts them. (moto dates every upload
    2010-11-10, so 30 years spares them and a day does not.)"""
    client = site.s3.client()
    client.create_multipart_upload(Bucket=site.bucket, Key="www/a.bin")
    client.create_multipart_upload(Bucket=site.bucket, Key="www/b.bin")
    client.create_multipart_upload(Bucket=site.bucket, Key="other/c.bin")
    root = make_tree(tmp_path / "site", {"a.txt": b"a"})

    def keys() -> set[str]:
        return {u["Key"] for u in client.list_multipart_uploads(Bucket=site.bucket)["Uploads"]}

    assert site.run(root, prefix="www/", abort_stale=30 * 365 * 86400.0).aborted == 0
    assert site.run(root, prefix="www/", abort_stale=86400.0, dry_run=True).aborted == 2
    assert keys() == {"www/a.bin", "www/b.bin", "other/c.bin"}
    assert site.run(root, prefix="www/", abort_stale=86400.0).aborted == 2
    assert keys() == {"other/c.bin"}


def test_uploader_streams_into_one_object(site: Site) -> None:
    """write() pieces become one object at complete(): multipart once past the threshold,
    one PUT below it; abort() and an exception leave nothing visible."""
    data = os.urandom(13 * MiB + 7)

    async def main() -> None:
        async with Bucket(site.origin) as bucket:
            async with Uploader(bucket, "big.csv", ContentType="text/csv") as upload:
                for start in range(0, len(data), 1_000_000):
                    await upload.write(data[start : start + 1_000_000])
                await upload.complete()
            async with Uploader(bucket, "small.txt") as upload:
                await upload.write(b"hello ")
                await upload.write(b"world")
                await upload.complete()
            with pytest.raises(RuntimeError):
                async with Uploader(bucket, "never.bin") as upload:
                    await upload.write(os.urandom(9 * MiB))
                    raise RuntimeError("the producer failed")
            upload = Uploader(bucket, "aborted.bin")
            await upload.write(b"x")
            await upload.abort()
            with pytest.raises(PublishError):
                await upload.write(b"y")

    asyncio.run(main())
    assert site.contents() == {"big.csv": data, "small.txt": b"hello world"}
    assert site.faults.count(PARTS) == 3  # 8 MiB and 5 MiB + 7 of big.csv, 8 MiB of never.bin
    client = site.s3.client()
    assert client.head_object(Bucket=site.bucket, Key="big.csv")["ContentType"] == "text/csv"
    assert client.list_multipart_uploads(Bucket=site.bucket).get("Uploads", []) == []


def test_purge_after_publish(
    site: Site, tmp_path: Path, start_proxy: Callable[..., ProxyServer]
) -> None:
    """With --purge, a proxy that cached the old page serves the new one at once (its TTL
    has not run out); deleted pages are purged too."""
    proxy = start_proxy(ttl=3600)
    root = make_tree(tmp_path / "site", {"index.html": b"old", "gone.html": b"bye"})
    site.run(root)
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        assert http.get("/").text == "old" and http.get("/gone.html").status_code == 200
        (root / "index.html").write_bytes(b"new")
        (root / "gone.html").unlink()
        summary = site.run(root, delete=True, purge_urls=(proxy.url,), auth_key="test-token")
        assert summary.purged == 1
        assert http.get("/").text == "new" and http.get("/gone.html").status_code == 404


def test_progress_lines_show_while_the_uploads_run(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a terminal the progress line is printed every PLAIN_EVERY seconds for as long
    as an upload runs (it once stopped as soon as the uploads were started)."""
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.05)
    root = make_tree(tmp_path / "site", {"a.txt": b"a"})
    site.faults.rules.append(Rule(r"^PUT ", delay=1, times=1))
    site.run(root)
    assert "0/1 files, 0.0/0.0 MB" in capsys.readouterr().err
