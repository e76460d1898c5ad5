"""s3proxy.logging: real files in tmp_path, time injected through ``sink.clock``."""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import multiprocessing
import os
import re
import select
import time
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import pytest
import structlog
import uvicorn

from s3proxy import logging as slog
from s3proxy.app import configure_logging
from s3proxy.config import LogsConfig
from s3proxy.logging import sink
from tests.servers import ProxyServer, S3Server

Put = Callable[..., None]

# 2024-05-01T23:59:59.250Z: a quarter second before a UTC midnight.
BEFORE_MIDNIGHT = calendar.timegm((2024, 5, 1, 23, 59, 59)) + 0.25
AFTER_MIDNIGHT = BEFORE_MIDNIGHT + 1.0


class FakeClock:
    """Stands in for time.time; tests move ``now`` instead of sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Every test starts unconfigured and leaves the stdlib loggers as it found them."""
    root = logging.getLogger()
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in _touched_loggers()]
    yield
    slog.close()
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
    assert not any(isinstance(h, slog._SinkHandler) for h in root.handlers)


def _touched_loggers() -> list[logging.Logger]:
    names = ["uvicorn", "uvicorn.error", "uvicorn.access", "botocore", "aiobotocore"]
    return [logging.getLogger(), *(logging.getLogger(name) for name in names)]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(BEFORE_MIDNIGHT)
    monkeypatch.setattr(sink, "clock", fake)
    return fake


def log_file(directory: Path, day: str = "2024-05-01") -> Path:
    return directory / f"s3proxy-{day}.log"


def read_lines(path: Path) -> list[dict[str, object]]:
    """Parse every line as JSON; fails on a partial or multi-line record."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line) for line in data.splitlines()]


def request(n: int, path: str = "/") -> None:
    """A request line whose ``bytes`` field is ``n`` (tests read the order back from it)."""
    slog.request("GET", path, 200, n, 0.5, "hit", "127.0.0.1")


def numbers(path: Path) -> list[object]:
    return [line["bytes"] for line in read_lines(path)]


def test_request_line_is_one_json_object_with_ts_level_event_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The request line is compact JSON: ts (UTC, ms), level, event, then the fields."""
    slog.configure(log_dir=str(tmp_path))
    slog.request("GET", "/a b\n", 200, 3, 1.5, "miss", "::1", host="h", request_id="r")
    slog.flush()

    raw = log_file(tmp_path).read_text()
    assert raw.count("\n") == 1 and ", " not in raw
    (line,) = read_lines(log_file(tmp_path))
    assert line == {
        "ts": "2024-05-01T23:59:59.250Z",
        "level": "info",
        "event": "request",
        "method": "GET",
        "path": "/a b\n",
        "status": 200,
        "bytes": 3,
        "duration_ms": 1.5,
        "cache": "miss",
        "client_ip": "::1",
        "host": "h",
        "query": "",
        "referrer": "",
        "user_agent": "",
        "encoding": "",
        "request_id": "r",
        "site": "",
    }
    assert list(line)[:3] == ["ts", "level", "event"]


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/index.html", id="plain"),
        pytest.param('/a"b\\c\n\x00', id="quotes-backslashes-controls"),
        pytest.param("/caf\u00e9/\u2028", id="unicode"),
    ],
)
def test_request_line_is_what_structlogs_json_renderer_writes(
    tmp_path: Path, clock: FakeClock, path: str
) -> None:
    """The fixed-shape request line is byte for byte the JSONRenderer's line for its fields."""
    fields: dict[str, object] = {
        "method": "GET",
        "path": path,
        "status": 206,
        "bytes": 10,
        "duration_ms": 0.125,
        "cache": "hit",
        "client_ip": '1.2.3.4"',
        "host": "caf\u00e9.example",
        "query": 'a=1&b="2"',
        "referrer": "https://example.com/\\",
        "user_agent": "curl/8.5.0\t",
        "encoding": "br",
        "request_id": "f00d",
    }
    slog.configure(log_dir=str(tmp_path))
    slog.request(*fields.values(), site='do"cs')  # type: ignore[arg-type]
    slog.flush()

    head = {"ts": "2024-05-01T23:59:59.250Z", "level": "info", "event": "request"}
    fields["site"] = 'do"cs'
    rendered = structlog.processors.JSONRenderer(separators=(",", ":"))(None, "", head | fields)
    assert log_file(tmp_path).read_text() == f"{rendered}\n"


