"""Decide what to send for a GET or HEAD of an object we can answer for. Pure: no I/O, no
clock (``now`` is passed in), stdlib only.

:func:`plan` turns (method, request headers, a :class:`Representation`, now) into a
:class:`Plan`: the status, the headers, and which part of the body to send. The endpoint then
only renders it (:mod:`s3proxy.site`, :mod:`s3proxy.passthrough`). The order is RFC 9110's:

1. preconditions (§13.2.2): 412 or 304, see :func:`s3proxy.conditional.evaluate_preconditions`;
2. HEAD: the 200's headers without a body (Range is defined for GET only, §14.2);
3. Range under If-Range (§13.1.5, §14.2): 206 with one or several ranges, 416 with
   ``Content-Range: bytes */size`` (§15.5.17), or the whole 200 when it is ignored (as on a
   zero-length representation, §14.1.1);
4. the whole body, 200.

The models are aiohttp's ``web_fileresponse.py`` (preconditions in RFC order, then send) and
hishel's ``_core/_spec.py`` (the decision as a value). CORS headers are the renderer's: they
depend on the request only, and every response carries them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from s3proxy.conditional import (
    ByteRange,
    RangeKind,
    content_range,
    evaluate_preconditions,
    if_range_allows,
    parse_range,
)
from s3proxy.conditional import Outcome as Precondition

Headers = list[tuple[bytes, bytes]]

# What a 304 repeats of the 200 it stands for (RFC 9110 §15.4.5).
_VALIDATOR_HEADERS = frozenset(
    {b"etag", b"last-modified", b"expires", b"cache-control", b"vary", b"content-encoding"}
)
_PRECONDITION_FAILED: Headers = [(b"content-length", b"0")]


class Ranges(enum.Enum):
    """How a representation can honour ``Range``."""

    ANY = "any"  # a stored body: any satisfiable range set (several as multipart)
    ONE = "one"  # a body S3 streams: one range, asked of S3; several get the whole 200
    NONE = "none"  # a body made or arriving as a whole: Range is ignored


class Body(enum.Enum):
    """Which part of the body a plan sends."""

    NONE = "none"  # 304, 412, HEAD: headers only
    WHOLE = "whole"  # the whole representation
    RANGES = "ranges"  # Plan.ranges: one (Content-Range in the headers) or multipart
    MESSAGE = "message"  # our own short text, Plan.message (416)


@dataclass(frozen=True, slots=True)
class Representation:
    """What a plan needs to know of the representation it would send.

    ``headers`` describe it (Content-Type first, validators, caching, Vary; no length).
    ``size`` is its length in bytes, ``None`` when the body is made only if it is sent (a
    compressed variant: the renderer adds ``Content-Length`` from the body). ``stored_at``
    (epoch seconds) gives an ``Age`` header; ``None`` for a body fresh from S3.
    """

    headers: Headers
    size: int | None
    etag: str | None
    last_modified: float | None
    stored_at: float | None = None
    ranges: Ranges = Ranges.ANY
    #: ``headers`` plus Content-Length: the whole 200's headers but Age, made once.
    whole: Headers = field(init=False, repr=False, compare=False)
    #: The Content-Type value, for the request's account.
    mime: bytes = field(init=False, repr=False, compare=False)
    #: The Content-Encoding value (b"" for none), for the request's account.
    encoding: bytes = field(init=False, repr=False, compare=False)
    #: Whole-body GET plans by Age: a hot object's hits within a second share one plan (a
    #: memo of a pure function; see :func:`_whole`).
    recent: dict[int, Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        whole = list(self.headers)
        if self.size is not None:
            whole.append((b"content-length", str(self.size).encode()))
        object.__setattr__(self, "whole", whole)
        object.__setattr__(self, "mime", self.headers[0][1])
        encoding = next((v for n, v in self.headers if n == b"content-encoding"), b"")
        object.__setattr__(self, "encoding", encoding)
        object.__setattr__(self, "recent", {})


@dataclass(frozen=True, slots=True)
class Plan:
    """What to send: ``status``, ``headers`` (all but CORS; a multipart body's Content-Type
    and Content-Length are the renderer's, since it draws the boundary), and ``body``: which
    part of the representation, ``ranges`` for a 206, ``message`` for our own text."""

    status: int
    headers: Headers
    body: Body
    ranges: tuple[ByteRange, ...] = ()
    message: str = ""


def plan(
    method: str,
    headers: Mapping[bytes, bytes],
    rep: Representation,
    now: float,
    *,
    also_valid: Representation | None = None,
) -> Plan:
    """The response to a ``method`` (GET or HEAD) request with ``headers`` (lower-case names;
    repeated ones joined) for ``rep``, at ``now``. ``also_valid`` is another representation of
    the same version the client may hold (the identity body of a compressed variant): a
    validator of it also earns a 304, with its headers (RFC 9110 §15.4.5)."""
    if (
        b"if-none-match" in headers
        or b"if-modified-since" in headers
        or b"if-match" in headers
        or b"if-unmodified-since" in headers
    ):
        decided = preconditions(method, headers, rep)
        if decided is None and also_valid is not None and b"if-none-match" in headers:
            decided = preconditions(method, headers, also_valid)
            if decided is not None and decided.status != 304:
                decided = None
        if decided is not None:
            return decided
    # Age (RFC 9111 §5.1) of a stored copy; none (-1) for a body fresh from S3.
    age = -1 if rep.stored_at is None else max(0, int(now - rep.stored_at))
    if method == "HEAD":
        return Plan(200, rep.whole + _age(age), Body.NONE)
    # A zero-length representation has no byte to name: Range is ignored, the 200 is empty
    # (RFC 9110 §14.1.1), never a 416.
    if b"range" in headers and rep.ranges is not Ranges.NONE and rep.size != 0:
        ranged = _range(headers, rep, _age(age))
        if ranged is not None:
            return ranged
    whole = rep.recent.get(age)
    return whole if whole is not None else _whole(rep, age)


def _whole(rep: Representation, age: int) -> Plan:
    """The whole 200 of a GET of ``rep`` at ``age`` seconds (-1: no Age header), remembered
    on ``rep`` per Age (plans are never mutated; the memo holds a few seconds' worth)."""
    recent = rep.recent
    if len(recent) >= 4:
        recent.clear()
    whole = recent[age] = Plan(200, rep.whole + _age(age), Body.WHOLE)
    return whole


def _age(seconds: int) -> Headers:
    return [] if seconds < 0 else [(b"age", str(seconds).encode())]


def preconditions(method: str, headers: Mapping[bytes, bytes], rep: Representation) -> Plan | None:
    """A 304 (with the representation's validator headers) or a 412 for the request's
    preconditions against ``rep``, or ``None`` to go on (RFC 9110 §13.2.2)."""
    outcome = evaluate_preconditions(
        method,
        rep.etag,
        rep.last_modified,
        if_match=_text(headers.get(b"if-match")),
        if_none_match=_text(headers.get(b"if-none-match")),
        if_modified_since=_text(headers.get(b"if-modified-since")),
        if_unmodified_since=_text(headers.get(b"if-unmodified-since")),
    )
    if outcome is Precondition.NOT_MODIFIED:
        return Plan(304, [h for h in rep.headers if h[0] in _VALIDATOR_HEADERS], Body.NONE)
    if outcome is Precondition.PRECONDITION_FAILED:
        return Plan(412, _PRECONDITION_FAILED, Body.NONE)
    return None


def _range(headers: Mapping[bytes, bytes], rep: Representation, age: Headers) -> Plan | None:
    """A 206 or 416 for the request's Range, or ``None`` for the whole 200 (If-Range did not
    match, the header is ignored, or several ranges of a body that can send only one)."""
    size = rep.size
    assert size is not None, "a representation of unknown size takes no ranges"
    if not if_range_allows(_text(headers.get(b"if-range")), rep.etag, rep.last_modified):
        return None
    decision = parse_range(headers[b"range"].decode("latin-1"), size)
    if decision.kind is RangeKind.UNSATISFIABLE:
        unsatisfied = [(b"content-range", f"bytes */{size}".encode())]
        return Plan(416, unsatisfied, Body.MESSAGE, message="Range Not Satisfiable")
    if decision.kind is RangeKind.IGNORE:
        return None
    ranges = decision.ranges
    if len(ranges) == 1:
        (r,) = ranges
        return Plan(206, rep.headers + age + range_headers(r, size), Body.RANGES, ranges)
    if rep.ranges is Ranges.ONE:
        return None
    # multipart/byteranges (§14.6): each part carries the type; the renderer adds the rest.
    kept = [h for h in rep.headers if h[0] != b"content-type"]
    return Plan(206, kept + age, Body.RANGES, ranges)


def range_headers(r: ByteRange, size: int) -> Headers:
    """Content-Range and Content-Length of a single-range 206 (§14.4)."""
    return [
        (b"content-range", content_range(r, size).encode()),
        (b"content-length", str(r.length).encode()),
    ]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
