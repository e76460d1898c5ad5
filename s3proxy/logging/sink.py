"""Where log lines go: a buffer, whole-line writes, a daily ``O_APPEND`` file shared by workers.

Nothing here knows what a line says; :mod:`s3proxy.logging` renders events through structlog
and hands the finished line to :class:`Sink` (through structlog's logger factory), and
:mod:`s3proxy.logging.lines` writes the request line straight to it.

- Lines wait in memory, like nginx's ``access_log ... buffer=32k flush=1s``: they are written
  when the buffer passes 32 KiB, at each flush (``flush_periodically`` makes one every second)
  and at interpreter exit.
- The file is ``<dir>/s3proxy-YYYY-MM-DD.log`` (UTC date), opened with ``O_APPEND`` and never
  renamed, so any number of worker processes append to it safely; the date is checked at each
  flush, so a line buffered just before midnight UTC lands in the next day's file. When a
  day's file is opened, files of the same name older than the retention are deleted.
- Each ``os.write`` holds whole lines only. Appends to a local regular file are not interleaved
  with other processes' appends; on stdout (often a pipe shared by workers) a write is atomic
  only up to ``PIPE_BUF`` bytes, so stdout is written in pieces of at most ``PIPE_BUF`` bytes
  cut after a newline.

A sink that fails (disk full, stdout closed) drops that batch and says so on stderr; it never
raises into a request.
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
import time
from collections.abc import Callable, Iterator

BUFFER_BYTES = 32 * 1024
FILE_MODE = 0o640

# The time source for timestamps and the file's date. Tests replace it (monkeypatch) to
# cross midnight without sleeping; nothing else should.
clock: Callable[[], float] = time.time


class Timestamps:
    """ISO-8601 UTC with milliseconds; the strftime part is cached for the current second.

    structlog's ``TimeStamper`` cannot write milliseconds (``%f`` is microseconds) and costs
    1.2 µs (``datetime.now(UTC)``) against 0.45 µs here, on the request line's hot path. The
    cache is one tuple, replaced whole, so threads never see a torn pair.
    """

    __slots__ = ("_cached", "_last")

    def __init__(self) -> None:
        self._cached: tuple[int, str] = (-1, "")
        # The last text made, by its millisecond: under load, many lines share one.
        self._last: tuple[int, str] = (-1, "")

    def format(self, t: float) -> str:
        millis = int(t * 1000)
        last, text = self._last
        if millis == last:
            return text
        second, milli = divmod(millis, 1000)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._cached = (second, prefix)
        text = f"{prefix}.{milli:03d}Z"
        self._last = (millis, text)
        return text


timestamps = Timestamps()


def line_pieces(data: bytes, limit: int) -> Iterator[bytes]:
    """Split newline-terminated ``data`` after newlines into pieces of at most ``limit`` bytes.

    A single line longer than ``limit`` is one piece of its own.
    """
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + limit) + 1
        if end <= start:
            end = data.index(b"\n", start) + 1
        yield data[start:end]
        start = end


def _write_fully(fd: int, data: bytes) -> None:
    """os.write until all is written; one call unless the kernel takes less (disk full)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def report(problem: str, exc: BaseException) -> None:
    """Tell stderr that log lines were lost, without going through the sink that failed."""
    line = {"ts": timestamps.format(clock()), "level": "error", "event": problem, "exc": repr(exc)}
    try:
        os.write(2, json.dumps(line, separators=(",", ":")).encode() + b"\n")
    except OSError:
        pass


class DailyFile:
    """``<dir>/<name>-YYYY-MM-DD.log`` for the UTC date at the last :meth:`fd` call.

    The file is reopened, never renamed, when the date changes, so other processes appending
    to the same name are never disturbed. ``O_APPEND`` makes every write land at the end.
    ``retention_days``: when a day's file is opened, ``<name>-<date>.log`` files dated more
    than that many days before it are deleted (0 keeps them all). Every worker may do so;
    a file another one removed first is no error.
    """

    def __init__(self, directory: str, name: str = "s3proxy", retention_days: int = 14) -> None:
        self.directory = directory
        self.name = name
        self.retention_days = retention_days
        self._dated = re.compile(rf"{re.escape(name)}-(\d{{4}}-\d\d-\d\d)\.log")
        self._day = ""
        self._fd = -1

    def path(self, day: str) -> str:
        return os.path.join(self.directory, f"{self.name}-{day}.log")

    def fd(self, now: float) -> int:
        """The descriptor for the date of ``now``; opens the new day's file when it changed."""
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self._day:
            os.makedirs(self.directory, exist_ok=True)
            flags = os.O_APPEND | os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(self.path(day), flags, FILE_MODE)
            self.close()
            self._fd, self._day = fd, day
            if self.retention_days:
                self.remove_expired(now)
        return self._fd

    def remove_expired(self, now: float) -> None:
        """Delete this name's files dated more than ``retention_days`` before ``now``'s date.

        Lists the directory (once a day); a failure is reported on stderr, never raised."""
        oldest = time.strftime("%Y-%m-%d", time.gmtime(now - self.retention_days * 86400))
        try:
            with os.scandir(self.directory) as entries:
                expired = [
                    entry.path
                    for entry in entries
                    if (dated := self._dated.fullmatch(entry.name)) and dated[1] < oldest
                ]
            for path in expired:
                try:
                    os.unlink(path)
                except FileNotFoundError:  # another worker was first
                    pass
        except OSError as exc:
            report("log_retention_failed", exc)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._day = -1, ""


class Sink:
    """A line buffer and its destinations (a daily file, stdout, or both).

    Thread-safe: stdlib records can come from any thread. Writing happens under the lock, so
    lines leave in the order they came.
    """

    def __init__(self, file: DailyFile | None, console: bool) -> None:
        self.file = file
        self.console = console
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._size = 0

    def write(self, line: str) -> None:
        """Buffer one line (without its newline); flush if the buffer passed 32 KiB."""
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost, on every request's line
        try:
            self._lines.append(line)
            self._size += len(line) + 1
            if self._size >= BUFFER_BYTES:
                self._flush_locked()
        finally:
            lock.release()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self.file is not None:
                self.file.close()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent writes its own lines; a held lock must not carry over."""
        self._lock = threading.Lock()
        self._lines, self._size = [], 0

    def _flush_locked(self) -> None:
        if not self._lines:
            return
        data = ("\n".join(self._lines) + "\n").encode("utf-8", "backslashreplace")
        self._lines, self._size = [], 0
        if self.file is not None:
            try:
                _write_fully(self.file.fd(clock()), data)
            except OSError as exc:
                report("log_file_write_failed", exc)
        if self.console:
            try:
                for piece in line_pieces(data, select.PIPE_BUF):
                    _write_fully(1, piece)
            except OSError as exc:
                report("log_stdout_write_failed", exc)
