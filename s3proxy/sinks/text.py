"""What the text encoders (Akumuli's and the line protocol's) share: a record's tags and its
location's as each protocol escapes them, and the memos that make a record cheap to write.

Both protocols write a record as the text of its kind (method, resource, type, address,
status, cache outcome, compression and location) around its numbers. Making that text from
scratch takes ~8-12 µs; :class:`KindMemo` keeps it per kind and :class:`Tags` keeps each
escaped tag, so that a record of a known kind is a dict lookup and one string format.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection
from typing import Generic, TypeVar

from s3proxy.record import RequestRecord
from s3proxy.sinks.base import Location

T = TypeVar("T")

#: A location's tags, in sorted order (as InfluxDB prefers tags; Akumuli does not mind).
GEO_TAGS = ("city", "continent", "country", "country_iso_code", "subdivision")
#: Escaped tag texts kept for reuse, per kind of tag (methods, resources, addresses, types).
FIELD_MEMO = 8192
#: Texts of record kinds kept for reuse; they start over when there are this many.
SERIES_MEMO = 4096


def media_type(content_type: str) -> str:
    """``text/html; charset=utf-8`` -> ``text/html``: parameters would only split series."""
    return content_type.split(";", 1)[0].strip()


def path(resource: str) -> str:
    """The resource without its query, which would only split series."""
    return resource.split("?", 1)[0]


def geo_tags(location: Location) -> list[tuple[str, str]]:
    """A location's non-empty tag values, in :data:`GEO_TAGS` order."""
    return [(key, str(location[key])) for key in GEO_TAGS if location.get(key)]


def coordinates(location: Location) -> tuple[float, float] | None:
    """``(latitude, longitude)``, or ``None`` when the location has no finite pair."""
    try:
        lat, lng = float(location["latitude"]), float(location["longitude"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(lat) and math.isfinite(lng)):
        return None
    return lat, lng


class Tags:
    """One protocol's tag texts, ``<separator><key>=<escaped value>``, each made once per
    value (records of a kind repeat them). A value that ``escape`` turns into nothing
    gives no tag at all; so does a record without a media type."""

    def __init__(self, escape: Callable[[str], str], separator: str) -> None:
        self.escape, self.separator = escape, separator
        self.tag = functools.lru_cache(maxsize=FIELD_MEMO)(self._tag)
        self.resource = functools.lru_cache(maxsize=FIELD_MEMO)(self._resource)
        self.mime = functools.lru_cache(maxsize=FIELD_MEMO)(self._mime)

    def _tag(self, key: str, value: str) -> str:
        text = self.escape(value)
        return f"{self.separator}{key}={text}" if text else ""

    def _resource(self, resource: str) -> str:
        return self._tag("resource", path(resource))

    def _mime(self, content_type: str) -> str:
        mime = media_type(content_type)
        return self._tag("mimeType", mime) if mime else ""

    def geo(self, location: Location, keys: Collection[str] = GEO_TAGS) -> str:
        """The location's tags (those among ``keys``), in :data:`GEO_TAGS` order."""
        return "".join(self.tag(key, value) for key, value in geo_tags(location) if key in keys)


class LocationMemo(Generic[T]):
    """What a sink derives from a location (its tags, its coordinates), computed once per
    location dict. Kept by the dict's identity, which is safe because the memo holds the
    dict itself (its id cannot be reused meanwhile), and cheap because the enricher shares
    one dict among all the records of an address. Starts over at ``size`` entries."""

    def __init__(self, derive: Callable[[Location | None], T], size: int = 4096) -> None:
        self.derive, self.size = derive, size
        self.none = derive(None)
        self._memo: dict[int, tuple[Location, T]] = {}

    def __call__(self, location: Location | None) -> T:
        if not location:
            return self.none
        entry = self._memo.get(id(location))
        if entry is None or entry[0] is not location:
            if len(self._memo) >= self.size:
                self._memo.clear()
            entry = self._memo[id(location)] = (location, self.derive(location))
        return entry[1]


#: What makes records of one kind: every field but the numbers and the location.
Kind = tuple[str, str, str, str, int, bool, str]


class KindMemo(Generic[T]):
    """``make(record)`` once per kind of record and location (the location by identity,
    as in :class:`LocationMemo`); starts over at ``size`` kinds."""

    def __init__(self, make: Callable[[RequestRecord], T], size: int = SERIES_MEMO) -> None:
        self.make, self.size = make, size
        self._memo: dict[Kind, tuple[Location | None, T]] = {}

    def __call__(self, r: RequestRecord) -> T:
        key = (r.method, r.resource, r.mime_type, r.ip, r.status, r.compressed, r.cache)
        known = self._memo.get(key)
        if known is None or known[0] is not r.location:
            if len(self._memo) >= self.size:
                self._memo.clear()
            known = self._memo[key] = (r.location, self.make(r))
        return known[1]
