"""What to send, decided from the request's headers and what we hold, before anything is sent
(preconditions, HEAD, Range in RFC 9110's order). Pure: time is passed in."""

from __future__ import annotations

import pytest

from s3proxy.conditional import ByteRange
from s3proxy.plan import Body, Headers, Plan, Ranges, Representation, plan

# Sun, 06 Nov 1994 08:49:37 GMT, the RFC's own example.
LAST_MODIFIED = 784111777.0
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
ETAG = '"v1"'
STORED_AT = 1_700_000_000.0
NOW = STORED_AT + 42.9
SIZE = 1000

DESCRIBED: Headers = [
    (b"content-type", b"text/html"),
    (b"etag", ETAG.encode()),
    (b"last-modified", IMF.encode()),
    (b"expires", b"Wed, 15 Nov 2023 00:00:00 GMT"),
    (b"cache-control", b"max-age=60"),
    (b"content-language", b"en"),
    (b"accept-ranges", b"bytes"),
]
LENGTH = (b"content-length", str(SIZE).encode())
AGE = (b"age", b"42")
# What a 304 repeats of the 200 (RFC 9110 §15.4.5).
VALIDATORS = [
    h for h in DESCRIBED if h[0] in (b"etag", b"last-modified", b"expires", b"cache-control")
]


def rep(
    *,
    size: int | None = SIZE,
    stored: bool = True,
    ranges: Ranges = Ranges.ANY,
    etag: str | None = ETAG,
    headers: Headers = DESCRIBED,
) -> Representation:
    return Representation(headers, size, etag, LAST_MODIFIED, STORED_AT if stored else None, ranges)


STORED = rep()
ARRIVING = rep(stored=False, ranges=Ranges.NONE)
PASSING = rep(stored=False, ranges=Ranges.ONE)
WHOLE = Plan(200, [*DESCRIBED, LENGTH, AGE], Body.WHOLE)
NOT_MODIFIED = Plan(304, VALIDATORS, Body.NONE)
FAILED = Plan(412, [(b"content-length", b"0")], Body.NONE)
UNSATISFIABLE = Plan(
    416, [(b"content-range", b"bytes */1000")], Body.MESSAGE, message="Range Not Satisfiable"
)


def ranged(*ranges: tuple[int, int], age: bool = True) -> Plan:
    """A 206 of ``ranges``: one with its Content-Range and length, several as multipart
    (the renderer adds the type and length that hold the boundary)."""
    spans = tuple(ByteRange(a, b) for a, b in ranges)
    after = [AGE] if age else []
    if len(spans) == 1:
        (r,) = spans
        part = [
            (b"content-range", f"bytes {r.start}-{r.end}/{SIZE}".encode()),
            (b"content-length", str(r.length).encode()),
        ]
        return Plan(206, [*DESCRIBED, *after, *part], Body.RANGES, spans)
    return Plan(206, [*DESCRIBED[1:], *after], Body.RANGES, spans)


def encoded(headers: dict[bytes, str | bytes]) -> dict[bytes, bytes]:
    """Request headers as the endpoint picks them: lower-case names, byte values."""
    return {k: v.encode("latin-1") if isinstance(v, str) else v for k, v in headers.items()}


