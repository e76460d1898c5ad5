"""The disk cache's size bound, shared by every worker through the index.

Accounting: the index keeps the bytes of every body and variant it records, in the same
transaction as each change (:mod:`.index`). Eviction: approximately least recently used —
workers note the keys they serve and write their access times to the index every
:data:`TOUCH_INTERVAL` seconds (the hit path itself never touches SQLite); when the total
passes the bound, one process at a time (an ``flock``) takes the least recently used records
from the oldest end of the index's ``atime`` index, :data:`BATCH` at a time, and removes their
files, until the total is back under :data:`LOW_WATER` of the bound, so evictions come in
batches, not one per fill. ``scripts/eviction_sim`` compares this policy with FIFO on skewed
traffic; ``scripts/bench-index`` times a batch.
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

    def over(self) -> bool:
        return self.max_size is not None and self.total() > self.max_size

    def evict(self) -> list[str]:
        """Remove least recently used objects until under the low-water mark; returns their
        keys. Skips (returns ``[]``) while another process is evicting. Blocking."""
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
