"""This process's view of the cache: the entries it has looked up, the bodies it keeps in
memory (least recently used first out, within a byte budget) and the 404s it remembers.

Event loop only: nothing here blocks or is locked. Entries are immutable, so keeping or
dropping a body replaces the entry under its key; a request that holds the old one keeps
its bytes until it is done.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from s3proxy.cache.entry import Entry

#: Remembered 404s per process; beyond this the oldest are forgotten (random paths must not
#: grow memory without bound).
MAX_NEGATIVE = 10_000


class MemoryTier:
    """``entries``: every entry of an object this process knows; ``bodies``: those of them
    whose body (and variants) are held, oldest use first; ``negative``: remembered 404s."""

    def __init__(self, budget: int, object_size: int) -> None:
        self.budget = budget
        self.object_size = min(object_size, budget)
        self.entries: dict[str, Entry] = {}
        self.bodies: OrderedDict[str, Entry] = OrderedDict()
        self.negative: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0

    def install(self, entry: Entry, body: bytes | None = None) -> Entry:
        """Make ``entry`` the one for its key (forgetting a 404), with ``body`` in memory if
        it fits; returns the entry installed."""
        self.drop(entry.key)
        self.negative.pop(entry.key, None)
        self.entries[entry.key] = entry
        return self.keep_body(entry, body) if body is not None else entry

    def keep_body(self, entry: Entry, body: bytes) -> Entry:
        """Hold ``body`` in memory for ``entry`` if it is small enough and still current."""
        if len(body) > self.object_size or self.entries.get(entry.key) is not entry:
            return entry
        kept = dataclasses.replace(entry, body=body)
        self.entries[entry.key] = self.bodies[entry.key] = kept
        self.bytes += len(body)
        self._shrink()
        return kept

    def keep_variant(self, entry: Entry, coding: str, data: bytes) -> None:
        """Hold a compressed variant beside a body held here (else nothing)."""
        if entry.body is None or self.bodies.get(entry.key) is not entry:
            return
        kept = dataclasses.replace(entry, variants={**(entry.variants or {}), coding: data})
        self.entries[entry.key] = self.bodies[entry.key] = kept  # same place in the LRU order
        self.bytes += len(data)
        self._shrink()

    def replace(self, old: Entry, new: Entry) -> Entry:
        """Put ``new`` in the place of ``old`` if ``old`` is still current (a revalidation
        moved its times), keeping the body and variants held for it."""
        if self.entries.get(old.key) is not old:
            return new
        new = dataclasses.replace(new, body=old.body, variants=old.variants)
        self.entries[old.key] = new
        if old.key in self.bodies:
            self.bodies[old.key] = new
        return new

    def remember_missing(self, entry: Entry, limit: int = MAX_NEGATIVE) -> None:
        self.drop(entry.key)
        self.negative[entry.key] = entry
        self.negative.move_to_end(entry.key)
        while len(self.negative) > limit:
            self.negative.popitem(last=False)

    def drop(self, key: str) -> None:
        """Forget the object entry of ``key`` (not a remembered 404)."""
        if self.entries.pop(key, None) is not None:
            held = self.bodies.pop(key, None)
            if held is not None:
                self.bytes -= _size(held)

    def forget_all(self) -> None:
        """Drop everything (a clear, a purge or an eviction happened: in place, the hit path
        holds these containers)."""
        self.entries.clear()
        self.negative.clear()
        self.bodies.clear()
        self.bytes = 0

    def _shrink(self) -> None:
        while self.bytes > self.budget and self.bodies:
            key, old = self.bodies.popitem(last=False)
            self.bytes -= _size(old)
            if self.entries.get(key) is old:
                self.entries[key] = dataclasses.replace(old, body=None, variants=None)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self.entries),
            "negative_entries": len(self.negative),
            "memory_bytes": self.bytes,
            "memory_objects": len(self.bodies),
        }


def _size(entry: Entry) -> int:
    size = len(entry.body) if entry.body is not None else 0
    return size + sum(len(v) for v in (entry.variants or {}).values())
