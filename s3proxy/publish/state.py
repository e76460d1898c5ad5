"""What a publish remembers between runs, in small JSON files under the cache dir
(``<cache dir>/publish/<target>.*.json``, one target per tree, endpoint, bucket and prefix):

- ``uploads``: the multipart uploads this publisher started and has not completed, by key:
  upload id, the file's MD5 and the part size. A rerun that finds the same file continues the
  upload from the parts S3 lists (ListParts) instead of sending them again.
- ``digests``: each file's MD5 by its identity (see :mod:`s3proxy.publish.tree`), so an
  unchanged tree is not read again.

Each save writes a temporary file and renames it over the old one, so a publish killed at
any moment leaves either the old state or the new one, never half of one. A state file that
cannot be read is treated as empty: the worst it costs is sending parts again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from typing import Any


def target_path(cache_dir: str, *identity: str) -> str:
    """The path prefix of one target's state files (a hash of what identifies it)."""
    name = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:24]
    return os.path.join(cache_dir, "publish", name)


class JsonFile:
    """A dict kept in one JSON file, saved atomically.

    :meth:`saver` takes a snapshot in the caller's thread (the event loop, which owns the
    dict) and returns the blocking write, for a worker thread; writes are serialised, and of
    two snapshots written in any order the newer one stays."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._taken = self._written = 0
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            if isinstance(loaded, dict):
                self.data = loaded

    def saver(self) -> Callable[[], None]:
        """The dict as it is now, as a call that writes it (OSError if it cannot)."""
        self._taken += 1
        text = json.dumps(self.data, separators=(",", ":"))
        return functools.partial(self._write, self._taken, text)

    def save(self) -> None:
        """Write the dict out now (blocking)."""
        self.saver()()

    def _write(self, version: int, text: str) -> None:
        with self._lock:
            if version <= self._written:
                return  # a newer snapshot is on disk already
            directory = os.path.dirname(self.path)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # A name of its own: another publish of the same target may be saving too.
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=".saving-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
            self._written = version