@pytest.mark.parametrize("micros", [0, 1, 50, 52, 125, 999, 1000, 1500, 999_999, 10**6, 10**9 + 7])
def test_request_line_duration_is_the_floats_repr(
    tmp_path: Path, clock: FakeClock, micros: int
) -> None:
    """duration_ms is written from tables under a second: as JSONRenderer writes the float."""
    slog.configure(log_dir=str(tmp_path))
    slog.write(slog.Fixed("GET", "/", 200, 0, "hit"), micros, slog.Who("::1"), "r")
    slog.flush()
    assert f'"duration_ms":{micros / 1000!r},' in log_file(tmp_path).read_text()


def test_request_line_in_console_format_is_structlogs_console_line(
    clock: FakeClock, capfd: pytest.CaptureFixture[str]
) -> None:
    """log_format="console" renders the request line with the events' key=value renderer."""
    slog.configure(log_dir=None, console=True, log_format="console")
    slog.request("GET", "/index.html", 200, 5, 0.25, "hit", "10.0.0.1")
    slog.get_logger("s3proxy.app").info("started", port=8080)
    slog.flush()

    request_line, event_line = capfd.readouterr().out.splitlines()
    assert request_line.startswith("2024-05-01T23:59:59.250Z [info")
    assert "request" in request_line and "path=/index.html" in request_line
    assert "status=200" in request_line and "host=" not in request_line  # "" is left out
    assert "[s3proxy.app]" in event_line and "port=8080" in event_line


def test_unencodable_event_values_do_not_break_the_line(tmp_path: Path, clock: FakeClock) -> None:
    """Odd values in an event become strings instead of raising into the caller."""
    slog.configure(log_dir=str(tmp_path))
    cycle: list[object] = []
    cycle.append(cycle)
    slog.get_logger().info("odd_path", path=Path("/x"))
    slog.get_logger().info("odd_cycle", cycle=cycle)
    slog.flush()

    first, second = read_lines(log_file(tmp_path))
    assert first["path"] == "/x"
    assert second["cycle"] == "[[...]]"


def test_lines_are_buffered_until_flush(tmp_path: Path, clock: FakeClock) -> None:
    """Nothing reaches the file until flush(); then everything does."""
    slog.configure(log_dir=str(tmp_path))
    for i in range(10):
        request(i)
    assert log_file(tmp_path).read_bytes() == b""

    slog.flush()
    assert numbers(log_file(tmp_path)) == list(range(10))


