"""Pure: the local tree and the bucket's listing -> what to upload and what to delete.

A file is the same as its object when their contents are: the size must match, then

- a single-part ETag (32 hex digits) is the object's MD5, compared with the file's;
- a multipart ETag (``<hex>-<parts>``) is compared with the file's multipart ETag computed with
  the part size this publisher would use (:func:`part_size`), which is how objects it uploaded
  are recognised without a request; failing that, with the MD5 the publisher stores in the
  object's metadata (:data:`MD5_METADATA`), which only a HeadObject shows: such keys come back
  in :attr:`Plan.ask` for the caller to look up and plan again.

Uploads are ordered so that a reader never meets a page whose assets are missing: other files
first, largest first (they take longest), then HTML pages. Deletes come after every upload.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MiB = 1024 * 1024
#: Files of at least this many bytes go up in parts.
THRESHOLD = 8 * MiB
#: S3's smallest part (except the last) and its most parts per upload.
MIN_PART, MAX_PARTS = 5 * MiB, 10_000
#: The part size for files that need no more than MAX_PARTS of it.
DEFAULT_PART = 8 * MiB
#: The object metadata (``x-amz-meta-...``) holding the content's MD5 in hex.
MD5_METADATA = "s3proxy-md5"


def part_size(size: int, preferred: int = DEFAULT_PART) -> int:
    """The part size for a file of ``size`` bytes: ``preferred`` (at least :data:`MIN_PART`),
    grown in whole MiB until the file fits in :data:`MAX_PARTS` parts."""
    chosen = max(preferred, MIN_PART)
    if size > chosen * MAX_PARTS:
        chosen = -(-size // MAX_PARTS)  # ceiling division
        chosen = -(-chosen // MiB) * MiB
    return chosen


def part_count(size: int, part: int) -> int:
    """How many parts of ``part`` bytes a file of ``size`` takes (one for an empty file)."""
    return max(1, -(-size // part))


@dataclass(frozen=True, slots=True)
class LocalFile:
    """One file of the tree: its key, path, size, MD5 (hex; ``""`` while not computed: only
    a file whose object has its size needs it to be planned) and, when it would go up in
    parts, the multipart ETag (quoted, as S3 shows it) for :func:`part_size`'s parts and
    the parts' MD5s (hex, concatenated); the identity its digests are remembered by."""

    key: str
    path: str
    size: int
    md5: str
    multipart_etag: str | None = None
    identity: str = ""
    part_md5s: str = ""

    def part_md5(self, number: int) -> bytes | None:
        """Part ``number``'s MD5 (1-based), when the digests were computed with it."""
        hex_digest = self.part_md5s[32 * (number - 1) : 32 * number]
        return bytes.fromhex(hex_digest) if len(hex_digest) == 32 else None


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One listed object: its size and ETag as S3 sends it (quoted)."""

    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a publish does: :attr:`uploads` in order, then :attr:`deletes`; :attr:`ask`
    lists keys whose sameness only their metadata can tell (see the module docstring)."""

    uploads: tuple[LocalFile, ...] = ()
    deletes: tuple[str, ...] = ()
    unchanged: int = 0
    ask: tuple[str, ...] = field(default=())

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.uploads)


def same(local: LocalFile, remote: RemoteObject, stored_md5: str | None) -> bool | None:
    """Whether ``remote`` holds ``local``'s content; ``None`` when only the metadata MD5 can
    tell and ``stored_md5`` is not known yet."""
    if local.size != remote.size or not local.md5:
        return False
    etag = remote.etag.strip('"')
    if "-" not in etag:
        return etag == local.md5
    if local.multipart_etag is not None:
        if remote.etag == local.multipart_etag:
            return True
        if _parts(remote.etag) == _parts(local.multipart_etag):
            # As many parts as ours: made with our part size (or one that cuts this size the
            # same way), so another ETag is other content, without asking for its metadata.
            return False
    if stored_md5 is None:
        return None
    return stored_md5 == local.md5


def _parts(etag: str) -> str:
    return etag.strip('"').rpartition("-")[2]


def make_plan(
    local: Iterable[LocalFile],
    remote: Mapping[str, RemoteObject],
    *,
    delete: bool = False,
    stored_md5: Mapping[str, str | None] | None = None,
) -> Plan:
    """Compare the tree with the listing. ``stored_md5`` holds the metadata MD5 of keys looked
    up after an earlier plan's :attr:`Plan.ask` (``None``: the object has none)."""
    stored = stored_md5 or {}
    uploads: list[LocalFile] = []
    ask: list[str] = []
    unchanged = 0
    keys: set[str] = set()
    for file in local:
        keys.add(file.key)
        theirs = remote.get(file.key)
        verdict = False if theirs is None else same(file, theirs, stored.get(file.key))
        if verdict is None and file.key in stored:
            verdict = False  # looked up: no MD5 in its metadata, so send it
        if verdict is None:
            ask.append(file.key)
        elif verdict:
            unchanged += 1
        else:
            uploads.append(file)
    uploads.sort(key=upload_order)
    deletes = sorted(set(remote) - keys) if delete else []
    return Plan(tuple(uploads), tuple(deletes), unchanged, tuple(sorted(ask)))


def upload_order(file: LocalFile) -> tuple[bool, int, str]:
    """Pages after every other file; within each, the largest first."""
    return (file.key.endswith((".html", ".htm")), -file.size, file.key)
