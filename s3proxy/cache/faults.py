"""Why the cache cannot store right now, by the OS's own reason, and when to try again.

- ``EFBIG`` (a file larger than the file system, or ``RLIMIT_FSIZE``, allows): objects at
  least as large as the one that failed pass through from S3; every other object is still
  cached.
- ``ENOSPC``, ``EDQUOT`` (no room): no write is tried until the file system reports room for
  the object (``statvfs``: one system call per miss, no disk I/O), so caching resumes on the
  first miss after space is freed.
- ``ENOENT`` (the cache directory was removed): no write is tried until it is back; the first
  miss after it is recreated stores again.
- anything else (``EIO``, ``EROFS``, ``EACCES``...): back off, :data:`FIRST_BACKOFF` seconds
  doubling up to :data:`MAX_BACKOFF`, after which the next miss tries.

A body stored whole clears the back-off. The size limit learned from ``EFBIG`` stays until the
process ends (a file system's largest file does not grow). Event loop and worker threads both
report here: each method is a few assignments, safe under the GIL.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from s3proxy.cache.files import BodyFiles

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


class DiskFaults:
    """The state of the disk as the last failures left it."""

    def __init__(self, files: BodyFiles, clock: Callable[[], float] = time.monotonic) -> None:
        self.files = files
        self.clock = clock
        #: Objects at least this large are not tried (``None``: no limit seen).
        self.too_large: int | None = None
        self._cause: int | None = None  # errno of the failure that stops writes, if any
        self._backoff = 0.0
        self._retry_at = 0.0

    def refusal(self, size: int) -> str | None:
        """Why a body of ``size`` bytes should not be tried now; ``None``: try it."""
        if self.too_large is not None and size >= self.too_large:
            return f"objects of {self.too_large} bytes or more are too large for the file system"
        cause = self._cause
        if cause is None:
            return None
        if cause in _NO_ROOM:
            room = self.files.free_bytes()
            if room is not None and room >= size:
                return None
            return "no space left on the cache's file system"
        if cause == errno.ENOENT:
            if self.files.present():
                return None
            return "the cache directory is gone"
        if self.clock() >= self._retry_at:
            return None
        return f"the cache's disk failed ({errno.errorcode.get(cause, cause)}); backing off"

    def failed(self, exc: OSError, size: int) -> None:
        """A create, write or rename failed with ``exc`` after ``size`` bytes of the body."""
        code = exc.errno
        if code == errno.EFBIG:
            self.too_large = size if self.too_large is None else min(self.too_large, size)
            return
        if code in _NO_ROOM or code == errno.ENOENT:
            self._cause = code
            return
        self._cause = code if code is not None else errno.EIO
        self._backoff = min(MAX_BACKOFF, self._backoff * 2 or FIRST_BACKOFF)
        self._retry_at = self.clock() + self._backoff

    def stored(self) -> None:
        """A body was stored whole: the disk works again."""
        self._cause, self._backoff = None, 0.0