def test_buffer_past_32k_is_written_in_one_write_of_whole_lines(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing 32 KiB triggers exactly one os.write, and it ends on a line boundary."""
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: bytes) -> int:
        if fd > 2:
            writes.append(bytes(data))
        return real_write(fd, data)

    slog.configure(log_dir=str(tmp_path))
    monkeypatch.setattr(os, "write", recording_write)
    padding = "/" + "x" * 1000
    n = 0
    while not writes:
        request(n, padding)
        n += 1

    (chunk,) = writes
    assert slog.BUFFER_BYTES <= len(chunk) < slog.BUFFER_BYTES + 1100
    assert chunk.endswith(b"\n")
    assert [json.loads(line)["bytes"] for line in chunk.splitlines()] == list(range(n))

    request(n)
    assert len(writes) == 1
    slog.flush()
    assert len(writes) == 2 and json.loads(writes[1])["bytes"] == n


def test_file_rotates_at_utc_midnight_without_renaming(tmp_path: Path, clock: FakeClock) -> None:
    """After midnight UTC, flushes go to the new day's file; yesterday's stays as it was."""
    slog.configure(log_dir=str(tmp_path))
    request(1)
    slog.flush()
    clock.now = AFTER_MIDNIGHT
    request(2)
    slog.flush()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "s3proxy-2024-05-01.log",
        "s3proxy-2024-05-02.log",
    ]
    assert numbers(log_file(tmp_path, "2024-05-01")) == [1]
    (line,) = read_lines(log_file(tmp_path, "2024-05-02"))
    assert line["bytes"] == 2 and line["ts"] == "2024-05-02T00:00:00.250Z"


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param("logs", id="no-trailing-slash"),
        pytest.param("logs/", id="trailing-slash"),
        pytest.param("a/b/logs/", id="nested"),
    ],
)
def test_missing_log_dir_is_created(tmp_path: Path, clock: FakeClock, suffix: str) -> None:
    """The directory is created, trailing slash or not, and the file is mode 0o640 or less."""
    slog.configure(log_dir=f"{tmp_path}/{suffix}")
    request(1)
    slog.flush()

    path = log_file(tmp_path / suffix)
    assert len(read_lines(path)) == 1
    assert path.stat().st_mode & 0o777 & ~0o640 == 0


def test_unopenable_log_dir_fails_at_configure(tmp_path: Path) -> None:
    """A log dir that cannot be created fails loudly at startup."""
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        slog.configure(log_dir=str(tmp_path / "file" / "logs"))


@pytest.mark.parametrize("level", ["loud", ""])
def test_unknown_level_is_rejected(level: str) -> None:
    """configure fails on a level it does not know."""
    with pytest.raises(ValueError, match="unknown log level"):
        slog.configure(level=level, log_dir=None)


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        pytest.param(
            "DEBUG", ["request", "dbg", "inf", "wrn", "std-info", "std-warning"], id="debug"
        ),
        pytest.param("info", ["request", "inf", "wrn", "std-info", "std-warning"], id="info"),
        pytest.param("Warning", ["wrn", "std-warning"], id="warning"),
        pytest.param("critical", [], id="critical"),
    ],
)
def test_level_filters_request_lines_events_and_stdlib_records(
    tmp_path: Path, clock: FakeClock, level: str, expected: list[str]
) -> None:
    """Events below the level are dropped; the request line counts as info."""
    slog.configure(level=level, log_dir=str(tmp_path))
    log = slog.get_logger("s3proxy.test")
    request(0)
    log.debug("dbg")
    log.info("inf")
    log.warning("wrn")
    logging.getLogger("some.library").info("std-info")
    logging.getLogger("some.library").warning("std-warning")
    slog.flush()

    assert [line["event"] for line in read_lines(log_file(tmp_path))] == expected


def test_app_event_has_ts_level_event_logger_then_fields(tmp_path: Path, clock: FakeClock) -> None:
    """get_logger events share the request line's shape, with the logger's name."""
    log = slog.get_logger("s3proxy.cache")  # created before configure, like a module global
    slog.configure(log_dir=str(tmp_path))
    log.info("cache_cleared", entries=3)
    slog.get_logger().warning("origin_slow")
    slog.flush()

    first, second = read_lines(log_file(tmp_path))
    assert first == {
        "ts": "2024-05-01T23:59:59.250Z",
        "level": "info",
        "event": "cache_cleared",
        "logger": "s3proxy.cache",
        "entries": 3,
    }
    assert list(first) == ["ts", "level", "event", "logger", "entries"]
    assert second["logger"] == "s3proxy" and second["level"] == "warning"


@pytest.mark.parametrize(
    ("level", "with_traceback"),
    [pytest.param("info", False, id="info"), pytest.param("debug", True, id="debug")],
)
def test_exception_is_one_line_with_traceback_only_at_debug(
    tmp_path: Path, clock: FakeClock, level: str, with_traceback: bool
) -> None:
    """exc is "Type: message"; the traceback text is added at debug, still in one line."""
    slog.configure(level=level, log_dir=str(tmp_path))
    try:
        raise KeyError("k")
    except KeyError:
        slog.get_logger().exception("lookup_failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    slog.flush()

    lines = read_lines(log_file(tmp_path))
    assert [(line["level"], line["exc"]) for line in lines] == [("error", "KeyError: 'k'")] * 2
    for line in lines:
        assert ("traceback" in line) is with_traceback
        if with_traceback:
            assert str(line["traceback"]).startswith("Traceback (most recent call last)")


def test_uvicorn_records_go_to_the_same_file_in_the_same_format(
    tmp_path: Path, clock: FakeClock
) -> None:
    """uvicorn started with log_config=None logs through our sink, as JSON like ours."""
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler())  # a stale setup
    slog.configure(log_dir=str(tmp_path))
    uvicorn.Config(app="unused:app", log_config=None, access_log=False, log_level="info")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    request(0)
    slog.flush()

    uvicorn_line, request_line = read_lines(log_file(tmp_path))
    assert uvicorn_line["event"] == "Started server process [42]"
    assert uvicorn_line["logger"] == "uvicorn.error"
    assert uvicorn_line["level"] == "info"
    assert list(uvicorn_line)[:3] == list(request_line)[:3] == ["ts", "level", "event"]
    assert not logging.getLogger("uvicorn.error").handlers


def test_configure_twice_does_not_duplicate_lines(tmp_path: Path, clock: FakeClock) -> None:
    """configure is idempotent: one record, one line, whatever the number of calls."""
    slog.configure(log_dir=str(tmp_path))
    slog.configure(log_dir=str(tmp_path))
    logging.getLogger("x").warning("once")
    slog.get_logger().warning("once")
    slog.flush()

    assert [line["event"] for line in read_lines(log_file(tmp_path))] == ["once", "once"]


def test_close_flushes_and_unconfigures(tmp_path: Path, clock: FakeClock) -> None:
    """close writes what is buffered; afterwards request() writes nothing."""
    slog.configure(log_dir=str(tmp_path))
    request(1)
    slog.close()
    request(2)
    slog.flush()

    assert numbers(log_file(tmp_path)) == [1]


def test_console_echoes_the_same_lines_to_stdout(
    tmp_path: Path, clock: FakeClock, capfd: pytest.CaptureFixture[str]
) -> None:
    """--console true writes the file's lines to stdout as well, at flush time."""
    slog.configure(log_dir=str(tmp_path), console=True)
    request(1)
    assert capfd.readouterr().out == ""
    slog.flush()

    assert capfd.readouterr().out == log_file(tmp_path).read_text()


def test_flush_periodically_flushes_and_flushes_again_when_cancelled(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifespan task writes lines within its interval, and what is left on cancel."""
    slog.configure(log_dir=str(tmp_path))
    path = log_file(tmp_path)
    real_flush = slog.flush

    async def scenario() -> None:
        flushed = asyncio.Event()

        def flush_and_tell() -> None:
            real_flush()
            flushed.set()

        monkeypatch.setattr(slog, "flush", flush_and_tell)
        task = asyncio.create_task(slog.flush_periodically(0.001))
        request(1)
        await asyncio.wait_for(flushed.wait(), timeout=5)
        assert numbers(path) == [1]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        task = asyncio.create_task(slog.flush_periodically(3600))
        await asyncio.sleep(0)
        request(2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert numbers(path) == [1, 2]


def _append_from_another_process(log_dir: str, writer: int, count: int, start: Event) -> None:
    """Child process: configure, wait for the start signal, write ``count`` lines, close."""
    slog.configure(log_dir=log_dir)
    start.wait()
    padding = "p" * (97 + 31 * writer)  # line lengths that do not divide 32 KiB evenly
    for seq in range(count):
        request(seq, f"/{writer}/{padding}")
    slog.close()


def test_two_processes_append_only_whole_lines_to_one_file(tmp_path: Path) -> None:
    """Two processes writing the same file concurrently never split or lose a line."""
    count = 5000
    ctx = multiprocessing.get_context("spawn")  # as uvicorn starts its workers
    start = ctx.Event()
    workers = [
        ctx.Process(target=_append_from_another_process, args=(str(tmp_path), w, count, start))
        for w in (0, 1)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    lines = [line for path in sorted(tmp_path.iterdir()) for line in read_lines(path)]
    for writer in (0, 1):
        mine = [line["bytes"] for line in lines if str(line["path"]).startswith(f"/{writer}/")]
        assert mine == list(range(count))
    assert len(lines) == 2 * count


def test_forked_child_does_not_write_the_parents_buffer(tmp_path: Path, clock: FakeClock) -> None:
    """Lines buffered before a fork are written once, by the parent."""
    slog.configure(log_dir=str(tmp_path))
    request(0, "/parent")
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            request(0, "/child")
            slog.flush()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    slog.flush()

    assert sorted(str(line["path"]) for line in read_lines(log_file(tmp_path))) == [
        "/child",
        "/parent",
    ]


@pytest.mark.parametrize(
    ("data", "limit", "pieces"),
    [
        pytest.param(b"a\nb\n", 10, [b"a\nb\n"], id="fits"),
        pytest.param(b"aa\nbb\ncc\n", 6, [b"aa\nbb\n", b"cc\n"], id="cut-after-newline"),
        pytest.param(b"aa\nbb\ncc\n", 5, [b"aa\n", b"bb\n", b"cc\n"], id="never-mid-line"),
        pytest.param(b"a\nlonglong\nb\n", 4, [b"a\n", b"longlong\n", b"b\n"], id="long-line"),
        pytest.param(b"", 4, [], id="empty"),
    ],
)
def test_line_pieces_are_whole_lines_within_the_limit(
    data: bytes, limit: int, pieces: list[bytes]
) -> None:
    """stdout writes are cut after newlines, within PIPE_BUF unless one line is longer."""
    assert list(sink.line_pieces(data, limit)) == pieces


def test_stdout_writes_stay_within_pipe_buf(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 32 KiB flush reaches stdout in whole-line writes of at most PIPE_BUF bytes."""
    writes: list[bytes] = []

    def recording_write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return len(data)

    monkeypatch.setattr(os, "write", recording_write)
    slog.configure(log_dir=None, console=True)
    for n in range(200):
        request(n, "/" + "x" * 300)
    slog.flush()

    assert len(writes) > 1
    assert all(len(w) <= select.PIPE_BUF and w.endswith(b"\n") for w in writes)
    assert [json.loads(line)["bytes"] for w in writes for line in w.splitlines()] == list(
        range(200)
    )


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            {"bucket": "site", "auth_key": "s3cr3t", "port": 8080},
            {"bucket": "site", "auth_key": slog.REDACTED, "port": 8080},
            id="auth-key",
        ),
        pytest.param(
            {"AWS_Secret_Access_Key": "x", "Authorization": "Bearer y", "Key": "z"},
            {
                "AWS_Secret_Access_Key": slog.REDACTED,
                "Authorization": slog.REDACTED,
                "Key": slog.REDACTED,
            },
            id="any-case",
        ),
        pytest.param({"secret": None}, {"secret": None}, id="unset-stays-visible"),
        pytest.param(
            {"origin": {"secret": "x", "region": "eu"}},
            {"origin": {"secret": slog.REDACTED, "region": "eu"}},
            id="nested",
        ),
        pytest.param({"keys": "a", "monkey": "b"}, {"keys": "a", "monkey": "b"}, id="exact-names"),
    ],
)
def test_redact_hides_secret_values(config: dict[str, object], expected: dict[str, object]) -> None:
    """redact replaces secret values, by key name in any case, and leaves the input intact."""
    before = repr(config)
    assert slog.redact(config) == expected
    assert repr(config) == before


