"""The disk cache's size bound, shared by every worker through the index.

Accounting: a byte counter in the index (``diskcache.Cache.incr`` is atomic across
processes), recounted from the files at startup. Eviction: approximately least recently
used — workers note the keys they serve and write their access times to the index every
:data:`TOUCH_INTERVAL` seconds (the hit path itself never touches SQLite); when the total
passes the bound, one process at a time (an ``flock``) deletes the least recently used bodies
until the total is back under :data:`LOW_WATER` of the bound, so evictions come in batches,
not one per fill. ``scripts/eviction_sim`` compares this policy with FIFO on skewed traffic.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

#: The index key of the byte counter (object records are keyed by 64-hex-digit hashes).
TOTAL_KEY = "total-bytes"
#: Eviction stops at this fraction of the bound.
LOW_WATER = 0.95
#: Seconds between writes of access times to the index.
TOUCH_INTERVAL = 5.0


def is_record_name(name: object) -> bool:
    return isinstance(name, str) and len(name) == 64


class DiskBudget:
    """Bytes held under ``objects/`` against ``max_size`` (``None``: unbounded)."""

    def __init__(self, index: Any, objects: Path, lock_path: Path, max_size: int | None) -> None:
        self.index = index
        self.objects = objects
        self.lock_path = lock_path
        self.max_size = max_size

    def recount(self) -> int:
        """Set the counter from the files on disk (startup, before workers). Blocking."""
        total = 0
        for entry in os.scandir(self.objects):
            if not entry.name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    total += entry.stat().st_size
        self.index.set(TOTAL_KEY, total)
        return total

    def add(self, delta: int) -> None:
        if delta:
            with contextlib.suppress(Exception):
                self.index.incr(TOTAL_KEY, delta)

    def total(self) -> int:
        value: int = self.index.get(TOTAL_KEY, 0)
        return value

    def over(self) -> bool:
        return self.max_size is not None and self.total() > self.max_size

    def touch(self, names: set[str], now: float) -> None:
        """Record that ``names`` were served at ``now`` (one transaction). Blocking."""
        with self.index.transact():
            for name in names:
                record = self.index.get(name)
                if isinstance(record, dict):
                    record["atime"] = now
                    self.index.set(name, record)

    def evict(self, unlink: Any) -> list[str]:
        """Delete least recently used bodies until under the low-water mark; returns the
        names removed. Skips (returns ``[]``) while another process is evicting. Blocking:
        reads every record of the index, so it runs in a thread, in batches."""
        if self.max_size is None:
            return []
        with open(self.lock_path, "a+b") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []
            target = int(self.max_size * LOW_WATER)
            total = self.total()
            if total <= self.max_size:
                return []
            candidates = []
            for name in self.index.iterkeys():
                record = self.index.get(name)
                if is_record_name(name) and isinstance(record, dict):
                    used = record.get("atime", record.get("stored_at", 0.0))
                    candidates.append((used, name, record["meta"]["size"]))
            candidates.sort()
            removed = []
            for _, name, size in candidates:
                if total <= target:
                    break
                total -= unlink(name) or size  # before the record goes: it names the variants
                with contextlib.suppress(Exception):
                    self.index.delete(name)
                removed.append(name)
            self.index.set(TOTAL_KEY, max(total, 0))
            return removed
