"""One cached answer for a key: an object (its metadata, where its body is) or a remembered
404. Immutable: a change (a body loaded into memory, a revalidation) is a new entry that
replaces the old one in the memory tier, so a request holding an entry never sees it move."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3proxy.meta import ObjectMeta


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """``meta is None`` means S3 said the key does not exist (a negative entry).

    ``body`` holds the bytes when the object sits in the memory tier; otherwise they are read
    from ``path``. ``variants`` holds compressed bodies by coding (memory tier only).
    ``stored_at``/``expires_at`` are wall-clock epoch seconds. ``rendered`` is a memo the
    response layer may fill (precomputed headers, keyed so that a stale memo is never used);
    the cache never reads it, and an entry derived from this one shares it.
    """

    key: str
    meta: ObjectMeta | None
    stored_at: float
    expires_at: float
    path: str | None = None
    body: bytes | None = None
    variants: Mapping[str, bytes] | None = None
    rendered: dict[Any, Any] = field(default_factory=dict, repr=False)

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    @property
    def missing(self) -> bool:
        return self.meta is None
