"""The local tree: its files, as keys under the prefix, with their digests.

Blocking (it walks and reads the disk): callers run it in a thread. Every regular file under
the directory is published, dotfiles included, following symbolic links to files but not to
directories (a link loop cannot make the walk endless). Digests are remembered by file
identity (size, mtime, ctime, inode): a file whose content changed has a new ctime even when
a tool put its mtime back, so the remembered digest is only used for the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from s3proxy.publish.plan import THRESHOLD, LocalFile, part_size

#: Bytes read at a time while hashing.
READ_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Found:
    """A file found by :func:`walk`: its path under the tree (``/``-separated), its path on
    disk, and the identity its digest is remembered by."""

    relative: str
    path: str
    size: int
    identity: str


def walk(root: str) -> list[Found]:
    """Every regular file under ``root``, sorted by relative path. Raises OSError when
    ``root`` cannot be read."""
    found: list[Found] = []

    def failed(exc: OSError) -> None:
        raise exc

    for directory, _, names in os.walk(root, onerror=failed):
        for name in names:
            path = os.path.join(directory, name)
            st = os.stat(path)
            if not os.path.isfile(path):
                continue  # sockets, fifos, broken links
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            identity = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
            found.append(Found(relative, path, st.st_size, identity))
    found.sort(key=lambda f: f.relative)
    return found


def digest(path: str, size: int) -> tuple[str, str | None, str]:
    """The file's MD5 (hex) and, for a file that goes up in parts (:func:`part_size`'s), its
    multipart ETag (the MD5 of the parts' MD5s, ``-`` and their count, quoted) and the parts'
    MD5s (hex, concatenated: each is its part's ``Content-MD5``)."""
    whole = hashlib.md5(usedforsecurity=False)
    part = part_size(size) if size >= THRESHOLD else 0
    parts: list[bytes] = []
    current = hashlib.md5(usedforsecurity=False)
    in_part = 0
    with open(path, "rb") as f:
        while chunk := f.read(READ_SIZE if not part else min(READ_SIZE, part - in_part)):
            whole.update(chunk)
            if part:
                current.update(chunk)
                in_part += len(chunk)
                if in_part == part:
                    parts.append(current.digest())
                    current, in_part = hashlib.md5(usedforsecurity=False), 0
    if not part:
        return whole.hexdigest(), None, ""
    if in_part:
        parts.append(current.digest())
    combined = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
    return whole.hexdigest(), f'"{combined}-{len(parts)}"', b"".join(parts).hex()


def local_files(
    root: str,
    prefix: str,
    known: dict[str, list[str | None]],
    wanted: Callable[[str, int], bool] = lambda key, size: True,
    threads: int = 4,
) -> list[LocalFile]:
    """The tree's files as keys under ``prefix``. ``known`` (relative path -> identity, md5,
    multipart ETag, parts' MD5s) gives the digests of files it knows by identity; of the
    others, those for which ``wanted(key, size)`` are hashed in ``threads`` threads (hashlib
    releases the GIL) and added to it, the rest come without a digest (``md5 == ""``): a
    file that is certainly sent (a new key, another size) is hashed as it is sent."""
    found = walk(root)
    todo = [
        f
        for f in found
        if (known.get(f.relative) or [None])[0] != f.identity
        and wanted(prefix + f.relative, f.size)
    ]
    with ThreadPoolExecutor(max(1, threads)) as pool:
        hashed = pool.map(lambda f: digest(f.path, f.size), todo)
        for f, digests in zip(todo, hashed, strict=True):
            known[f.relative] = [f.identity, *digests]
    for stale in set(known) - {f.relative for f in found}:
        del known[stale]
    files = []
    for f in found:
        entry = known.get(f.relative) or []
        identity, md5, etag, parts = (*entry, None, None, None, None)[:4]
        if identity != f.identity:
            md5 = etag = parts = None
        key = prefix + f.relative
        files.append(LocalFile(key, f.path, f.size, md5 or "", etag, f.identity, parts or ""))
    return files


def with_digest(file: LocalFile, known: dict[str, list[str | None]], prefix: str) -> LocalFile:
    """``file`` with its digests, hashed now if it has none, remembered in ``known``."""
    if file.md5:
        return file
    md5, etag, parts = digest(file.path, file.size)
    known[file.key[len(prefix) :]] = [file.identity, md5, etag, parts]
    return dataclasses.replace(file, md5=md5, multipart_etag=etag, part_md5s=parts)
