"""What we know about an object without its body: the S3 headers we keep and pass on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """An object's size and representation headers, as S3 sent them.

    ``etag`` keeps its quotes (``'"9b2cf..."'``) so it can be sent as it is; ``last_modified``
    is epoch seconds. The optional headers are passed through to clients verbatim.
    """

    size: int
    etag: str | None = None
    last_modified: float | None = None
    content_type: str | None = None
    cache_control: str | None = None
    content_encoding: str | None = None
    content_disposition: str | None = None
    content_language: str | None = None
    expires: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectMeta:
        return cls(**data)
