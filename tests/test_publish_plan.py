"""The pure parts of ``s3proxy publish``: plan, part sizes, headers, timeouts, backoff."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from s3proxy.publish.bandwidth import FLOOR, Bandwidth, backoff
from s3proxy.publish.command import parse_age
from s3proxy.publish.headers import CacheRule, object_headers
from s3proxy.publish.plan import (
    MAX_PARTS,
    LocalFile,
    MiB,
    RemoteObject,
    make_plan,
    part_count,
    part_size,
    same,
)
from s3proxy.publish.tree import digest, local_files, with_digest

MD5 = "0" * 32
FILE = LocalFile("a.txt", "/x/a.txt", 3, MD5)
BIG = LocalFile("big.bin", "/x/big.bin", 20 * MiB, MD5, '"abc-3"')


@pytest.mark.parametrize(
    ("local", "remote", "stored", "expected"),
    [
        pytest.param(FILE, RemoteObject(3, f'"{MD5}"'), None, True, id="same-md5"),
        pytest.param(FILE, RemoteObject(3, '"' + "1" * 32 + '"'), None, False, id="other-md5"),
        pytest.param(FILE, RemoteObject(4, f'"{MD5}"'), None, False, id="other-size"),
        pytest.param(BIG, RemoteObject(BIG.size, '"abc-3"'), None, True, id="our-multipart"),
        pytest.param(BIG, RemoteObject(BIG.size, '"def-2"'), None, None, id="ask-metadata"),
        pytest.param(BIG, RemoteObject(BIG.size, '"def-3"'), None, False, id="our-count-other"),
        pytest.param(
            LocalFile("a.txt", "", 3, ""), RemoteObject(3, '"x"'), None, False, id="no-digest"
        ),
        pytest.param(BIG, RemoteObject(BIG.size, '"def-2"'), MD5, True, id="metadata-same"),
        pytest.param(BIG, RemoteObject(BIG.size, '"def-2"'), "f" * 32, False, id="metadata-other"),
    ],
)
def test_same(
    local: LocalFile, remote: RemoteObject, stored: str | None, expected: bool | None
) -> None:
    """Sameness is by content: MD5, our multipart ETag, else the stored MD5 (or ask)."""
    assert same(local, remote, stored) is expected


def test_plan_orders_pages_last_and_deletes_only_when_asked() -> None:
    """New and changed files are uploaded, largest first and pages last; objects with no
    file are deleted only with delete=True; a multipart object of unknown part size is asked
    about, then decided by the metadata looked up (none: upload)."""
    files = [
        LocalFile("index.html", "", 10, MD5),
        LocalFile("small.css", "", 1, MD5),
        LocalFile("large.js", "", 100, MD5),
        LocalFile("same.txt", "", 3, MD5),
        BIG,
    ]
    remote = {
        "same.txt": RemoteObject(3, f'"{MD5}"'),
        "gone.txt": RemoteObject(1, '"x"'),
        "big.bin": RemoteObject(BIG.size, '"def-2"'),
    }
    plan = make_plan(files, remote)
    assert [f.key for f in plan.uploads] == ["large.js", "small.css", "index.html"]
    assert (plan.deletes, plan.unchanged, plan.ask) == ((), 1, ("big.bin",))
    again = make_plan(files, remote, delete=True, stored_md5={"big.bin": None})
    assert [f.key for f in again.uploads][0] == "big.bin"
    assert again.deletes == ("gone.txt",) and again.upload_bytes == BIG.size + 111


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param(9 * MiB, 8 * MiB, id="default"),
        pytest.param(8 * MiB * MAX_PARTS, 8 * MiB, id="fits-10000"),
        pytest.param(8 * MiB * MAX_PARTS + 1, 9 * MiB, id="grows-by-MiB"),
        pytest.param(5 * 1024**4, 525 * MiB, id="5-TiB"),
    ],
)
def test_part_size(size: int, expected: int) -> None:
    """8 MiB parts, grown in whole MiB so no file needs more than 10,000 of them."""
    assert part_size(size) == expected
    assert part_count(size, expected) <= MAX_PARTS


def test_multipart_etag_of_a_file(tmp_path: object) -> None:
    """digest() gives the MD5 and S3's multipart ETag: MD5 of the parts' MD5s, '-', count."""
    from pathlib import Path

    data = random.Random(1).randbytes(17 * MiB)
    path = Path(str(tmp_path)) / "f"
    path.write_bytes(data)
    parts = [data[i : i + 8 * MiB] for i in range(0, len(data), 8 * MiB)]
    combined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    part_md5s = "".join(hashlib.md5(p).hexdigest() for p in parts)
    expected = (hashlib.md5(data).hexdigest(), f'"{combined}-3"', part_md5s)
    assert digest(str(path), len(data)) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("index.html", {"ContentType": "text/html", "CacheControl": "max-age=60"}),
        pytest.param("a/app.css.gz", {"ContentType": "text/css", "ContentEncoding": "gzip"}),
        pytest.param(
            "a/app.js.br", {"ContentType": "text/javascript", "ContentEncoding": "br"}, id="br"
        ),
        pytest.param("site.tar.gz", {"ContentType": "application/gzip"}, id="archive"),
        pytest.param("font.woff2", {"ContentType": "font/woff2"}),
        pytest.param("README", {"ContentType": "application/octet-stream"}),
        pytest.param("assets/logo.png", {"ContentType": "image/png", "CacheControl": "immutable"}),
    ],
)
def test_object_headers(path: str, expected: dict[str, str]) -> None:
    """Type by extension, encoding for pre-compressed text, the first matching rule."""
    rules = (CacheRule.parse("assets/*=immutable"), CacheRule.parse("*.html=max-age=60"))
    assert object_headers(path, rules) == expected


def test_cache_rule_needs_glob_and_value() -> None:
    """A rule without '=' or a value is refused with the expected form."""
    with pytest.raises(ValueError, match="GLOB=VALUE"):
        CacheRule.parse("*.html")


def test_timeout_follows_bandwidth_with_a_floor() -> None:
    """The timeout grows with the bytes over the EWMA bandwidth, never under the floor; small
    transfers do not move the estimate."""
    bandwidth = Bandwidth()
    assert bandwidth.timeout(0) == FLOOR
    bandwidth.measured(10 * MiB, 1.0)  # the first sample replaces the guess
    assert bandwidth.estimate == 10 * MiB
    bandwidth.measured(100, 10.0)
    assert bandwidth.estimate == 10 * MiB
    bandwidth.measured(10 * MiB, 10.0)  # a tenth of the speed, weighted 0.3
    assert bandwidth.estimate == pytest.approx(0.3 * MiB + 0.7 * 10 * MiB)
    assert bandwidth.timeout(700 * MiB) > 300 > FLOOR


def test_backoff_is_jittered_and_capped() -> None:
    """Full jitter under an exponential bound, capped."""
    rng = random.Random(7)
    waits = [backoff(attempt, rng) for attempt in range(1, 20)]
    assert all(0 <= w <= min(20.0, 0.2 * 2 ** (a - 1)) for a, w in enumerate(waits, 1))
    assert len(set(waits)) == len(waits)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_parse_age(text: str, seconds: float) -> None:
    """Ages in seconds, minutes, hours or days."""
    assert parse_age(text) == seconds


def test_digests_only_where_they_decide(tmp_path: Path) -> None:
    """local_files hashes only the files ``wanted`` names (an object of their size exists)
    and remembers them by identity; with_digest hashes the others when they are sent."""
    (tmp_path / "a.txt").write_bytes(b"aaa")
    (tmp_path / "b.txt").write_bytes(b"bb")
    known: dict[str, list[str | None]] = {}
    a, b = local_files(str(tmp_path), "p/", known, lambda key, size: key == "p/a.txt")
    assert a.md5 == hashlib.md5(b"aaa").hexdigest() and b.md5 == "" and set(known) == {"a.txt"}
    b = with_digest(b, known, "p/")
    assert b.md5 == hashlib.md5(b"bb").hexdigest() and set(known) == {"a.txt", "b.txt"}
    again = local_files(str(tmp_path), "p/", known, lambda key, size: False)
    assert [f.md5 for f in again] == [a.md5, b.md5]  # remembered, not read again
    (tmp_path / "b.txt").write_bytes(b"BB")  # same size, new content: a new identity
    assert local_files(str(tmp_path), "p/", known, lambda key, size: False)[1].md5 == ""


def test_progress_line_and_plain_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line says files, bytes, rate and ETA; off a terminal it is written as plain
    lines, without a terminal's redraw escapes."""
    import asyncio
    import io

    from s3proxy.publish import progress as module
    from s3proxy.publish.progress import Progress

    sent = [0]
    stream = io.StringIO()
    progress = Progress(4, 8_000_000, lambda: sent[0], stream)
    sent[0] = 2_000_000
    progress.done()
    assert progress.line(progress._started + 2.0) == "1/4 files, 2.0/8.0 MB, 1.0 MB/s, ETA 6s"
    monkeypatch.setattr(module, "PLAIN_EVERY", 0.01)

    async def tick() -> None:
        written = asyncio.Event()
        stream.write = lambda text: (written.set(), io.StringIO.write(stream, text))[1]  # type: ignore[method-assign]
        async with progress.ticking():
            await written.wait()

    asyncio.run(tick())
    assert stream.getvalue().startswith("1/4 files, 2.0/8.0 MB") and "\x1b" not in stream.getvalue()


