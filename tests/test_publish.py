"""``s3proxy publish`` against moto as a server, through a fault-injecting proxy: content
sync, headers, faults and resumption, each ending with the bucket byte-equal to the tree."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3proxy.config import OriginConfig
from s3proxy.exceptions import PublishError
from s3proxy.publish.headers import CacheRule
from s3proxy.publish.run import Options, Summary, publish
from tests.publish_faults import FaultProxy, Rule
from tests.servers import KEY_ID, REGION, SECRET, S3Server

MiB = 1024 * 1024
PUTS = r"^(PUT|POST) "
PARTS = r"^PUT \S+partNumber="


@dataclass
class Site:
    """The test's bucket behind the fault proxy, and where its publish state is kept."""

    s3: S3Server
    bucket: str
    faults: FaultProxy
    state_dir: Path

    @property
    def origin(self) -> OriginConfig:
        return OriginConfig(
            bucket=self.bucket,
            region=REGION,
            key=KEY_ID,
            secret=SECRET,
            endpoint_url=self.faults.endpoint_url,
            path_style=True,
        )

    def run(self, root: Path, **options: Any) -> Summary:
        """One publish of ``root`` (in-process)."""
        settings = {"origin": self.origin, "state_dir": str(self.state_dir), **options}
        return asyncio.run(publish(Options(root=str(root), **settings), lambda line: None))

    def contents(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``: its key without the prefix -> its body."""
        client = self.s3.client()
        found = {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"][len(prefix) :]] = body
        return found

    def cli(self, *args: str) -> tuple[int, str, str]:
        """``s3proxy publish ARGS`` as a user runs it: exit code, stdout, stderr."""
        flags = ["--region", REGION, "--key", KEY_ID, "--secret", SECRET, "--path-style", "true"]
        flags += ["--endpoint-url", self.faults.endpoint_url, "--state-dir", str(self.state_dir)]
        done = subprocess.run(
            [sys.executable, "-m", "s3proxy", "publish", *args, *flags],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return done.returncode, done.stdout, done.stderr


@pytest.fixture
def site(s3: S3Server, bucket: str, tmp_path: Path) -> Iterator[Site]:
    with FaultProxy(("127.0.0.1", s3.port)).running() as faults:
        yield Site(s3, bucket, faults, tmp_path / "state")


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


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
    "media/clip.bin": os.urandom(9 * MiB),  # two multipart uploads at once share the state
    ".well-known/security.txt": b"Contact: x",
    "empty.txt": b"",
}


def test_first_publish_then_nothing_to_send(site: Site, tmp_path: Path) -> None:
    """A first publish makes the bucket equal to the tree; publishing the same tree again
    sends no PUT or POST at all (a multipart object is recognised by its ETag, no HEAD)."""
    root = make_tree(tmp_path / "site", SITE)
    summary = site.run(root)
    assert summary.uploaded == len(SITE) and not summary.failed
    assert site.contents() == tree_contents(root)
    before = len(site.faults.lines)
    again = site.run(root)
    assert again.uploaded == 0 and again.plan.unchanged == len(SITE)
    assert [line.split()[0] for line in site.faults.lines[before:]] == ["GET"]  # the listing


def test_changed_and_deleted_files(site: Site, tmp_path: Path) -> None:
    """Only the changed file is sent; --delete removes the object whose file is gone, under
    the prefix only; a dry run before changes nothing."""
    root = make_tree(tmp_path / "site", {"a.html": b"a", "b.html": b"b", "c.css": b"c"})
    site.s3.client().put_object(Bucket=site.bucket, Key="elsewhere.txt", Body=b"keep")
    site.run(root, prefix="www/")
    (root / "a.html").write_bytes(b"a, changed")
    (root / "c.css").unlink()
    before = len(site.faults.lines)
    plan = site.run(root, prefix="www/", delete=True, dry_run=True).plan
    assert [f.key for f in plan.uploads] == ["www/a.html"] and plan.deletes == ("www/c.css",)
    assert site.faults.count(PUTS) == 3 and len(site.faults.lines) == before + 1  # a listing
    summary = site.run(root, prefix="www/", delete=True)
    assert (summary.uploaded, summary.deleted) == (1, 1)
    assert site.contents("www/") == tree_contents(root)
    assert site.contents()["elsewhere.txt"] == b"keep"


def test_headers(site: Site, tmp_path: Path) -> None:
    """Content-Type by extension, the first matching --cache-control rule, and
    Content-Encoding for a pre-compressed stylesheet (not for an archive)."""
    files = {"index.html": b"x", "assets/app.css.gz": b"x", "dl/site.tar.gz": b"x"}
    root = make_tree(tmp_path / "site", files)
    rules = (CacheRule.parse("assets/*=immutable"), CacheRule.parse("*.html=max-age=60"))
    site.run(root, cache_rules=rules)
    client = site.s3.client()

    def head(key: str) -> tuple[str, str | None, str | None]:
        h = client.head_object(Bucket=site.bucket, Key=key)
        return h["ContentType"], h.get("CacheControl"), h.get("ContentEncoding")

    assert head("index.html") == ("text/html", "max-age=60", None)
    assert head("assets/app.css.gz") == ("text/css", "immutable", "gzip")
    assert head("dl/site.tar.gz") == ("application/gzip", None, None)


def test_reset_mid_part_is_retried(site: Site, tmp_path: Path) -> None:
    """Connection resets in the middle of a part's body, and of a small file's, are retried:
    the bucket ends byte-equal to the tree, and the stats count our retries (aiohttp itself
    retries an idempotent request once, so each fault hits two attempts in a row)."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(17 * MiB), "a.txt": b"a" * 5000})
    site.faults.rules += [
        Rule(r"partNumber=2", reset_after=1 * MiB, times=2),
        Rule(rf"^PUT /{site.bucket}/a\.txt ", reset_after=100, times=2),
    ]
    stats = tmp_path / "stats.jsonl"
    summary = site.run(root, stats_path=str(stats))
    assert not summary.failed and site.contents() == tree_contents(root)
    lines = {line["key"]: line for line in map(json.loads, stats.read_text().splitlines())}
    assert lines["big.bin"]["retries"] == 1 and lines["big.bin"]["parts"] == 3
    assert lines["a.txt"]["retries"] == 1 and lines["a.txt"]["attempts"] == 2
    assert site.faults.count(PARTS) == 5


def test_slow_down_is_retried(site: Site, tmp_path: Path) -> None:
    """503 SlowDown on parts, on a completion and on a PUT backs off and retries."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(9 * MiB), "a.txt": b"a"})
    site.faults.rules += [
        Rule(PARTS, slow_down=True, times=2),
        Rule(r"^POST \S+uploadId=", slow_down=True),
        Rule(rf"^PUT /{site.bucket}/a\.txt ", slow_down=True),
    ]
    summary = site.run(root)
    assert not summary.failed and site.contents() == tree_contents(root)
    assert site.faults.count(PARTS) == 4


def test_failure_after_retries_publishes_nothing_half(site: Site, tmp_path: Path) -> None:
    """When a part fails on every attempt, the publish fails, deletes nothing, and the object
    is not visible; the next run resumes the upload and sends only the missing part."""
    root = make_tree(tmp_path / "site", {"big.bin": os.urandom(17 * MiB)})
    site.s3.client().put_object(Bucket=site.bucket, Key="old.html", Body=b"old")
    site.faults.rules.append(Rule(r"partNumber=3", slow_down=True, times=100))
    with pytest.raises(PublishError, match="1 of 1 files failed"):
        site.run(root, delete=True)
    assert set(site.contents()) == {"old.html"}
    site.faults.rules.clear()
    before = site.faults.count(PARTS)
    site.run(root, delete=True)
    assert site.faults.count(PARTS) - before == 1
    assert site.contents() == tree_contents(root)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["missing-dir", "--bucket", "b"], 2, "does not exist", id="no-dir"),
        pytest.param(["."], 2, "--bucket (or S3_BUCKET) is required", id="no-bucket"),
        pytest.param([".", "--bucket", "nope"], 1, "bucket 'nope' does not exist", id="bucket"),
        pytest.param([".", "--bucket", "b", "--cache-control", "x"], 2, "GLOB=VALUE", id="rule"),
        pytest.param([".", "--bucket", "b", "--abort-stale", "soon"], 2, "an age", id="age"),
    ],
)
def test_cli_errors(
    site: Site, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    """Each error is one line on stderr with exit code 2 (usage) or 1 (failure)."""
    monkeypatch.chdir(site.state_dir.parent)
    status, out, err = site.cli(*args)
    assert status == code and message in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_cli_refused_credentials(site: Site, tmp_path: Path) -> None:
    """Credentials S3 refuses: one line saying so, exit 1, nothing sent."""
    site.faults.rules.append(Rule(r"^GET ", error=(403, "InvalidAccessKeyId")))
    status, out, err = site.cli(str(tmp_path), "--bucket", site.bucket)
    assert status == 1 and out == ""
    assert (
        err == "s3proxy publish: error: S3 does not accept these credentials (InvalidAccessKeyId)\n"
    )


def test_cli_dry_run_then_publish(site: Site, tmp_path: Path) -> None:
    """--dry-run prints the plan and sends nothing; the publish prints its summary."""
    root = make_tree(tmp_path / "site", {"index.html": b"<p>", "a.css": b"a{}"})
    status, out, _ = site.cli(str(root), "--bucket", site.bucket, "--dry-run")
    assert status == 0 and "plan: 2 uploads (0.0 MB), 0 deletes, 0 unchanged" in out
    assert "upload a.css (3 bytes)" in out and site.contents() == {}
    status, out, _ = site.cli(str(root), "--bucket", site.bucket)
    assert status == 0 and out.startswith("published 2 files"), out
    assert site.contents() == tree_contents(root)


def test_cli_site_from_the_sites_file(site: Site, tmp_path: Path) -> None:
    """--site NAME --config FILE publishes to that site's server, bucket and prefix; an
    unknown site, or --site with --bucket, is one line and exit 2."""
    sites = tmp_path / "sites.toml"
    sites.write_text(
        f"""
[servers.store]
endpoint_url = "{site.faults.endpoint_url}"
path_style = true

[sites.docs]
hosts = ["docs.example.com"]
server = "store"
bucket = "{site.bucket}"
prefix = "handbook/"
"""
    )
    root = make_tree(tmp_path / "site", {"index.html": b"<p>", "a.css": b"a{}"})
    status, out, err = site.cli(str(root), "--site", "docs", "--config", str(sites))
    assert status == 0 and out.startswith("published 2 files"), err
    assert site.contents("handbook/") == tree_contents(root)
    status, _, err = site.cli(str(root), "--site", "blog", "--config", str(sites))
    assert status == 2 and "no site 'blog' (its sites: docs)" in err
    status, _, err = site.cli(str(root), "--site", "docs", "--bucket", "x", "--config", str(sites))
    assert status == 2 and "give no --bucket or --prefix" in err
