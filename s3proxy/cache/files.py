"""Bodies and their compressed variants as flat files under ``objects/``.

Layout::

    objects/<sha256>                      complete, verified bodies (renamed into place)
    objects/<sha256>.<tag>.<coding>       a compressed variant of one version of the body
    objects/<name>.<pid>.<rand>.tmp       a write in progress; never served from its name

The only module that creates, writes or removes cache files (tests inject disk faults by
replacing its ``os``). Every function here blocks on the file system; none touches the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from s3proxy.cache.entry import Entry
from s3proxy.exceptions import CacheError

#: Codings whose variants may sit beside a body (see :mod:`s3proxy.encoding`).
VARIANT_CODINGS = ("br", "gzip")

#: Told of every failed create, write or rename of a body, with the length the file would
#: have had (see :mod:`.faults`).
OnError = Callable[[OSError, int], None]


def _ignore(exc: OSError, size: int) -> None:
    pass


def object_hash(bucket: str, key: str) -> str:
    """The stable file name of an object: SHA-256 of bucket and key (never derived from the URL
    any other way, so a path can never choose a file name)."""
    return hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()


def variant_tag(etag: str) -> str:
    """The part of a variant's file name that ties it to one version of the object."""
    return hashlib.sha256(etag.encode()).hexdigest()[:16]


def _reason(exc: OSError) -> str:
    """The OS's reason without the path (paths stay out of messages and logs)."""
    return exc.strerror or type(exc).__name__


class Writer:
    """A body being written to ``objects/<name>.<pid>.<rand>.tmp``. Not visible under its
    final name until :meth:`BodyFiles.install` renames it."""

    def __init__(self, directory: Path, name: str, on_error: OnError = _ignore) -> None:
        self.final_path = str(directory / name)
        self.tmp_path = f"{self.final_path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        self.on_error = on_error
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
            self.on_error(exc, self.size + len(chunk))
            raise CacheError(f"cannot write a cache file: {_reason(exc)}") from None
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


class BodyFiles:
    """The ``objects/`` directory of one cache."""

    def __init__(self, directory: Path, on_error: OnError = _ignore) -> None:
        self.directory = directory
        self.on_error = on_error

    def create(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def begin(self, name: str) -> Writer:
        """A new temporary file for the body called ``name``. Raises :class:`CacheError`."""
        try:
            return Writer(self.directory, name, self.on_error)
        except OSError as exc:
            self.on_error(exc, 0)
            raise CacheError(f"cannot create a cache file: {_reason(exc)}") from None

    def install(self, writer: Writer) -> None:
        """Rename a complete body into place (atomic: readers see the old file or the new).
        Raises :class:`OSError`."""
        try:
            os.replace(writer.tmp_path, writer.final_path)
        except OSError as exc:
            self.on_error(exc, writer.size)
            raise

    def free_bytes(self) -> int | None:
        """Bytes an unprivileged writer may still use on the file system; ``None`` if it
        cannot be asked. One system call, no disk I/O."""
        try:
            stat = os.statvfs(self.directory)
        except OSError:
            return None
        return stat.f_bavail * stat.f_frsize

    def present(self) -> bool:
        """Whether the directory exists (a cron job or an operator may remove it)."""
        return os.path.isdir(self.directory)

    def size_of(self, path: str) -> int | None:
        """The size of the file at ``path``; ``None`` if it is not there."""
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    def remove(self, name: str, etag: str | None) -> int:
        """Remove a body and the variants of its version ``etag``; returns the bytes freed.
        O(1): named paths, no directory scan. Never raises."""
        paths = [self.directory / name]
        if etag:
            tag = variant_tag(etag)
            paths += [self.directory / f"{name}.{tag}.{coding}" for coding in VARIANT_CODINGS]
        freed = 0
        for path in paths:
            with contextlib.suppress(OSError):
                size = os.stat(path).st_size
                os.unlink(path)
                freed += size
        return freed

    def read(self, entry: Entry) -> bytes:
        """The whole body of ``entry`` from its file, checked against its recorded size.
        Raises :class:`OSError` if the file is gone, :class:`CacheError` if it is damaged."""
        assert entry.path is not None and entry.meta is not None
        with open(entry.path, "rb") as f:
            body = f.read()
        if len(body) != entry.meta.size:
            raise CacheError(f"cached body of {entry.key!r} has the wrong size")
        return body

    def variant_path(self, entry: Entry, coding: str) -> str | None:
        if entry.path is None or entry.meta is None or not entry.meta.etag:
            return None
        return f"{entry.path}.{variant_tag(entry.meta.etag)}.{coding}"

    def read_variant(self, path: str) -> bytes | None:
        with contextlib.suppress(OSError):
            with open(path, "rb") as f:
                return f.read()
        return None

    def keep_variant(self, path: str, data: bytes) -> bool:
        """Store a variant beside its body, atomically; if the disk refuses (full), keep
        nothing, not even the temporary file. Returns whether it was stored."""
        try:
            writer = Writer(self.directory, os.path.basename(path))
        except OSError:
            return False
        try:
            writer.write(data)
            writer.close()
            os.replace(writer.tmp_path, writer.final_path)
        except (OSError, CacheError):
            writer.abort()
            return False
        return True

    def remove_unknown(self, known: set[str]) -> int:
        """Delete temporary files and files whose body name is not in ``known``; returns how
        many were removed."""
        removed = 0
        for entry in os.scandir(self.directory):
            name = entry.name
            if name.endswith(".tmp") or name.split(".", 1)[0] not in known:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
        return removed

    def remove_all(self) -> tuple[int, int]:
        """Delete every file; returns (files, bytes) removed."""
        files = size = 0
        for entry in os.scandir(self.directory):
            with contextlib.suppress(OSError):
                length = entry.stat().st_size
                os.unlink(entry.path)
                files += 1
                size += length
        return files, size

    def usage(self) -> tuple[int, int]:
        """(files, bytes) of complete files; temporary ones are not counted."""
        files = size = 0
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                if not entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        size += entry.stat().st_size
                        files += 1
        return files, size

    def probe(self) -> None:
        """Raise :class:`CacheError` unless a file can be created here."""
        try:
            Writer(self.directory, ".probe").abort()
        except OSError as exc:
            raise CacheError(f"cannot write to {self.directory}: {_reason(exc)}") from None
