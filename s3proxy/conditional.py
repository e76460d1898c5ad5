"""Decide conditional requests and byte ranges from cached metadata. Pure: no I/O, stdlib only.

Two questions are answered here, and only answered; :mod:`s3proxy.responses` renders the
decision:

* :func:`evaluate_preconditions` — ``If-Match``, ``If-Unmodified-Since``, ``If-None-Match`` and
  ``If-Modified-Since`` in the order of RFC 9110 §13.2.2 -> :class:`Outcome` (200/206, 304, 412).
* :func:`if_range_allows` and :func:`parse_range` — ``If-Range`` (§13.1.5) and ``Range`` (§14.2)
  -> :class:`RangeDecision` (whole 200, 206 with ranges, or 416).

This is on the hot path of every cache hit. Callers call these functions only when the header
is present; the common single-tag ``If-None-Match`` is decided by one string comparison, and
every regular expression is compiled once, at import.

Entity tags are compared as the text sent on the wire (``"abc"`` or ``W/"abc"``). Dates are
compared in whole seconds: an HTTP-date has a resolution of one second, so ``last_modified`` is
truncated to an ``int`` first. The only clock read is for an obsolete RFC 850 date, whose
two-digit year depends on the current year (pass ``now`` to :func:`parse_http_date` to fix it).
"""

from __future__ import annotations

import calendar
import enum
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

#: More range specs than this in one ``Range`` header are ignored (the whole 200 is sent):
#: RFC 9110 §14.2 lets a server ignore a range set that is costly to serve, and the limit bounds
#: the work an attacker can ask of us (many tiny ranges in one multipart response).
MAX_RANGES = 8

# A Range header longer than this is ignored outright, before any parsing.
_MAX_RANGE_HEADER = 1024

# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text (§8.8.3).
# The opaque tag is captured *with* its quotes, so comparing it with our own (unvalidated) ETag
# text can only succeed when ours is well formed too.
_ETAGC = r"[\x21\x23-\x7e\x80-\xff]*"
_ETAG = re.compile(rf'(W/)?("{_ETAGC}")')
# One member of an entity-tag list, with OWS and its trailing comma. etagc admits ",", so a list
# cannot simply be split on commas.
_ETAG_MEMBER = re.compile(rf'[ \t]*(W/)?("{_ETAGC}")[ \t]*(?:,|\Z)')
# A malformed member: everything up to and including the next comma.
_SKIP_MEMBER = re.compile(r"[^,]*,?")

# The three HTTP-date forms (§5.6.7). HTTP-date is case-sensitive.
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})"
# Sun, 06 Nov 1994 08:49:37 GMT
_IMF_FIXDATE = re.compile(rf"{_DAY}, ([0-9]{{2}}) {_MONTH} ([0-9]{{4}}) {_TIME} GMT")
# Sunday, 06-Nov-94 08:49:37 GMT
_RFC850_DATE = re.compile(
    r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    rf"([0-9]{{2}})-{_MONTH}-([0-9]{{2}}) {_TIME} GMT"
)
# Sun Nov  6 08:49:37 1994
_ASCTIME_DATE = re.compile(rf"{_DAY} {_MONTH} ([ 0-9][0-9]) {_TIME} ([0-9]{{4}})")
# Fixed English names, never the locale's (calendar.month_abbr follows the locale).
_MONTH_NAMES = ("", *"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES) if name}
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # indexed by tm_wday

# range-spec = int-range / suffix-range (§14.1.1), with the OWS a list member may carry.
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)-([0-9]*)[ \t]*")


