"""``s3proxy publish`` against moto as a server, through a fault-injecting proxy: content
sync, headers, faults and resumption, each ending with the bucket byte-equal to the tree."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3proxy.config import OriginConfig
from s3proxy.exceptions import PublishError
from s3proxy.publish.headers import CacheRule
from s3proxy.publish.run import Options, Summary, publish
from tests.publish_faults import FaultProxy, Rule
from tests.servers import KEY_ID, REGION, SECRET, S3Server

BUCKET = "site"
MiB = 1024 * 1024
PUTS = r"^(PUT|POST) "
PARTS = r"^PUT \S+partNumber="


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with S3Server().running() as server:
        yield server


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    client = s3.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", ()):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    with FaultProxy(("127.0.0.1", s3.port)).running() as faults:
        yield faults


@pytest.fixture(scope="module", autouse=True)
def bucket(s3: S3Server) -> None:
    s3.client().create_bucket(Bucket=BUCKET)


def origin(proxy: FaultProxy, bucket: str = BUCKET) -> OriginConfig:
    return OriginConfig(
        bucket=bucket,
        region=REGION,
        key=KEY_ID,
        secret=SECRET,
        endpoint_url=proxy.endpoint_url,
        path_style=True,
    )


def run(root: Path, proxy: FaultProxy, tmp_path: Path, **options: Any) -> Summary:
    """One publish of ``root``, its state under ``tmp_path``."""
    settings = {"origin": origin(proxy), "state_dir": str(tmp_path / "state"), **options}
    return asyncio.run(publish(Options(root=str(root), **settings), lambda line: None))


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def bucket_contents(s3: S3Server, prefix: str = "") -> dict[str, bytes]:
    client = s3.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", ()):
            body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = body
    return found


def tree_contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


SITE = {
    "index.html": b"<h1>home</h1>",
    "docs/a.html": b"<p>a</p>",
    "assets/app.3f2a.js": b"console.log(1)" * 100,
    "assets/app.css.gz": b"\x1f\x8b fake gzip",
    "big.bin": os.urandom(18 * MiB + 3),
    ".well-known/security.txt": b"Contact: x",
    "empty.txt": b"",
}


def test_first_publish_then_nothing_to_send(
    s3: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A first publish makes the bucket equal to the tree; publishing the same tree again
    sends no PUT or POST at all (a multipart object is recognised by its ETag, no HEAD)."""
    root = make_tree(tmp_path / "site", SITE)
    summary = run(root, proxy, tmp_path)
    assert summary.uploaded == len(SITE) and not summary.failed
    assert bucket_contents(s3) == tree_contents(root)
    before = len(proxy.lines)
    again = run(root, proxy, tmp_path)
    assert again.uploaded == 0 and again.plan.unchanged == len(SITE)
    assert [line.split()[0] for line in proxy.lines[before:]] == ["GET"]  # the one listing


def test_changed_and_deleted_files(s3: S3Server, proxy: FaultProxy, tmp_path: Path) -> None:
    """Only the changed file is sent; --delete removes the object whose file is gone, under
    the prefix only; a dry run before changes nothing."""
    root = make_tree(tmp_path / "site", {"a.html": b"a", "b.html": b"b", "c.css": b"c"})
    s3.client().put_object(Bucket=BUCKET, Key="elsewhere.txt", Body=b"keep")
    run(root, proxy, tmp_path, prefix="www/")
    (root / "a.html").write_bytes(b"a, changed")
    (root / "c.css").unlink()
    before = len(proxy.lines)
    plan = run(root, proxy, tmp_path, prefix="www/", delete=True, dry_run=True).plan
    assert [f.key for f in plan.uploads] == ["www/a.html"] and plan.deletes == ("www/c.css",)
    assert proxy.count(PUTS) == 3 and len(proxy.lines) == before + 1  # listed, nothing sent
    summary = run(root, proxy, tmp_path, prefix="www/", delete=True)
    assert (summary.uploaded, summary.deleted) == (1, 1)
    assert bucket_contents(s3, "www/") == tree_contents(root)
    assert bucket_contents(s3)["elsewhere.txt"] == b"keep"


def test_headers(s3: S3Server, proxy: FaultProxy, tmp_path: Path) -> None:
    """Content-Type by extension, the first matching --cache-control rule, and
    Content-Encoding for a pre-compressed stylesheet (not for an archive)."""
    files = {"index.html": b"x", "assets/app.css.gz": b"x", "dl/site.tar.gz": b"x"}
    root = make_tree(tmp_path / "site", files)
    rules = (CacheRule.parse("assets/*=immutable"), CacheRule.parse("*.html=max-age=60"))
    run(root, proxy, tmp_path, cache_rules=rules)
    client = s3.client()

    def head(key: str) -> tuple[str, str | None, str | None]:
        h = client.head_object(Bucket=BUCKET, Key=key)
        return h["ContentType"], h.get("CacheControl"), h.get("ContentEncoding")

    assert head("index.html") == ("text/html", "max-age=60", None)
    assert head("assets/app.css.gz") == ("text/css", "immutable", "gzip")
    assert head("dl/site.tar.gz") == ("application/gzip", None, None)


