"""Hashed flat files, the shared index, and the in-memory tier.

Layout of ``--cache-dir``::

    objects/<sha256>            complete, verified bodies (renamed into place, never rewritten)
    objects/<sha256>.<pid>.tmp  a fill in progress; never served from its name, removed at startup
    index/                      diskcache: sha256 -> {key, meta, stored_at, expires_at}
    generation                  8 bytes, bumped by every clear; workers map it into memory

Who blocks: :meth:`Cache.get` is the hit path. Its common case is a dict lookup and an 8-byte
read of the mapped generation (~0.2 µs); the first lookup of a key in a process reads the index
(SQLite, ~20 µs). Writes to the index happen in :meth:`Cache.commit`, which callers run in a
thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache

from s3proxy.cache.budget import DiskBudget, is_record_name
from s3proxy.cache.entry import Entry
from s3proxy.exceptions import CacheError
from s3proxy.meta import ObjectMeta

_GEN = struct.Struct("<Q")
#: Remembered 404s per process; beyond this the oldest are forgotten (random paths must not
#: grow memory without bound).
MAX_NEGATIVE = 10_000


def object_hash(bucket: str, key: str) -> str:
    """The stable file name of an object: SHA-256 of bucket and key (never derived from the URL
    any other way, so a path can never choose a file name)."""
    return hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()


class Writer:
    """A body being written to ``objects/<hash>.<pid>.tmp``. Not visible under its final name
    until :meth:`Cache.commit` renames it, after checking its length."""

    def __init__(self, directory: Path, name: str) -> None:
        self.final_path = str(directory / name)
        self.tmp_path = f"{self.final_path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        self.fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (blocking; called from a thread for large chunks). Raises
        :class:`CacheError` if the disk refuses it (full, over quota); part of the chunk may
        then be in the file, beyond ``size``."""
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError as exc:
            raise CacheError(f"cannot write a cache file: {exc.strerror}") from None
        self.size += len(chunk)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        """Drop the partial file; never raises."""
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(self.tmp_path)


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
        self.objects = self.root / "objects"
        self.bucket = bucket
        self.memory_budget = memory_budget
        self.memory_object_size = min(memory_object_size, memory_budget)
        self._entries: dict[str, Entry] = {}
        self._negative: OrderedDict[str, Entry] = OrderedDict()
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._memory_bytes = 0
        self._index: Any = None
        self._gen_file: Any = None
        self._gen_map: mmap.mmap | None = None
        self.generation = 0
        self.max_size = max_size
        self.budget: DiskBudget | None = None
        #: Keys served since access times were last written (only with a size bound).
        self._touched: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self._index = diskcache.Cache(str(self.root / "index"), eviction_policy="none")
            gen_path = self.root / "generation"
            fd = os.open(gen_path, os.O_RDWR | os.O_CREAT, 0o600)
            self._gen_file = os.fdopen(fd, "r+b")
            if os.fstat(fd).st_size < _GEN.size:
                os.ftruncate(fd, _GEN.size)
            self._gen_map = mmap.mmap(fd, _GEN.size)
            self.budget = DiskBudget(
                self._index, self.objects, self.root / "evict.lock", self.max_size
            )
        except OSError as exc:
            raise CacheError(f"cannot open cache dir {self.root}: {exc.strerror}") from None
        self.generation = self._read_generation()

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        if self._gen_map is not None:
            self._gen_map.close()
        if self._gen_file is not None:
            self._gen_file.close()

    def remove_leftovers(self) -> int:
        """Delete temporary files left by a crash (kill -9, full disk) and bodies the index does
        not know. Run once before workers start; returns how many files were removed."""
        self.objects.mkdir(parents=True, exist_ok=True)
        removed = 0
        for path in self.objects.iterdir():
            name = path.name
            if name.endswith(".tmp") or self._index_get(name.split(".", 1)[0]) is None:
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed += 1
        return removed

    # -- lookups (hit path) ------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry for ``key`` (fresh or not), or ``None`` if nothing is cached."""
        if self._gen_map is not None and _GEN.unpack_from(self._gen_map)[0] != self.generation:
            self._forget_all()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.body is not None:
                self._memory.move_to_end(key)
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
        name = object_hash(self.bucket, key)
        record = self._index_get(name)
        if record is None or record.get("key") != key:
            return None
        meta = ObjectMeta.from_dict(record["meta"])
        path = str(self.objects / name)
        try:
            if os.stat(path).st_size != meta.size:
                return None
        except OSError:
            return None
        entry = Entry(key, meta, record["stored_at"], record["expires_at"], path)
        self._entries[key] = entry
        return entry

    def _index_get(self, name: str) -> dict[str, Any] | None:
        try:
            value: dict[str, Any] | None = self._index.get(name)
            return value
        except Exception:  # a damaged index is a cache miss, never a failed request
            return None

    def variant(self, entry: Entry, coding: str, make: Callable[[bytes], bytes]) -> bytes:
        """The ``coding`` variant of ``entry``'s body: from memory, else from its file beside
        the body, else made by ``make(body)`` and stored there atomically. Blocking (disk,
        CPU): run in a thread; it touches no shared state (see :meth:`keep_variant`). The
        file name carries a hash of the ETag, so a variant of an older version of the object
        can never be served for a newer one."""
        if entry.variants is not None and coding in entry.variants:
            return entry.variants[coding]
        assert entry.meta is not None
        path = self._variant_path(entry, coding)
        data: bytes | None = None
        if path is not None:
            with contextlib.suppress(OSError):
                with open(path, "rb") as f:
                    data = f.read()
        if data is None:
            data = make(self._body(entry))
            if path is not None:
                self._keep_variant_file(path, data)
        return data

    def _keep_variant_file(self, path: str, data: bytes) -> None:
        """Store a variant beside its body, atomically; if the disk refuses (full), keep
        nothing, not even the temporary file: the variant is made again next time."""
        try:
            writer = Writer(self.objects, os.path.basename(path))
        except OSError:
            return
        try:
            writer.write(data)
            writer.close()
            os.replace(writer.tmp_path, writer.final_path)
        except (OSError, CacheError):
            writer.abort()
            return
        self._budget().add(len(data))

    def keep_variant(self, entry: Entry, coding: str, data: bytes) -> None:
        """Keep a variant in memory beside a body held there (event loop only: it moves the
        memory tier's accounting, and evicts to stay within its budget)."""
        if entry.body is None or self._memory.get(entry.key) is not entry:
            return
        entry.variants = {**(entry.variants or {}), coding: data}
        self._memory_bytes += len(data)
        self._evict_memory()

    def _variant_path(self, entry: Entry, coding: str) -> str | None:
        if entry.path is None or entry.meta is None or not entry.meta.etag:
            return None
        return f"{entry.path}.{variant_tag(entry.meta.etag)}.{coding}"

    def _body(self, entry: Entry) -> bytes:
        """The whole body, from memory or its file (checked against its recorded size)."""
        if entry.body is not None:
            return entry.body
        assert entry.path is not None and entry.meta is not None
        with open(entry.path, "rb") as f:
            body = f.read()
        if len(body) != entry.meta.size:
            raise CacheError(f"cached body of {entry.key!r} has the wrong size")
        return body

    def read_small(self, entry: Entry) -> bytes:
        """Bytes of an object small enough for the memory tier, loading it there if needed.
        Blocking: a page-cache read of at most ``memory_object_size`` bytes."""
        if entry.body is not None:
            return entry.body
        body = self._body(entry)
        self._remember_body(entry, body)
        return body

    # -- writes (miss path) ------------------------------------------------------------------

    def begin_write(self, key: str) -> Writer:
        try:
            return Writer(self.objects, object_hash(self.bucket, key))
        except OSError as exc:
            raise CacheError(f"cannot create a cache file: {exc.strerror}") from None

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
        entry = Entry(key, meta, stored_at, expires_at, writer.final_path)
        if writer.size != meta.size:
            writer.abort()
            raise CacheError(f"wrote {writer.size} bytes of {meta.size} for {key!r}")
        if self._read_generation() != generation:
            writer.abort()
            entry.path = None
            entry.body = body
            return entry
        try:
            freed = self._unlink_body(os.path.basename(writer.final_path))
            os.replace(writer.tmp_path, writer.final_path)
            self._index[object_hash(self.bucket, key)] = self._record(entry)
            self._budget().add(meta.size - freed)
        except Exception as exc:
            writer.abort()
            reason = exc.strerror if isinstance(exc, OSError) else exc  # strerror: no paths
            raise CacheError(f"cannot store {key!r}: {reason}") from None
        self._install(entry, body)
        return entry

    def refresh(self, entry: Entry, stored_at: float, expires_at: float) -> Entry:
        """S3 said the stored copy is still current: extend its life (index write: blocking)."""
        entry.stored_at, entry.expires_at = stored_at, expires_at
        if entry.path is not None and entry.meta is not None:
            with contextlib.suppress(Exception):
                self._index[object_hash(self.bucket, entry.key)] = self._record(entry)
        return entry

    def put_missing(self, key: str, stored_at: float, expires_at: float) -> Entry:
        """Remember that ``key`` does not exist, until ``expires_at``."""
        self._drop_entry(key)
        entry = Entry(key, None, stored_at, expires_at)
        self._negative[key] = entry
        self._negative.move_to_end(key)
        while len(self._negative) > MAX_NEGATIVE:
            self._negative.popitem(last=False)
        return entry

    def discard(self, key: str) -> None:
        """Forget ``key`` in this process and in the index (its body file is gone or bad)."""
        self._drop_entry(key)
        self._negative.pop(key, None)
        name = object_hash(self.bucket, key)
        self._budget().add(-self._unlink_body(name))
        with contextlib.suppress(Exception):
            self._index.delete(name)

    def clear(self) -> dict[str, int]:
        """Drop every entry, in every worker: bump the shared generation (others notice on their
        next lookup), then delete the index and the files. Blocking."""
        self._bump_generation()
        summary = {"entries": 0, "bytes": 0, "files": 0}
        for path in self.objects.iterdir():
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                summary["files"] += 1
                summary["bytes"] += size
        summary["entries"] = sum(1 for name in self._index.iterkeys() if is_record_name(name))
        self._index.clear()
        self._forget_all()
        return summary

    # -- internals ---------------------------------------------------------------------------

    def _unlink_body(self, name: str) -> int:
        """Remove a body file and the compressed variants of the version the index records
        for it; returns the bytes freed. O(1): named paths, no directory scan."""
        record = self._index_get(name)
        etag = record.get("meta", {}).get("etag") if isinstance(record, dict) else None
        paths = [self.objects / name]
        if etag:
            tag = variant_tag(etag)
            paths += [self.objects / f"{name}.{tag}.{coding}" for coding in VARIANT_CODINGS]
        freed = 0
        for path in paths:
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
        return freed

    def _budget(self) -> DiskBudget:
        assert self.budget is not None, "open() first"
        return self.budget

    def over_budget(self) -> bool:
        return self.max_size is not None and self._budget().over()

    def evict(self) -> list[str]:
        """Bring the disk cache back under ``max_size`` (blocking; see :mod:`.budget`)."""

        def unlink(name: str) -> int:
            return self._unlink_body(name)

        self.flush_access_times()  # our own recent hits count before choosing victims
        removed = self._budget().evict(unlink)
        if removed:
            self._bump_generation()  # other workers must not keep pointing at them
            self._forget_all()
        return removed

    def flush_access_times(self) -> None:
        """Write the access times of keys served lately to the index (blocking)."""
        touched, self._touched = self._touched, set()
        if touched:
            names = {object_hash(self.bucket, key) for key in touched}
            self._budget().touch(names, time.time())

    def recount(self) -> int:
        return self._budget().recount()

    def _bump_generation(self) -> None:
        """Tell every worker to drop what it holds in memory (they check on each lookup)."""
        assert self._gen_file is not None and self._gen_map is not None
        fcntl.flock(self._gen_file.fileno(), fcntl.LOCK_EX)
        try:
            _GEN.pack_into(self._gen_map, 0, self._read_generation() + 1)
            self._gen_map.flush()
        finally:
            fcntl.flock(self._gen_file.fileno(), fcntl.LOCK_UN)

    def _read_generation(self) -> int:
        if self._gen_map is None:
            return 0
        value: int = _GEN.unpack_from(self._gen_map)[0]
        return value

    def _forget_all(self) -> None:
        self._entries.clear()
        self._negative.clear()
        self._memory.clear()
        self._memory_bytes = 0
        self.generation = self._read_generation()

    def _install(self, entry: Entry, body: bytes | None) -> None:
        self._drop_entry(entry.key)
        self._negative.pop(entry.key, None)
        self._entries[entry.key] = entry
        if body is not None:
            self._remember_body(entry, body)

    def _remember_body(self, entry: Entry, body: bytes) -> None:
        if len(body) > self.memory_object_size:
            return
        entry.body = body
        self._memory[entry.key] = entry
        self._memory_bytes += len(body)
        self._evict_memory()

    def _evict_memory(self) -> None:
        while self._memory_bytes > self.memory_budget and self._memory:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= _memory_size(old)
            old.body = old.variants = None

    def _drop_entry(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None and self._memory.pop(key, None) is not None:
            self._memory_bytes -= _memory_size(old)
            old.body = old.variants = None

    @staticmethod
    def _record(entry: Entry) -> dict[str, Any]:
        assert entry.meta is not None
        return {
            "key": entry.key,
            "meta": entry.meta.to_dict(),
            "stored_at": entry.stored_at,
            "expires_at": entry.expires_at,
        }

    def stats(self) -> dict[str, int]:
        """Counts for this process and for the shared disk cache (blocking: scans the files)."""
        disk_files = disk_bytes = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.objects):
                if not entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        disk_bytes += entry.stat().st_size
                        disk_files += 1
        return {
            "entries": len(self._entries),
            "negative_entries": len(self._negative),
            "memory_bytes": self._memory_bytes,
            "memory_objects": len(self._memory),
            "disk_entries": disk_files,
            "disk_bytes": disk_bytes,
        }

    def probe(self) -> None:
        """Raise :class:`CacheError` unless a file can be created in the cache (blocking)."""
        try:
            Writer(self.objects, ".probe").abort()
        except OSError as exc:
            raise CacheError(f"cannot write to {self.objects}: {exc.strerror}") from None

    def purge(self, key: str | None = None, prefix: str | None = None) -> list[str]:
        """Drop one key, or every key under ``prefix``, in every worker; returns the keys
        dropped (remembered 404s included). Blocking: scans the index for a prefix."""
        dropped: set[str] = set()
        for name in list(self._index.iterkeys()):
            record = self._index_get(name) if is_record_name(name) else None
            if record is None:
                continue
            stored = record.get("key", "")
            if stored == key or (prefix is not None and stored.startswith(prefix)):
                self._budget().add(-self._unlink_body(name))
                with contextlib.suppress(Exception):
                    self._index.delete(name)
                dropped.add(stored)
        for stored in list(self._negative):
            if stored == key or (prefix is not None and stored.startswith(prefix)):
                dropped.add(stored)
        self._bump_generation()
        self._forget_all()
        return sorted(dropped)


#: Codings whose variants may sit beside a body (see :mod:`s3proxy.encoding`).
VARIANT_CODINGS = ("br", "gzip")


def variant_tag(etag: str) -> str:
    """The part of a variant's file name that ties it to one version of the object."""
    return hashlib.sha256(etag.encode()).hexdigest()[:16]


def _memory_size(entry: Entry) -> int:
    size = len(entry.body) if entry.body is not None else 0
    return size + sum(len(v) for v in (entry.variants or {}).values())