def test_redact_takes_custom_secret_keys() -> None:
    """The set of secret names can be replaced."""
    assert slog.redact({"token": "t", "key": "k"}, frozenset({"TOKEN"})) == {
        "token": slog.REDACTED,
        "key": "k",
    }


@pytest.mark.parametrize(
    ("retention", "kept_before", "kept_after_midnight"),
    [
        pytest.param(14, ["04-17"], [], id="14-days"),
        pytest.param(15, ["04-16", "04-17"], ["04-17"], id="15-days"),
        pytest.param(0, ["04-01", "04-16", "04-17"], ["04-01", "04-16", "04-17"], id="keep-all"),
    ],
)
def test_retention_deletes_daily_files_older_than_the_retention(
    tmp_path: Path,
    clock: FakeClock,
    retention: int,
    kept_before: list[str],
    kept_after_midnight: list[str],
) -> None:
    """Opening a day's file (at startup, at midnight) deletes our daily files dated more than
    the retention before it, and nothing else in the directory."""
    others = ["s3proxy-events-2024-04-01.log", "s3proxy-2024-04-01.log.gz", "notes.txt"]
    for name in ["s3proxy-2024-04-01.log", "s3proxy-2024-04-16.log", "s3proxy-2024-04-17.log"]:
        (tmp_path / name).write_text("old\n")
    for name in others:
        (tmp_path / name).write_text("not ours\n")

    def dated() -> list[str]:
        names = sorted(p.name for p in tmp_path.iterdir() if p.name not in others)
        return [name[len("s3proxy-2024-") : -len(".log")] for name in names]

    slog.configure(log_dir=str(tmp_path), retention_days=retention)
    assert dated() == [*kept_before, "05-01"]
    clock.now = AFTER_MIDNIGHT
    request(1)
    slog.flush()
    assert dated() == [*kept_after_midnight, "05-01", "05-02"]
    assert all((tmp_path / name).exists() for name in others)