class Outcome(enum.Enum):
    """What the preconditions of a GET or HEAD decide."""

    PROCEED = "proceed"  # serve normally (200 / 206)
    NOT_MODIFIED = "not_modified"  # 304
    PRECONDITION_FAILED = "precondition_failed"  # 412


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable byte range, both ends inclusive: ``0 <= start <= end < size``."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """The number of bytes in the range."""
        return self.end - self.start + 1


class RangeKind(enum.Enum):
    """How to answer a request that carries ``Range``."""

    IGNORE = "ignore"  # no/invalid Range, unknown unit or too many ranges: the whole 200
    SATISFIABLE = "satisfiable"  # 206 with RangeDecision.ranges
    UNSATISFIABLE = "unsatisfiable"  # 416 with "Content-Range: bytes */size"


@dataclass(frozen=True, slots=True)
class RangeDecision:
    """The decision on a ``Range`` header. ``ranges`` is non-empty exactly when ``kind`` is
    SATISFIABLE; the ranges are sorted, and none overlaps or touches another."""

    kind: RangeKind
    ranges: tuple[ByteRange, ...] = ()


_IGNORE = RangeDecision(RangeKind.IGNORE)
_UNSATISFIABLE = RangeDecision(RangeKind.UNSATISFIABLE)


# --- Entity tags (RFC 9110 §8.8.3) ------------------------------------------------------------


def strong_match(a: str, b: str) -> bool:
    """Strong comparison (§8.8.3.2): both tags are well formed, neither is weak, and their
    opaque tags are equal."""
    return a == b and not a.startswith("W/") and _ETAG.fullmatch(a) is not None


def weak_match(a: str, b: str) -> bool:
    """Weak comparison (§8.8.3.2): both tags are well formed and their opaque tags are equal,
    whether or not either is marked weak (``W/``)."""
    ma, mb = _ETAG.fullmatch(a), _ETAG.fullmatch(b)
    return ma is not None and mb is not None and ma.group(2) == mb.group(2)


def _iter_etags(header: str) -> Iterator[tuple[bool, str]]:
    """Yield ``(weak, opaque_tag)`` for each well-formed member of a ``#entity-tag`` list,
    skipping malformed members (and empty ones, which §5.6.1.2 tells recipients to ignore)."""
    pos, end = 0, len(header)
    while pos < end:
        member = _ETAG_MEMBER.match(header, pos)
        if member is None:
            # Always matches, and at pos < end consumes at least a character or the comma.
            skip = _SKIP_MEMBER.match(header, pos)
            pos = skip.end() if skip is not None else end
            continue
        yield member.group(1) is not None, member.group(2)
        pos = member.end()


def _list_matches(header: str, etag: str | None, *, weak: bool) -> bool:
    """Whether an ``If-Match`` / ``If-None-Match`` value matches the current representation.

    ``*`` matches any current representation (the caller has one: it holds its metadata),
    even one without an entity tag; otherwise some listed tag must match ``etag``, by weak
    comparison if ``weak`` else by strong comparison.
    """
    if etag is None:
        return header.strip(" \t") == "*"
    ours_weak = etag.startswith("W/")
    if header == etag:  # the common case: the client echoes back the tag we sent
        return weak or not ours_weak
    if header.strip(" \t") == "*":
        return True
    ours = etag[2:] if ours_weak else etag
    for theirs_weak, theirs in _iter_etags(header):
        if theirs == ours and (weak or not (theirs_weak or ours_weak)):
            return True
    return False


# --- HTTP dates (RFC 9110 §5.6.7) -------------------------------------------------------------


def format_http_date(epoch: float) -> str:
    """Format epoch seconds as an IMF-fixdate, e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``.
    Fractions of a second are dropped (floor)."""
    t = time.gmtime(epoch)
    return (
        f"{_DAY_NAMES[t.tm_wday]}, {t.tm_mday:02d} {_MONTH_NAMES[t.tm_mon]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(value: str, *, now: float | None = None) -> float | None:
    """Parse an HTTP-date in any of its three forms (§5.6.7) into epoch seconds; ``None`` if
    the value is not a valid HTTP-date. Never raises.

    IMF-fixdate, the only form senders may generate, is tried first. An RFC 850 date's
    two-digit year is read as the most recent matching year that is not more than 50 years
    after ``now`` (default: the current time), as §5.6.7 requires.
    """
    value = value.strip(" \t")
    if m := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hh, mm, ss = m.groups()
    elif m := _ASCTIME_DATE.fullmatch(value):
        month, day, hh, mm, ss, year = m.groups()
    elif m := _RFC850_DATE.fullmatch(value):
        day, month, yy, hh, mm, ss = m.groups()
        year = str(_full_year(int(yy), time.time() if now is None else now))
    else:
        return None
    return _epoch(int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss))


def _full_year(yy: int, now: float) -> int:
    """The year ending in ``yy`` that is at most 50 years after the year of ``now``."""
    this_year = time.gmtime(now).tm_year
    year = this_year - this_year % 100 + yy
    return year - 100 if year > this_year + 50 else year


def _epoch(year: int, month: int, day: int, hh: int, mm: int, ss: int) -> float | None:
    """Epoch seconds of a UTC calendar time, or ``None`` if it names no real instant."""
    if year < 1 or day < 1 or day > calendar.monthrange(year, month)[1]:
        return None
    # second = 00-60: 60 is a leap second, which epoch time folds into the next second.
    if hh > 23 or mm > 59 or ss > 60:
        return None
    return float(calendar.timegm((year, month, day, hh, mm, ss)))


def _valid_date(value: str) -> int | None:
    """A conditional header's date in whole seconds, or ``None`` if it must be ignored."""
    date = parse_http_date(value)
    return None if date is None else int(date)


# --- Preconditions (RFC 9110 §13) -------------------------------------------------------------


