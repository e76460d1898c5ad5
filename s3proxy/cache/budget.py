"""The disk cache's size bound, shared by every worker through the index.

Accounting: the index keeps the bytes of every body and variant it records, in the same
transaction as each change (:mod:`.index`). Eviction: approximately least recently used —
workers note the keys they serve and write their access times to the index every
:data:`TOUCH_INTERVAL` seconds (the hit path itself never touches SQLite). Before a body or a
variant is committed, if the total with it would pass the bound, one process at a time (an
``flock``) takes the least recently used records from the oldest end of the index's
access-time queue, :data:`BATCH` at a time, and removes their files, until the total with the
new body is under :data:`LOW_WATER` of the bound. So evictions come in batches, not one per
fill, and the bytes stored pass the bound by no more than the bodies being committed at that
moment by other workers (files still being written are not counted). ``scripts/eviction_sim``
compares this policy with FIFO on skewed traffic; ``scripts/bench-index`` times a batch.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from s3proxy.cache.files import BodyFiles
from s3proxy.cache.index import Index, Removed

#: Eviction stops at this fraction of the bound.
LOW_WATER = 0.95
#: Seconds between writes of access times to the index.
TOUCH_INTERVAL = 5.0
#: Records taken out of the index per transaction while evicting.
BATCH = 256


class DiskBudget:
    """Bytes held under ``objects/`` against ``max_size`` (``None``: unbounded)."""

    def __init__(
        self, index: Index, files: BodyFiles, lock_path: Path, max_size: int | None
    ) -> None:
        self.index = index
        self.files = files
        self.lock_path = lock_path
        self.max_size = max_size

    def total(self) -> int:
        return self.index.usage()[1]

    def needs_room(self, size: int) -> bool:
        """Whether storing ``size`` more bytes would pass the bound."""
        return self.max_size is not None and self.total() + size > self.max_size

    def evict(self, room: int) -> list[str]:
        """If the bytes stored plus ``room`` pass the bound, remove least recently used
        objects until they are under the low-water mark, ``room`` included; returns their
        keys. One process at a time: others wait, then evict only if still needed.
        Blocking."""
        if self.max_size is None:
            return []
        with open(self.lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            total = self.total()
            if total + room <= self.max_size:
                return []
            target = max(0, int(self.max_size * LOW_WATER) - room)
            removed: list[str] = []
            while total > target:
                batch = self.index.take_oldest(total - target, BATCH)
                if not batch:
                    break
                total -= sum(r.size for r in batch)
                removed += self.remove_files(batch)
            return removed

    def remove_files(self, records: list[Removed]) -> list[str]:
        """Remove the files of records taken out of the index; returns their keys."""
        for record in records:
            self.files.remove(record.name, record.etag)
        return [record.key for record in records]
