"""The generation counter every worker shares: 8 bytes in ``--cache-dir/generation``, mapped
into each process. A clear, a purge or an eviction bumps it; every worker compares it with
the value it last saw on each lookup (one 8-byte read of shared memory through
:attr:`Generation.view`: a subscript, no call, no system call) and drops what it holds in
memory when it moved."""

from __future__ import annotations

import fcntl
import mmap
import os
from pathlib import Path

from s3proxy.exceptions import CacheError

_SIZE = 8  # one native unsigned 64-bit integer: every process that maps it runs here


class Generation:
    """Create, then :meth:`open`. ``view[0]`` is the current generation (0 before
    :meth:`open`): the hit path's check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._map: mmap.mmap | None = None
        self.view = memoryview(bytearray(_SIZE)).cast("Q")

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
            self.view = memoryview(bytearray(_SIZE)).cast("Q")
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self) -> int:
        """The current generation (0 before :meth:`open`)."""
        value: int = self.view[0]
        return value

    def bump(self) -> int:
        """Move to the next generation (an ``flock`` makes concurrent bumps count); returns
        it."""
        assert self._map is not None, "open() first"
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            value = self.read() + 1
            self.view[0] = value
            self._map.flush()
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return value
