"""One cached answer for a key: an object (its metadata, where its body is) or a remembered
404."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from s3proxy.meta import ObjectMeta


@dataclass(slots=True, eq=False)
class Entry:
    """``meta is None`` means S3 said the key does not exist (a negative entry).

    ``body`` holds the bytes when the object sits in the memory tier; otherwise they are read
    from ``path``. ``variants`` holds compressed bodies by coding (memory tier only).
    ``stored_at``/``expires_at`` are wall-clock epoch seconds. ``rendered`` is a
    memo that the response layer may fill (precomputed headers), never read here.
    """

    key: str
    meta: ObjectMeta | None
    stored_at: float
    expires_at: float
    path: str | None = None
    body: bytes | None = None
    variants: dict[str, bytes] | None = None
    rendered: Any = field(default=None, repr=False)

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    @property
    def missing(self) -> bool:
        return self.meta is None
