"""What the read-through did for a key, as a value (the model: hishel's ``_core/_spec.py``,
where each cache decision is a state the caller matches on).

:meth:`ReadThrough.read <s3proxy.readthrough.ReadThrough.read>` answers with exactly one of::

    Outcome          cache status   what the endpoint sends
    ├── Hit          hit            the stored copy, fresh
    ├── Revalidated  revalidated    the stored copy, just confirmed by S3 (304) and refreshed
    ├── Stale        stale          the stored copy, expired, because S3 failed (now, or
    │                revalidating   moments ago), or while it is asked in the background
    ├── Missing      hit / miss     nothing: S3 has no such key (remembered, or just asked)
    ├── Filling      miss           the body S3 is sending, being stored as it arrives
    └── PassThrough  pass           the body S3 is sending, not stored (too large, cache full)

Each outcome carries its cache status (the access log's ``cache`` field and the per-worker
counters) and the bytes it cost S3 for this request. The endpoint never guesses what happened
from timestamps or flags: it matches on the type.

A :class:`Stale` copy names its ``error`` when S3 failed (stale-if-error, RFC 5861 §4); with
``error=None`` it is a copy served stale on purpose while a revalidation runs in the
background (stale-while-revalidate, RFC 5861 §3), which the read-through starts itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from s3proxy.cache import Entry
from s3proxy.exceptions import OriginError
from s3proxy.meta import ObjectMeta

if TYPE_CHECKING:
    from s3proxy.fill import Fill

#: The ``cache`` field of a request that never reached the read-through (a 400, a redirect).
NO_CACHE = "-"


class _Found:
    """An outcome that found an object, through a stored copy or a fill (its ``source``)."""

    __slots__ = ()

    def source(self) -> Entry | Fill:
        raise NotImplementedError

    @property
    def key(self) -> str:
        return self.source().key

    @property
    def meta(self) -> ObjectMeta:
        """The object's metadata (a remembered 404 is :class:`Missing`, never found)."""
        meta = self.source().meta
        assert meta is not None
        return meta


class _StoredCopy(_Found):
    """An outcome that sends a stored copy, ``entry``."""

    __slots__ = ()
    entry: Entry

    def source(self) -> Entry:
        return self.entry


class _FromS3(_Found):
    """An outcome whose body S3 is sending, through ``fill``."""

    __slots__ = ()
    fill: Fill

    def source(self) -> Fill:
        return self.fill


@dataclass(frozen=True, slots=True)
class Hit(_StoredCopy):
    """A fresh stored copy: no S3 call was made. ``entry.meta`` is never ``None``."""

    entry: Entry
    cache: ClassVar[str] = "hit"
    origin_bytes: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class Revalidated(_StoredCopy):
    """S3 answered 304 to a conditional GET: the stored copy is current and was refreshed."""

    entry: Entry
    cache: ClassVar[str] = "revalidated"
    origin_bytes: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class Stale(_StoredCopy):
    """An expired stored copy served instead of S3's answer. ``error`` is why S3's answer was
    not used (stale-if-error); ``None`` when the copy is served while it is revalidated in the
    background (stale-while-revalidate)."""

    entry: Entry
    error: OriginError | None = None
    origin_bytes: ClassVar[int] = 0

    @property
    def cache(self) -> str:
        """``stale`` when S3 failed (nginx's ``STALE``), ``revalidating`` while a background
        revalidation runs (nginx's ``UPDATING``)."""
        return "revalidating" if self.error is None else "stale"


@dataclass(frozen=True, slots=True)
class Missing:
    """S3 has no such key. ``cache`` is ``"hit"`` when the 404 was remembered, ``"miss"``
    when S3 was just asked."""

    key: str
    cache: str
    origin_bytes: ClassVar[int] = 0


@dataclass(frozen=True, slots=True)
class Filling(_FromS3):
    """S3 is sending the body and the cache is storing it; ``fill`` streams it to any number
    of readers as it arrives, and ``fill.entry`` is set once it is stored. ``origin_bytes`` is
    the object's size for the request that started the fill, 0 for those that joined it."""

    fill: Fill
    origin_bytes: int = 0
    cache: ClassVar[str] = "miss"


@dataclass(frozen=True, slots=True)
class PassThrough(_FromS3):
    """S3 is sending the body and the cache will not store it (larger than
    ``--cache-max-object-size``, or the cache cannot write). The sender counts the bytes it
    asks of S3, since a range is asked of S3 itself."""

    fill: Fill
    cache: ClassVar[str] = "pass"
    origin_bytes: ClassVar[int] = 0


#: Outcomes that carry a stored copy to send (``entry``).
Stored = Hit | Revalidated | Stale
#: Outcomes that found an object (everything but :class:`Missing`).
Found = Hit | Revalidated | Stale | Filling | PassThrough
Outcome = Found | Missing

__all__ = [
    "NO_CACHE",
    "Filling",
    "Found",
    "Hit",
    "Missing",
    "Outcome",
    "PassThrough",
    "Revalidated",
    "Stale",
    "Stored",
]