CASES = [
    # (method, request headers, representation, expected plan)
    pytest.param("GET", {}, STORED, WHOLE, id="get-whole-with-age"),
    pytest.param("HEAD", {}, STORED, Plan(200, WHOLE.headers, Body.NONE), id="head-no-body"),
    pytest.param(
        "GET",
        {},
        ARRIVING,
        Plan(200, [*DESCRIBED, LENGTH], Body.WHOLE),
        id="arriving-has-no-age",
    ),
    # Preconditions, RFC 9110 §13.2.2.
    pytest.param("GET", {b"if-none-match": ETAG}, STORED, NOT_MODIFIED, id="inm-match-304"),
    pytest.param("HEAD", {b"if-none-match": ETAG}, STORED, NOT_MODIFIED, id="inm-head-304"),
    pytest.param("GET", {b"if-none-match": 'W/"v1"'}, STORED, NOT_MODIFIED, id="inm-weak-304"),
    pytest.param("GET", {b"if-none-match": '"v0"'}, STORED, WHOLE, id="inm-other-200"),
    pytest.param("GET", {b"if-none-match": "*"}, STORED, NOT_MODIFIED, id="inm-star-304"),
    pytest.param("GET", {b"if-modified-since": IMF}, STORED, NOT_MODIFIED, id="ims-same-304"),
    pytest.param("GET", {b"if-modified-since": EARLIER}, STORED, WHOLE, id="ims-earlier-200"),
    pytest.param(
        "GET",
        {b"if-none-match": '"v0"', b"if-modified-since": IMF},
        STORED,
        WHOLE,
        id="inm-decides-over-ims",
    ),
    pytest.param("GET", {b"if-match": '"v0"'}, STORED, FAILED, id="if-match-other-412"),
    pytest.param("GET", {b"if-match": 'W/"v1"'}, STORED, FAILED, id="if-match-weak-412"),
    pytest.param("GET", {b"if-match": ETAG}, STORED, WHOLE, id="if-match-same-200"),
    pytest.param("GET", {b"if-unmodified-since": EARLIER}, STORED, FAILED, id="ius-earlier-412"),
    pytest.param(
        "GET",
        {b"if-match": '"v0"', b"range": b"bytes=0-9"},
        STORED,
        FAILED,
        id="preconditions-before-range",
    ),
    pytest.param(
        "GET",
        {b"if-none-match": ETAG, b"range": b"bytes=5000-"},
        STORED,
        NOT_MODIFIED,
        id="304-before-416",
    ),
    # Range, §14.2, under If-Range, §13.1.5.
    pytest.param("GET", {b"range": b"bytes=0-9"}, STORED, ranged((0, 9)), id="range-first-ten"),
    pytest.param("GET", {b"range": b"bytes=-5"}, STORED, ranged((995, 999)), id="range-suffix"),
    pytest.param(
        "GET", {b"range": b"bytes=990-5000"}, STORED, ranged((990, 999)), id="range-clamped"
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-1,10-19"},
        STORED,
        ranged((0, 1), (10, 19)),
        id="range-multipart",
    ),
    pytest.param(
        "GET", {b"range": b"bytes=0-1,2-3"}, STORED, ranged((0, 3)), id="range-adjacent-merged"
    ),
    pytest.param("GET", {b"range": b"bytes=1000-"}, STORED, UNSATISFIABLE, id="range-past-end"),
    pytest.param("GET", {b"range": b"items=0-9"}, STORED, WHOLE, id="range-unknown-unit"),
    pytest.param("GET", {b"range": b"bytes=9-0"}, STORED, WHOLE, id="range-invalid-ignored"),
    pytest.param(
        "HEAD",
        {b"range": b"bytes=0-9"},
        STORED,
        Plan(200, WHOLE.headers, Body.NONE),
        id="range-not-for-head",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-9", b"if-range": ETAG},
        STORED,
        ranged((0, 9)),
        id="if-range-etag-matches",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-9", b"if-range": '"v0"'},
        STORED,
        WHOLE,
        id="if-range-etag-differs",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-9", b"if-range": IMF},
        STORED,
        ranged((0, 9)),
        id="if-range-date-matches",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=5000-", b"if-range": '"v0"'},
        STORED,
        WHOLE,
        id="if-range-fails-before-416",
    ),
    # What the body's source can do with Range.
    pytest.param(
        "GET",
        {b"range": b"bytes=0-9"},
        ARRIVING,
        Plan(200, [*DESCRIBED, LENGTH], Body.WHOLE),
        id="arriving-ignores-range",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-9"},
        PASSING,
        ranged((0, 9), age=False),
        id="pass-through-one-range",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=0-1,10-19"},
        PASSING,
        Plan(200, [*DESCRIBED, LENGTH], Body.WHOLE),
        id="pass-through-several-ranges-whole",
    ),
    pytest.param(
        "GET",
        {b"range": b"bytes=1000-"},
        PASSING,
        UNSATISFIABLE,
        id="pass-through-416",
    ),
]


@pytest.mark.parametrize(("method", "headers", "representation", "expected"), CASES)
def test_plan(
    method: str, headers: dict[bytes, str | bytes], representation: Representation, expected: Plan
) -> None:
    """Each request is answered by the status, headers and body part of RFC 9110's rules."""
    assert plan(method, encoded(headers), representation, NOW) == expected


EMPTY = rep(size=0)


@pytest.mark.parametrize(
    ("method", "headers", "representation"),
    [
        pytest.param("GET", {b"range": "bytes=0-0"}, EMPTY, id="first-byte"),
        pytest.param("GET", {b"range": "bytes=-1"}, EMPTY, id="suffix"),
        pytest.param("GET", {b"range": "bytes=0-"}, EMPTY, id="open-ended"),
        pytest.param(
            "GET",
            {b"range": "bytes=0-0"},
            rep(size=0, stored=False, ranges=Ranges.ONE),
            id="pass-through",
        ),
    ],
)
def test_range_on_an_empty_object_is_the_empty_200(
    method: str, headers: dict[bytes, str | bytes], representation: Representation
) -> None:
    """A Range on a zero-length object answers 200 with the empty body: no byte range of it
    can be expressed (RFC 9110 §14.1.1), so it is not a 416."""
    planned = plan(method, encoded(headers), representation, NOW)
    assert planned.status == 200 and planned.body is Body.WHOLE
    assert (b"content-length", b"0") in planned.headers


def test_age_never_negative() -> None:
    """A copy stored after ``now`` (clock skew between workers) has Age 0, not a negative."""
    planned = plan("GET", {}, STORED, STORED_AT - 5)
    assert (b"age", b"0") in planned.headers


VARIANT_HEADERS: Headers = [(b"content-type", b"text/html"), (b"etag", b'"v1-gzip"')]
VARIANT = Representation(VARIANT_HEADERS, None, '"v1-gzip"', LAST_MODIFIED, STORED_AT, Ranges.NONE)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, Plan(200, [*VARIANT_HEADERS, AGE], Body.WHOLE), id="no-length-yet"),
        pytest.param(
            {b"if-none-match": '"v1-gzip"'},
            Plan(304, [(b"etag", b'"v1-gzip"')], Body.NONE),
            id="variant-etag-304",
        ),
        pytest.param({b"if-none-match": ETAG}, NOT_MODIFIED, id="identity-etag-304"),
        pytest.param(
            {b"if-none-match": '"v0"'},
            Plan(200, [*VARIANT_HEADERS, AGE], Body.WHOLE),
            id="neither-200",
        ),
        pytest.param(
            {b"range": b"bytes=0-9"},
            Plan(200, [*VARIANT_HEADERS, AGE], Body.WHOLE),
            id="variant-ignores-range",
        ),
    ],
)
def test_variant_plan(headers: dict[bytes, str | bytes], expected: Plan) -> None:
    """A compressed variant (length unknown until made) is valid under its own ETag or the
    identity body's, which the client may hold from an earlier answer."""
    assert plan("GET", encoded(headers), VARIANT, NOW, also_valid=STORED) == expected