def test_combined_format_is_nginxs_with_events_in_their_own_file(
    tmp_path: Path, clock: FakeClock
) -> None:
    """--log-format combined writes request lines as nginx's combined format (its escaping,
    "-" for absent headers) and events as JSON in s3proxy-events-<date>.log."""
    slog.configure(log_dir=str(tmp_path), log_format="combined")
    slog.request(
        "GET", "/a b", 200, 2950, 0.4, "hit", "203.0.113.7", host="example.com",
        query="q=1", referrer="https://example.com/", user_agent='curl/8 "x"\\\x01\u00e9',
        encoding="gzip", request_id="abc", http_version="1.1",
    )  # fmt: skip
    slog.request("HEAD", "/", 304, 0, 0.1, "hit", "::1", http_version="2")
    slog.request("-", "-", 431, 10, 0.0, "-", "10.0.0.1")
    slog.get_logger().info("started", port=8080)
    slog.flush()

    assert log_file(tmp_path).read_text().splitlines() == [
        '203.0.113.7 - - [01/May/2024:23:59:59 +0000] "GET /a b?q=1 HTTP/1.1" 200 2950 '
        '"https://example.com/" "curl/8 \\x22x\\x22\\x5C\\x01\\xE9"',
        '::1 - - [01/May/2024:23:59:59 +0000] "HEAD / HTTP/2" 304 0 "-" "-"',
        '10.0.0.1 - - [01/May/2024:23:59:59 +0000] "-" 431 10 "-" "-"',
    ]
    (event,) = read_lines(tmp_path / "s3proxy-events-2024-05-01.log")
    assert event["event"] == "started" and event["port"] == 8080


