"""Progress of the uploads: files, bytes, rate and ETA, redrawn in place on a terminal, a
plain line every :data:`PLAIN_EVERY` seconds otherwise (CI logs, pipes). Written to stderr,
so the plan and the summary on stdout stay clean for scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import TextIO

#: Seconds between redraws on a terminal, and between plain lines elsewhere.
TTY_EVERY, PLAIN_EVERY = 0.25, 10.0


def megabytes(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


class Progress:
    """Counts finished files; bytes come from ``sent()`` (request bodies sent so far)."""

    def __init__(
        self,
        files: int,
        total: int,
        sent: Callable[[], int],
        stream: TextIO | None = None,
    ) -> None:
        self.files, self.total, self._sent = files, total, sent
        self.finished = 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._started = time.monotonic()

    def done(self) -> None:
        self.finished += 1

    def line(self, now: float) -> str:
        """``12/40 files, 3.1/80.0 MB, 2.5 MB/s, ETA 31s``."""
        sent = min(self._sent(), self.total)
        elapsed = max(now - self._started, 1e-9)
        rate = sent / elapsed
        eta = f"{(self.total - sent) / rate:,.0f}s" if rate > 0 else "?"
        return (
            f"{self.finished}/{self.files} files, {megabytes(sent)[:-3]}/{megabytes(self.total)}, "
            f"{rate / 1e6:,.1f} MB/s, ETA {eta}"
        )

    @contextlib.asynccontextmanager
    async def ticking(self) -> AsyncIterator[None]:
        """Show the line until the block ends (then clear a terminal's line)."""
        task = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            task.cancel()
            # wait(), not a suppressed await: a cancellation of this task (Ctrl-C) must go on
            # up, not be taken for the ticker's own.
            await asyncio.wait([task])
            if self._tty:
                self._stream.write("\r\x1b[K")
                self._stream.flush()

    async def _tick(self) -> None:
        every = TTY_EVERY if self._tty else PLAIN_EVERY
        while True:
            await asyncio.sleep(every)
            line = self.line(time.monotonic())
            self._stream.write(f"\r\x1b[K{line}" if self._tty else f"{line}\n")
            self._stream.flush()