def test_reset_mid_part_is_retried(s3: S3Server, proxy: FaultProxy, tmp_path: Path) -> None:
    """Connection resets in the middle of a part's body, and of a small file's, are retried:
    the bucket ends byte-equal to the tree, and the stats count our retries (aiohttp itself
    retries an idempotent request once, so each fault hits two attempts in a row)."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(17 * MiB), "a.txt": b"a" * 5000})
    proxy.rules += [
        Rule(r"partNumber=2", reset_after=1 * MiB, times=2),
        Rule(r"^PUT /site/a\.txt ", reset_after=100, times=2),
    ]
    stats = tmp_path / "stats.jsonl"
    summary = run(root, proxy, tmp_path, stats_path=str(stats))
    assert not summary.failed and bucket_contents(s3) == tree_contents(root)
    lines = {line["key"]: line for line in map(json.loads, stats.read_text().splitlines())}
    assert lines["big.bin"]["retries"] == 1 and lines["big.bin"]["parts"] == 3
    assert lines["a.txt"]["retries"] == 1 and lines["a.txt"]["attempts"] == 2
    assert proxy.count(PARTS) == 5


def test_slow_down_is_retried(s3: S3Server, proxy: FaultProxy, tmp_path: Path) -> None:
    """503 SlowDown on parts, on a completion and on a PUT backs off and retries."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(9 * MiB), "a.txt": b"a"})
    proxy.rules += [
        Rule(PARTS, slow_down=True, times=2),
        Rule(r"^POST \S+uploadId=", slow_down=True),
        Rule(r"^PUT /site/a\.txt ", slow_down=True),
    ]
    summary = run(root, proxy, tmp_path)
    assert not summary.failed and bucket_contents(s3) == tree_contents(root)
    assert proxy.count(PARTS) == 4


def test_failure_after_retries_publishes_nothing_half(
    s3: S3Server, proxy: FaultProxy, tmp_path: Path
) -> None:
    """When a part fails on every attempt, the publish fails, deletes nothing, and the object
    is not visible; the next run resumes the upload and sends only the missing part."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(17 * MiB)})
    s3.client().put_object(Bucket=BUCKET, Key="old.html", Body=b"old")
    proxy.rules.append(Rule(r"partNumber=3", slow_down=True, times=100))
    with pytest.raises(PublishError, match="1 of 1 files failed"):
        run(root, proxy, tmp_path, delete=True)
    assert set(bucket_contents(s3)) == {"old.html"}
    proxy.rules.clear()
    before = proxy.count(PARTS)
    run(root, proxy, tmp_path, delete=True)
    assert proxy.count(PARTS) - before == 1
    assert bucket_contents(s3) == tree_contents(root)


def cli(proxy: FaultProxy, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``s3proxy publish ARGS`` as a user runs it: exit code, stdout, stderr."""
    import subprocess
    import sys

    s3_flags = ["--region", REGION, "--key", KEY_ID, "--secret", SECRET]
    s3_flags += ["--endpoint-url", proxy.endpoint_url, "--path-style", "true"]
    done = subprocess.run(
        [sys.executable, "-m", "s3proxy", "publish", *args, *s3_flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["missing-dir", "--bucket", BUCKET], 2, "does not exist", id="no-dir"),
        pytest.param(["."], 2, "--bucket (or S3_BUCKET) is required", id="no-bucket"),
        pytest.param([".", "--bucket", "nope"], 1, "bucket 'nope' does not exist", id="bucket"),
        pytest.param(
            [".", "--bucket", BUCKET, "--cache-control", "x"], 2, "GLOB=VALUE", id="bad-rule"
        ),
        pytest.param([".", "--bucket", BUCKET, "--abort-stale", "soon"], 2, "age", id="bad-age"),
    ],
)
def test_cli_errors(
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    code: int,
    message: str,
) -> None:
    """Each error is one line on stderr with exit code 2 (usage) or 1 (failure)."""
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(proxy, tmp_path, *args)
    assert status == code and message in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_cli_dry_run_then_publish(s3: S3Server, proxy: FaultProxy, tmp_path: Path) -> None:
    """--dry-run prints the plan and sends nothing; the publish prints its summary."""
    root = make_tree(tmp_path / "site", {"index.html": b"<p>", "a.css": b"a{}"})
    status, out, _ = cli(proxy, tmp_path, str(root), "--bucket", BUCKET, "--dry-run")
    assert status == 0 and "plan: 2 uploads (0.0 MB), 0 deletes, 0 unchanged" in out
    assert "upload a.css (3 bytes)" in out and bucket_contents(s3) == {}
    status, out, _ = cli(proxy, tmp_path, str(root), "--bucket", BUCKET)
    assert status == 0 and out.startswith("published 2 files"), out
    assert bucket_contents(s3) == tree_contents(root)