def evaluate_preconditions(
    method: str,
    etag: str | None,
    last_modified: float | None,
    *,
    if_match: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
    if_unmodified_since: str | None = None,
) -> Outcome:
    """Evaluate the request's preconditions against the selected representation, in the order
    of RFC 9110 §13.2.2. ``method`` is upper-case; ``etag`` is the representation's entity tag
    as sent on the wire, ``last_modified`` its Last-Modified in epoch seconds (either may be
    unknown). Invalid dates are ignored, as §13.1.3 and §13.1.4 require.
    """
    # Step 1: If-Match, by strong comparison (§13.1.1); a false condition is a 412.
    if if_match is not None:
        if not _list_matches(if_match, etag, weak=False):
            return Outcome.PRECONDITION_FAILED
    # Step 2: If-Unmodified-Since, only without If-Match (§13.1.4).
    elif if_unmodified_since is not None and last_modified is not None:
        date = _valid_date(if_unmodified_since)
        if date is not None and int(last_modified) > date:
            return Outcome.PRECONDITION_FAILED
    safe = method in ("GET", "HEAD")
    # Step 3: If-None-Match, by weak comparison (§13.1.2); when present it alone decides.
    if if_none_match is not None:
        if _list_matches(if_none_match, etag, weak=True):
            return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED
    # Step 4: If-Modified-Since, only for GET/HEAD without If-None-Match (§13.1.3).
    elif if_modified_since is not None and safe and last_modified is not None:
        date = _valid_date(if_modified_since)
        if date is not None and int(last_modified) <= date:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


# --- Ranges (RFC 9110 §14) --------------------------------------------------------------------


def if_range_allows(if_range: str | None, etag: str | None, last_modified: float | None) -> bool:
    """Whether ``Range`` may be honoured under ``If-Range`` (§13.1.5); false means "send the
    whole representation with 200".

    No ``If-Range`` allows it. An entity tag must match ``etag`` by strong comparison, so a
    weak tag on either side never does. A date must equal ``last_modified`` to the second. An
    invalid value allows nothing.
    """
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    # §13.1.5: an entity-tag is told from an HTTP-date by a DQUOTE in its first three chars.
    if '"' in value[:3]:
        return etag is not None and strong_match(value, etag)
    date = _valid_date(value)
    return date is not None and last_modified is not None and int(last_modified) == date


def parse_range(header: str | None, size: int) -> RangeDecision:
    """Decide a ``Range`` header (§14.1.1, §14.2) for a representation of ``size`` bytes.

    Only the ``bytes`` unit is understood; any other unit, a syntax error anywhere in the
    header, more than :data:`MAX_RANGES` specs or a header longer than 1024 characters is
    IGNORE (§14.2 lets a server ignore Range). Specs that start at or past the end, ``-0``, and
    any spec on an empty representation (no byte position exists to name) are unsatisfiable;
    if no spec is left, UNSATISFIABLE. Otherwise SATISFIABLE with the ranges clamped to the
    end, sorted, and overlapping or adjacent ones coalesced (§14.2 permits it).

    Range is defined for GET only: the caller must not apply it to HEAD (§14.2).
    """
    if header is None or len(header) > _MAX_RANGE_HEADER:
        return _IGNORE
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return _IGNORE
    # A recipient ignores empty list members (§5.6.1.2): "bytes=0-1,,5-6" is two specs.
    specs = [spec for spec in range_set.split(",") if spec.strip(" \t")]
    if not specs or len(specs) > MAX_RANGES:
        return _IGNORE
    ranges: list[ByteRange] = []
    for spec in specs:
        try:
            byte_range = _parse_spec(spec, size)
        except ValueError:
            return _IGNORE
        if byte_range is not None:
            ranges.append(byte_range)
    if not ranges:
        return _UNSATISFIABLE
    return RangeDecision(RangeKind.SATISFIABLE, _coalesce(ranges))


def _parse_spec(spec: str, size: int) -> ByteRange | None:
    """One range-spec as a clamped range, ``None`` if it is unsatisfiable; raises
    ``ValueError`` if it is invalid (which invalidates the whole header)."""
    m = _RANGE_SPEC.fullmatch(spec)
    if m is None:
        raise ValueError(spec)
    first, last = m.groups()
    if not first:
        if not last:
            raise ValueError(spec)  # a lone "-"
        # suffix-range: the last n bytes, or the whole representation if it is shorter.
        suffix = int(last)
        if suffix == 0 or size == 0:
            return None
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    if not last:
        return ByteRange(start, size - 1) if start < size else None
    end = int(last)
    if start > end:
        raise ValueError(spec)
    return ByteRange(start, min(end, size - 1)) if start < size else None


def _coalesce(ranges: list[ByteRange]) -> tuple[ByteRange, ...]:
    """Sort ranges and merge those that overlap or touch, so each byte is sent at most once."""
    if len(ranges) == 1:
        return (ranges[0],)
    ranges.sort(key=lambda r: r.start)
    merged = [ranges[0]]
    for r in ranges[1:]:
        last = merged[-1]
        if r.start <= last.end + 1:
            if r.end > last.end:
                merged[-1] = ByteRange(last.start, r.end)
        else:
            merged.append(r)
    return tuple(merged)


def content_range(r: ByteRange, size: int) -> str:
    """The ``Content-Range`` value of a 206 part (§14.4), e.g. ``bytes 0-99/1000``."""
    return f"bytes {r.start}-{r.end}/{size}"