def test_purge_requests() -> None:
    """One clear per path (quoted), naming the site when there is one; past MAX_PATHS one
    clear of everything (of the site)."""
    from s3proxy.publish.purge import CLEAR_PATH, MAX_PATHS, requests_for

    root = "http://p:8000" + CLEAR_PATH
    assert requests_for("http://p:8000/", ["/a b.html"]) == [f"{root}?path=/a%20b.html"]
    assert requests_for("http://p:8000", ["/a"], "docs") == [f"{root}?path=/a&site=docs"]
    many = [f"/{n}" for n in range(MAX_PATHS + 1)]
    assert requests_for("http://p:8000", many) == [root]
    assert requests_for("http://p:8000", many, "docs") == [f"{root}?site=docs"]


def test_state_snapshots_written_from_threads_in_any_order(tmp_path: Path) -> None:
    """Snapshots written at once from many threads, in shuffled order: none fails (each
    write has its own temporary file) and the newest snapshot is what stays."""
    from concurrent.futures import ThreadPoolExecutor

    from s3proxy.publish.state import JsonFile

    state = JsonFile(str(tmp_path / "state" / "x.uploads.json"))
    savers = []
    for n in range(40):
        state.data[str(n)] = n
        savers.append(state.saver())
    random.Random(3).shuffle(savers)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda save: save(), savers))
    assert JsonFile(state.path).data == {str(n): n for n in range(40)}
    assert os.listdir(tmp_path / "state") == ["x.uploads.json"]