def test_unknown_log_format_is_rejected() -> None:
    """configure fails on a format it does not know."""
    with pytest.raises(ValueError, match="unknown log format"):
        slog.configure(log_dir=None, log_format="apache")


@pytest.mark.parametrize("level", ["info", "debug"])
def test_botocores_chatter_stays_out_below_warning(
    tmp_path: Path, clock: FakeClock, level: str
) -> None:
    """botocore's and aiobotocore's info and debug records are dropped at any level; their
    warnings are kept; other libraries follow the level."""
    slog.configure(level=level, log_dir=str(tmp_path))
    logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
    logging.getLogger("botocore.endpoint").debug("Sending http request")
    logging.getLogger("aiobotocore.endpoint").info("chatter")
    logging.getLogger("botocore.hooks").warning("deprecated")
    logging.getLogger("some.library").info("kept")
    slog.flush()

    assert [line["event"] for line in read_lines(log_file(tmp_path))] == ["deprecated", "kept"]


def test_request_ids_are_unique_and_differ_in_a_forked_child() -> None:
    """Generated ids do not repeat, in this process or in a forked worker."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, slog.request_id())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100)
    os.close(read)
    os.close(write)
    ours = [slog.request_id() for _ in range(1000)]
    assert len(set(ours)) == 1000 and child not in ours
    assert all(len(i) == 22 and int(i, 16) >= 0 for i in [*ours, child])


def test_served_requests_go_to_the_combined_log_and_old_files_go(
    start_proxy: Callable[..., ProxyServer], put: Put, tmp_path: Path
) -> None:
    """Through the Config's log part and a real server: --log-format combined writes nginx's
    line for each request, and --log-retention 3 deletes a five-day-old file, not a two-day-old
    one."""
    logs = tmp_path / "served-logs"
    logs.mkdir()
    day = 86400
    for age in (5, 2):
        dated = time.strftime("%Y-%m-%d", time.gmtime(time.time() - age * day))
        (logs / f"s3proxy-{dated}.log").write_text("old\n")
    proxy = start_proxy(log_dir=str(logs), log_format="combined", log_retention=3)
    configure_logging(proxy.config.logs)
    put("index.html", b"<p>hi</p>")
    assert httpx.get(f"{proxy.url}/").status_code == 200
    # The line is written after the answer went out; the server's shutdown waits for the
    # request and flushes (a flush here could come before the line).
    proxy.stop()

    today = time.strftime("%Y-%m-%d")
    ages = sorted(p.name for p in logs.iterdir() if p.name != f"s3proxy-events-{today}.log")
    two_days_ago = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 2 * day))
    assert ages == [f"s3proxy-{two_days_ago}.log", f"s3proxy-{today}.log"]
    (line,) = (logs / f"s3proxy-{today}.log").read_text().splitlines()
    clf_time = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]"
    assert re.fullmatch(rf'127\.0\.0\.1 - - {clf_time} "GET / HTTP/1\.1" 200 9 "-" "[^"]*"', line)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://s3.eu-west-1.amazonaws.com", None, id="plain"),
        pytest.param("http://minio:9000/", None, id="port"),
        pytest.param(
            "https://ak:sk@r2.example:443/x", "https://[redacted]@r2.example:443/x", id="both"
        ),
        pytest.param("https://token@r2.example", "https://[redacted]@r2.example", id="user"),
    ],
)
def test_redact_url_hides_credentials_in_a_url(url: str, expected: str | None) -> None:
    """A URL's user and password never reach a log line; the host and port stay."""
    assert slog.redact_url(url) == (expected or url)


def test_startup_line_shows_the_endpoint_from_aws_endpoint_url(
    start_proxy: Callable[..., ProxyServer],
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no --endpoint-url, the worker's startup line names the endpoint botocore took from
    AWS_ENDPOINT_URL_S3, and botocore's own info records stay out of the log."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    logs = tmp_path / "startup-logs"
    configure_logging(LogsConfig(log_dir=str(logs)))
    start_proxy(endpoint_url=None)
    slog.flush()

    lines = [line for path in sorted(logs.iterdir()) for line in read_lines(path)]
    started = [line for line in lines if line["event"] == "worker_started"]
    assert started and started[-1]["endpoint"] == s3.endpoint_url
    assert not [line for line in lines if str(line["logger"]).startswith("botocore")]
