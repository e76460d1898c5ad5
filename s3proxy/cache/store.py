"""The cache of one bucket, as the rest of s3proxy sees it: a small facade over the parts
that each do one job.

Layout of ``--cache-dir``::

    objects/     bodies and variants as flat files          (:mod:`.files`)
    index/       the shared index, SQLite                   (:mod:`.index`)
    generation   two counters, bumped by clears, purges and evictions (:mod:`.generation`)
    evict.lock   one evicting process at a time             (:mod:`.budget`)

and in each process the memory tier (:mod:`.memory`).

Who blocks: :meth:`Cache.get` is the hit path. Its common case is a dict lookup and an 8-byte
read of the mapped generation (well under a microsecond); the first lookup of a key in a
process reads the index (SQLite, ~20 µs). :meth:`Cache.keep_variant` and
:meth:`Cache.put_missing` touch only memory; everything else blocks on the disk and is run in
a thread, except where a docstring says otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from s3proxy.cache import memory
from s3proxy.cache.budget import DiskBudget
from s3proxy.cache.entry import Entry
from s3proxy.cache.faults import DiskFaults
from s3proxy.cache.files import BodyFiles, Writer, object_hash
from s3proxy.cache.generation import Generation
from s3proxy.cache.index import Index, Record, Removed
from s3proxy.cache.memory import MemoryTier
from s3proxy.exceptions import CacheError
from s3proxy.meta import ObjectMeta


class Cache:
    """Entries for one bucket. Create, then :meth:`open`; :meth:`close` when done."""

    def __init__(
        self,
        directory: str,
        bucket: str,
        *,
        memory_budget: int = 64 << 20,
        memory_object_size: int = 1 << 20,
        max_size: int | None = None,
    ) -> None:
        self.root = Path(directory)
        self.bucket = bucket
        self.files = BodyFiles(self.root / "objects")
        self.faults = DiskFaults(self.files)
        self.files.on_error = self.faults.failed
        self.index = Index(self.root / "index")
        self.memory = MemoryTier(memory_budget, memory_object_size)
        self.memory_object_size = self.memory.object_size
        self.max_size = max_size
        self.budget = DiskBudget(self.index, self.files, self.root / "evict.lock", max_size)
        self._generation = Generation(self.root / "generation")
        #: The generation (of every change) this process's memory tier belongs to.
        self._seen = 0
        #: Keys served since access times were last written (only with a size bound).
        self._touched: set[str] = set()
        # The hit path's containers, bound here to save it two attribute lookups.
        self._entries = self.memory.entries
        self._bodies = self.memory.bodies
        self._negative = self.memory.negative
        self._shared_generation = self._generation.view

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Create what is missing under the cache dir. Raises :class:`CacheError`."""
        try:
            self.files.create()
        except OSError as exc:
            raise CacheError(f"cannot open cache dir {self.root}: {exc.strerror}") from None
        self.index.open()
        self._generation.open()
        self._shared_generation = self._generation.view
        self._seen = self._generation.read()

    def close(self) -> None:
        self.index.close()
        self._generation.close()
        self._shared_generation = self._generation.view

    def remove_leftovers(self) -> int:
        """Delete temporary files left by a crash (kill -9, full disk) and files the index
        does not know (an index of an older format was dropped). Run once before workers
        start; returns how many files were removed."""
        self.files.create()
        return self.files.remove_unknown(self.index.names())

    def recount(self) -> int:
        """Recount the bytes the index holds (startup); returns them."""
        self.index.recount()
        return self.budget.total()

    @property
    def generation(self) -> int:
        """Pass this, read when a fill begins, to :meth:`commit`: if stored versions were
        thrown away meanwhile (a clear, a purge), the fill's body is not stored."""
        return self._generation.versions()

    # -- lookups (hit path) ------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` (fresh or not), or ``None`` if nothing is cached. Event loop
        only; reads the index (SQLite) on the first lookup of ``key`` in this process."""
        if self._shared_generation[0] != self._seen:
            self._forget_all()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.body is not None:
                self._bodies.move_to_end(key)
            if self.max_size is not None:
                self._touched.add(key)
            return entry
        entry = self._negative.get(key)
        if entry is not None:
            return entry
        return self._load(key)

    def _load(self, key: str) -> Entry | None:
        """Read ``key`` from the shared index (another worker, or before a restart, stored it);
        only a body file of the recorded size is trusted."""
        record = self.index.get(key)
        if record is None:
            return None
        path = self.files.path(object_hash(self.bucket, key))
        if self.files.size_of(path) != record.meta.size:
            return None
        entry = Entry(key, record.meta, record.stored_at, record.expires_at, path)
        return self.memory.install(entry)

    def variant(self, entry: Entry, coding: str, make: Callable[[bytes], bytes]) -> bytes:
        """The ``coding`` variant of ``entry``'s body: from memory, else from its file beside
        the body, else made by ``make(body)`` and stored there atomically. Blocking (disk,
        CPU): run in a thread; it touches no memory state (see :meth:`keep_variant`). The
        file name carries a hash of the ETag, so a variant of an older version of the object
        can never be served for a newer one."""
        if entry.variants is not None and coding in entry.variants:
            return entry.variants[coding]
        path = self.files.variant_path(entry, coding)
        data = self.files.read_variant(path) if path is not None else None
        if data is None:
            data = make(self._body(entry))
            if path is not None:
                self.make_room(len(data))
                if self.files.keep_variant(path, data):
                    self._count_variant(entry.key, len(data))
        return data

    def _count_variant(self, key: str, size: int) -> None:
        try:
            self.index.add_variant(key, size)
        except CacheError:
            pass  # counted at the next recount; the file is removed with its body

    def keep_variant(self, entry: Entry, coding: str, data: bytes) -> None:
        """Keep a variant in memory beside a body held there (event loop only)."""
        self.memory.keep_variant(entry, coding, data)

    def _body(self, entry: Entry) -> bytes:
        return entry.body if entry.body is not None else self.files.read(entry)

    def read_small(self, entry: Entry) -> bytes:
        """Bytes of an object small enough for the memory tier, loading it there if needed.
        Blocking: a page-cache read of at most ``memory_object_size`` bytes."""
        if entry.body is not None:
            return entry.body
        body = self.files.read(entry)
        self.memory.keep_body(entry, body)
        return body

    # -- writes (miss path) ------------------------------------------------------------------

    def begin_write(self, key: str, size: int = 0) -> Writer:
        """A temporary file for ``key``'s body of ``size`` bytes. Raises :class:`CacheError`
        if the file cannot be created, or should not be tried now: the object is larger than
        ``max_size``, or a disk fault is not over (see :mod:`.faults`). Blocking (a create,
        and while the disk is full a ``statvfs``)."""
        if self.max_size is not None and size > self.max_size:
            raise CacheError(f"not stored: {size} bytes is more than the cache's bound")
        reason = self.faults.refusal(size)
        if reason is not None:
            raise CacheError(f"not stored: {reason}")
        return self.files.begin(object_hash(self.bucket, key))

    def commit(
        self,
        writer: Writer,
        key: str,
        meta: ObjectMeta,
        stored_at: float,
        expires_at: float,
        generation: int,
        body: bytes | None = None,
    ) -> Entry:
        """Make a complete body visible: check its length, rename it into place, record it in
        the index. Blocking (rename, SQLite write). If a clear happened since the fill began
        (``generation`` changed), the body is dropped and the entry is not stored."""
        writer.close()
        if writer.size != meta.size:
            writer.abort()
            raise CacheError(f"wrote {writer.size} bytes of {meta.size} for {key!r}")
        if self._generation.versions() != generation:
            writer.abort()
            return Entry(key, meta, stored_at, expires_at, body=body)
        name = object_hash(self.bucket, key)
        try:
            old = self.index.remove(key)  # its variants are of another version
            if old is not None:
                self.files.remove(old.name, old.etag)
            self.files.install(writer)
            self.index.put(name, Record(key, meta, stored_at, expires_at), time.time())
        except (OSError, CacheError) as exc:
            writer.abort()
            reason = exc.strerror if isinstance(exc, OSError) else exc  # strerror: no paths
            raise CacheError(f"cannot store {key!r}: {reason}") from None
        self.faults.stored()
        entry = Entry(key, meta, stored_at, expires_at, writer.final_path)
        return self.memory.install(entry, body)

    def refresh(self, entry: Entry, stored_at: float, expires_at: float) -> Entry:
        """S3 said the stored copy is still current: extend its life (index write: blocking);
        returns the entry that replaces ``entry``."""
        fresh = Entry(entry.key, entry.meta, stored_at, expires_at, entry.path)
        if entry.path is not None and entry.meta is not None:
            try:
                self.index.refresh(entry.key, stored_at, expires_at)
            except CacheError:
                pass  # this process still knows; others revalidate once more
        return self.memory.replace(entry, fresh)

    def put_missing(self, key: str, stored_at: float, expires_at: float) -> Entry:
        """Remember that ``key`` does not exist, until ``expires_at``."""
        entry = Entry(key, None, stored_at, expires_at)
        self.memory.remember_missing(entry, memory.MAX_NEGATIVE)
        return entry

    def discard(self, key: str) -> None:
        """Forget ``key`` in this process and in the index (its body file is gone or bad)."""
        self.memory.drop(key)
        self._negative.pop(key, None)
        try:
            removed = self.index.remove(key)
        except CacheError:
            removed = None
        if removed is not None:
            self.files.remove(removed.name, removed.etag)

    def clear(self) -> dict[str, int]:
        """Drop every entry, in every worker: bump the shared generation (every worker, this
        one included, notices at its next lookup), then delete the index and the files.
        Blocking."""
        self._generation.bump(versions=True)
        entries = self.index.clear()
        files, size = self.files.remove_all()
        return {"entries": entries, "bytes": size, "files": files}

    def purge(self, key: str | None = None, prefix: str | None = None) -> list[str]:
        """Drop one key, or every key under ``prefix``, in every worker; returns the keys
        dropped (remembered 404s included). Blocking: one range query of the index."""
        if prefix is not None:
            removed = self.index.remove_prefix(prefix)
        else:
            one = self.index.remove(key) if key is not None else None
            removed = [one] if one is not None else []
        dropped = set(self.budget.remove_files(removed))
        dropped.update(k for k in list(self._negative) if k == key or _under(k, prefix))
        self._generation.bump(versions=True)
        return sorted(dropped)

    # -- the size bound ----------------------------------------------------------------------

    def over_budget(self, size: int = 0) -> bool:
        """Whether storing ``size`` more bytes would pass ``max_size`` (one index read)."""
        return self.budget.needs_room(size)

    def make_room(self, size: int) -> list[str]:
        """Before storing ``size`` bytes: if they would pass ``max_size``, evict least
        recently used objects down to the low-water mark (waiting for another process that
        is evicting, then evicting only if still needed); returns the keys removed. Blocking:
        run it in a thread."""
        if not self.budget.needs_room(size):
            return []
        self.flush_access_times()  # our own recent hits count before choosing victims
        removed = self.budget.evict(size)
        if removed:
            # Every worker, this one included, drops its memory tier at its next lookup:
            # none may keep pointing at the files removed.
            self._generation.bump(versions=False)
        return removed

    def flush_access_times(self) -> None:
        """Write the access times of keys served lately to the index (blocking)."""
        touched, self._touched = self._touched, set()
        if touched:
            self.index.touch(touched, time.time())

    # -- internals ---------------------------------------------------------------------------

    def _forget_all(self) -> None:
        self.memory.forget_all()
        self._seen = self._generation.read()

    def stats(self) -> dict[str, int]:
        """Counts for this process and for the shared disk cache (blocking: scans the files)."""
        disk_files, disk_bytes = self.files.usage()
        return {**self.memory.stats(), "disk_entries": disk_files, "disk_bytes": disk_bytes}

    def probe(self) -> None:
        """Raise :class:`CacheError` unless a file can be created in the cache (blocking)."""
        self.files.probe()


def _under(key: str, prefix: str | None) -> bool:
    return prefix is not None and key.startswith(prefix)


__all__ = ["Cache", "Entry", "Removed", "Writer", "object_hash"]
