"""The shared index: what is stored, in SQLite tables that every worker reads and writes.

The tables live in diskcache's database (``index/cache.db``), the only place diskcache is
imported: diskcache creates and tunes the database (WAL, so readers never wait for a
writer) and keeps its schema version, so an index in an older format is dropped at open
(its body files become leftovers, removed at startup). The tables themselves are ours, shaped
for the questions the cache asks:

- the record of one key: ``s3proxy_objects``, by its primary key;
- every key under a prefix: a range of that primary key, ``prefix <= key < successor``;
- the least recently used records: ``s3proxy_lru``, (access time, key) in key order, read
  from its oldest end;
- the bytes stored: one row, kept by triggers in the same transaction as each change.

The access-time queue is a table of its own rather than an index of ``s3proxy_objects`` so
that a purge touches only the pages of the keys it removes: their queue entries, scattered by
access time, stay behind as orphans (a queue entry counts only while its time is the record's
``atime``), and eviction, which reads the queue from its oldest end anyway, drops them as it
passes. Measured at 200,000 records, an index on ``atime`` tripled the cost of a purge.

So no operation reads a record it does not return or change. Every method blocks (SQLite);
errors are :class:`CacheError` except in :meth:`Index.get`, where a damaged index is a miss.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import diskcache

from s3proxy.exceptions import CacheError
from s3proxy.meta import ObjectMeta

#: Bumped whenever the tables below change: an index of another version is discarded.
SCHEMA = 1
_SCHEMA_KEY = "s3proxy-index-schema"

_TABLES = """
CREATE TABLE IF NOT EXISTS s3proxy_objects (
    key TEXT PRIMARY KEY,               -- the S3 key
    name TEXT NOT NULL,                 -- its body's file name under objects/
    meta TEXT NOT NULL,                 -- ObjectMeta as JSON
    size INTEGER NOT NULL,              -- body bytes
    extra INTEGER NOT NULL DEFAULT 0,   -- bytes of compressed variants beside the body
    stored_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    atime REAL NOT NULL                 -- last use the index knows of (written in batches)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS s3proxy_lru (
    atime REAL NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (atime, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS s3proxy_usage (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO s3proxy_usage VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS s3proxy_insert AFTER INSERT ON s3proxy_objects BEGIN
    UPDATE s3proxy_usage SET entries = entries + 1, bytes = bytes + new.size + new.extra;
    INSERT OR IGNORE INTO s3proxy_lru VALUES (new.atime, new.key);
END;
CREATE TRIGGER IF NOT EXISTS s3proxy_delete AFTER DELETE ON s3proxy_objects BEGIN
    UPDATE s3proxy_usage SET entries = entries - 1, bytes = bytes - old.size - old.extra;
END;
CREATE TRIGGER IF NOT EXISTS s3proxy_resize AFTER UPDATE OF size, extra ON s3proxy_objects
BEGIN
    UPDATE s3proxy_usage SET bytes = bytes + new.size + new.extra - old.size - old.extra;
END;
CREATE TRIGGER IF NOT EXISTS s3proxy_touch AFTER UPDATE OF atime ON s3proxy_objects
WHEN new.atime != old.atime BEGIN
    DELETE FROM s3proxy_lru WHERE atime = old.atime AND key = old.key;
    INSERT OR IGNORE INTO s3proxy_lru VALUES (new.atime, new.key);
END;
"""
_DROP = """
DROP TABLE IF EXISTS s3proxy_objects;
DROP TABLE IF EXISTS s3proxy_lru;
DROP TABLE IF EXISTS s3proxy_usage;
"""
_SELECT = "SELECT key, name, meta, size + extra FROM s3proxy_objects"
#: The queries whose plans tests and scripts/bench-index check: each searches an index,
#: none scans a table.
UNDER_PREFIX = _SELECT + " WHERE key >= ? AND key < ?"
OLDEST = (
    "SELECT q.atime, q.key, o.atime, o.name, o.meta, o.size + o.extra FROM s3proxy_lru AS q"
    " LEFT JOIN s3proxy_objects AS o ON o.key = q.key ORDER BY q.atime, q.key LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class Record:
    """What the index knows of one stored object."""

    key: str
    meta: ObjectMeta
    stored_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Removed:
    """A record taken out of the index; its files (``name``, variants of ``etag``) are the
    caller's to remove. ``size`` counts the body and its variants."""

    key: str
    name: str
    etag: str | None
    size: int


def successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (``None``: no
    bound). SQLite compares text as UTF-8 bytes, which orders like code points, so bumping
    the last code point that can be bumped gives the bound (surrogates cannot be stored)."""
    chars = list(prefix)
    while chars:
        point = ord(chars.pop()) + 1
        if 0xD800 <= point <= 0xDFFF:
            point = 0xE000
        if point <= 0x10FFFF:
            return "".join(chars) + chr(point)
    return None


class Index:
    """The index under ``directory``. :meth:`open` before use; each thread gets its own
    connection (sqlite3 connections are not shared between threads or processes)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._path = ""

    def open(self) -> None:
        """Create the database and tables; drop an index of an older format. Raises
        :class:`CacheError`."""
        try:
            with diskcache.Cache(str(self.directory), eviction_policy="none") as settings:
                self._path = str(Path(settings.directory) / diskcache.core.DBNAME)
                if settings.get(_SCHEMA_KEY) != SCHEMA:
                    self._db().executescript(_DROP)
                    settings.clear()  # records of the old format lived in diskcache's own table
                    settings.set(_SCHEMA_KEY, SCHEMA)
            self._db().executescript(_TABLES)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise CacheError(f"cannot open the cache index: {exc}") from None

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None or self._local.pid != os.getpid():
            # check_same_thread=False: close() runs in another thread; each connection is
            # still only used by the thread that made it.
            db = sqlite3.connect(
                self._path, timeout=60, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA synchronous = NORMAL")  # per connection; WAL is per database
            self._local.db, self._local.pid = db, os.getpid()
            with self._lock:
                self._connections.append(db)
        return db

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Make the writes inside one transaction (building an index in bulk)."""
        with self._write():
            yield

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: writers queue up front, never
        deadlock on an upgrade), or a part of the one :meth:`batch` has begun. Raises
        :class:`CacheError`."""
        try:
            db = self._db()
            begin = not db.in_transaction
            if begin:
                db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CacheError(f"cache index: {exc}") from None
        try:
            yield db
            if begin:
                db.execute("COMMIT")
        except BaseException as exc:
            if begin:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise CacheError(f"cache index: {exc}") from None
            raise

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> Record | None:
        """The record of ``key``; ``None`` if there is none or the index cannot be read (a
        damaged index is a miss, never a failed request)."""
        try:
            row = (
                self._db()
                .execute(
                    "SELECT meta, stored_at, expires_at FROM s3proxy_objects WHERE key = ?",
                    (key,),
                )
                .fetchone()
            )
            if row is None:
                return None
            return Record(key, ObjectMeta.from_dict(json.loads(row[0])), row[1], row[2])
        except (sqlite3.Error, ValueError, TypeError):
            return None

    def usage(self) -> tuple[int, int]:
        """(records, bytes of bodies and variants) the index holds."""
        try:
            row = self._db().execute("SELECT entries, bytes FROM s3proxy_usage").fetchone()
        except sqlite3.Error as exc:
            raise CacheError(f"cache index: {exc}") from None
        return (row[0], row[1]) if row is not None else (0, 0)

    def names(self) -> set[str]:
        """The body file names of every record (startup: a full scan)."""
        try:
            rows = self._db().execute("SELECT name FROM s3proxy_objects").fetchall()
        except sqlite3.Error as exc:
            raise CacheError(f"cache index: {exc}") from None
        return {name for (name,) in rows}

    def plan(self, query: str) -> list[str]:
        """SQLite's plan for ``query`` (each step's detail): tests and benchmarks check that
        the index's queries search an index rather than scan the table."""
        params = (None,) * query.count("?")
        rows = self._db().execute("EXPLAIN QUERY PLAN " + query, params).fetchall()
        return [str(row[-1]) for row in rows]

    # -- writes ------------------------------------------------------------------------------

    def put(self, name: str, record: Record, now: float) -> None:
        """Insert or replace the record of ``record.key``, used at ``now``."""
        meta = record.meta
        with self._write() as db:
            db.execute(
                "INSERT INTO s3proxy_objects VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET name = excluded.name, meta = excluded.meta, size = excluded.size,"
                " extra = 0, stored_at = excluded.stored_at, expires_at = excluded.expires_at,"
                " atime = excluded.atime",
                (
                    record.key,
                    name,
                    json.dumps(meta.to_dict()),
                    meta.size,
                    record.stored_at,
                    record.expires_at,
                    now,
                ),
            )

    def refresh(self, key: str, stored_at: float, expires_at: float) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE s3proxy_objects SET stored_at = ?, expires_at = ? WHERE key = ?",
                (stored_at, expires_at, key),
            )

    def add_variant(self, key: str, size: int) -> None:
        """Count ``size`` more bytes of variants beside the body of ``key``."""
        with self._write() as db:
            db.execute("UPDATE s3proxy_objects SET extra = extra + ? WHERE key = ?", (size, key))

    def touch(self, keys: Iterable[str], now: float) -> None:
        """Record that ``keys`` were served at ``now`` (one transaction)."""
        with self._write() as db:
            db.executemany(
                "UPDATE s3proxy_objects SET atime = ? WHERE key = ?", ((now, k) for k in keys)
            )

    def remove(self, key: str) -> Removed | None:
        with self._write() as db:
            row = db.execute(_SELECT + " WHERE key = ?", (key,)).fetchone()
            return self._delete(db, [row])[0] if row is not None else None

    def remove_prefix(self, prefix: str) -> list[Removed]:
        """Take out every record whose key starts with ``prefix``: one range of the primary
        key, nothing else read."""
        bound = successor(prefix)
        with self._write() as db:
            if bound is None:
                rows = db.execute(_SELECT).fetchall()
            else:
                rows = db.execute(UNDER_PREFIX, (prefix, bound)).fetchall()
            return self._delete(db, rows)

    def take_oldest(self, need: int, limit: int) -> list[Removed]:
        """Take out the least recently used records until they hold ``need`` bytes, reading
        at most ``limit`` entries from the oldest end of the access-time queue (orphans left
        by purges and older touches are dropped on the way)."""
        with self._write() as db:
            taken: list[tuple[str, str, str, int]] = []
            passed: list[tuple[float, str]] = []
            freed = 0
            for queued, key, atime, name, meta, size in db.execute(OLDEST, (limit,)):
                passed.append((queued, key))
                if atime == queued:  # else an orphan: the key was purged or used since
                    taken.append((key, name, meta, size))
                    freed += size
                    if freed >= need:
                        break
            db.executemany("DELETE FROM s3proxy_lru WHERE atime = ? AND key = ?", passed)
            return self._delete(db, taken)

    @staticmethod
    def _delete(db: sqlite3.Connection, rows: list[tuple[str, str, str, int]]) -> list[Removed]:
        db.executemany("DELETE FROM s3proxy_objects WHERE key = ?", ((r[0],) for r in rows))
        return [
            Removed(key, name, json.loads(meta).get("etag"), size) for key, name, meta, size in rows
        ]

    def recount(self) -> None:
        """Set the usage row from the records and drop orphans from the access-time queue
        (after a crash between a file change and its record, or purges with no eviction
        since). Full scans: startup only."""
        with self._write() as db:
            db.execute(
                "UPDATE s3proxy_usage SET (entries, bytes) = "
                "(SELECT count(*), coalesce(sum(size + extra), 0) FROM s3proxy_objects)"
            )
            db.execute(
                "DELETE FROM s3proxy_lru WHERE NOT EXISTS (SELECT 1 FROM s3proxy_objects AS o"
                " WHERE o.key = s3proxy_lru.key AND o.atime = s3proxy_lru.atime)"
            )

    def clear(self) -> int:
        """Remove every record; returns how many there were."""
        with self._write() as db:
            (entries,) = db.execute("SELECT entries FROM s3proxy_usage").fetchone()
            db.execute("DELETE FROM s3proxy_objects")
            db.execute("DELETE FROM s3proxy_lru")
            db.execute("UPDATE s3proxy_usage SET entries = 0, bytes = 0")
        return int(entries)
