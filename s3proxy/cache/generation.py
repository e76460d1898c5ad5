"""The generation counters every worker shares: two native 64-bit integers in
``--cache-dir/generation``, mapped into each process.

- ``view[0]`` moves on every change that other workers' memory tiers must notice: a clear, a
  purge, an eviction. Every worker compares it with the value it last saw on each lookup (a
  subscript of shared memory: no call, no system call) and drops what it holds in memory when
  it moved.
- ``view[1]`` moves only when stored versions are thrown away (a clear, a purge): a fill that
  began before such a change is not stored, since its body may be the old version. An
  eviction removes copies, not versions, so the fills that made room stay valid.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

from s3proxy.exceptions import CacheError

_SIZE = 16  # native unsigned integers: every process that maps the file runs on this host


def _unmapped() -> memoryview:
    return memoryview(bytearray(_SIZE)).cast("Q")


class Generation:
    """Create, then :meth:`open`. Before :meth:`open` (and after :meth:`close`) both
    counters read 0."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._map: mmap.mmap | None = None
        self.view = _unmapped()

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            if os.fstat(self._fd).st_size < _SIZE:
                os.ftruncate(self._fd, _SIZE)
            self._map = mmap.mmap(self._fd, _SIZE)
        except OSError as exc:
            raise CacheError(f"cannot open {self.path}: {exc.strerror}") from None
        self.view = memoryview(self._map).cast("Q")

    def close(self) -> None:
        if self._map is not None:
            self.view.release()  # the map cannot close while a view of it exists
            self.view = _unmapped()
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self) -> int:
        """The counter of every change."""
        value: int = self.view[0]
        return value

    def versions(self) -> int:
        """The counter of changes that throw stored versions away."""
        value: int = self.view[1]
        return value

    def bump(self, *, versions: bool) -> None:
        """Tell every worker to drop its memory tier; with ``versions``, also tell fills in
        flight not to store what they fetched. An ``flock`` makes concurrent bumps count."""
        assert self._map is not None, "open() first"
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            self.view[0] += 1
            if versions:
                self.view[1] += 1
            self._map.flush()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
