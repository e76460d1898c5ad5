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
import hashlib
import json
import os
from typing import Any


def target_path(cache_dir: str, *identity: str) -> str:
    """The path prefix of one target's state files (a hash of what identifies it)."""
    name = hashlib.sha256("\0".join(identity).encode()).hexdigest()[:24]
    return os.path.join(cache_dir, "publish", name)


class JsonFile:
    """A dict kept in one JSON file, saved atomically. Blocking (small writes)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="utf-8") as f:
                loaded = json.load(f)
            if isinstance(loaded, dict):
                self.data = loaded

    def save(self) -> None:
        """Write the dict out atomically; OSError if the directory cannot be written."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(self.data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path)
