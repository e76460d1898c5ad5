"""Conditional requests (RFC 9110 §13) and byte ranges (§14), decided from metadata alone."""

from __future__ import annotations

import pytest

from s3proxy.conditional import (
    MAX_RANGES,
    ByteRange,
    Outcome,
    RangeDecision,
    RangeKind,
    content_range,
    evaluate_preconditions,
    format_http_date,
    if_range_allows,
    parse_http_date,
    parse_range,
    strong_match,
    weak_match,
)

# Sun, 06 Nov 1994 08:49:37 GMT, the RFC's own example.
EPOCH = 784111777.0
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"
# Some time in 2024, for reading RFC 850 two-digit years.
NOW_2024 = 1_718_000_000.0

PROCEED = Outcome.PROCEED
NOT_MODIFIED = Outcome.NOT_MODIFIED
FAILED = Outcome.PRECONDITION_FAILED


# --- HTTP dates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(IMF, EPOCH, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", EPOCH, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", EPOCH, id="asctime-space-padded-day"),
        pytest.param("Sun Nov 06 08:49:37 1994", EPOCH, id="asctime-two-digit-day"),
        pytest.param(f"  {IMF}\t", EPOCH, id="surrounding-ows"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="epoch-zero"),
        pytest.param("Thu, 29 Feb 2024 12:00:00 GMT", 1709208000.0, id="leap-day"),
        pytest.param("Sat, 31 Dec 2016 23:59:60 GMT", 1483228800.0, id="leap-second"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="zone-not-gmt"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", None, id="numeric-zone"),
        pytest.param("sun, 06 nov 1994 08:49:37 gmt", None, id="case-sensitive"),
        pytest.param("Sun, 6 Nov 1994 08:49:37 GMT", None, id="one-digit-day"),
        pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no-such-day"),
        pytest.param("Sun, 29 Feb 2023 08:49:37 GMT", None, id="not-a-leap-year"),
        pytest.param("Sun, 00 Nov 1994 08:49:37 GMT", None, id="day-zero"),
        pytest.param("Sun, 06 Nov 1994 24:00:00 GMT", None, id="hour-24"),
        pytest.param("Sun, 06 Nov 1994 08:60:00 GMT", None, id="minute-60"),
        pytest.param("Sun, 06 Nov 1994 08:49:61 GMT", None, id="second-61"),
        pytest.param("Sun, 06 Nov 0000 08:49:37 GMT", None, id="year-zero"),
        pytest.param("Sun, 06 Foo 1994 08:49:37 GMT", None, id="unknown-month"),
        pytest.param("Sun, ٠٦ Nov 1994 08:49:37 GMT", None, id="non-ascii-digits"),
        pytest.param("784111777", None, id="epoch-number"),
        pytest.param("", None, id="empty"),
        pytest.param("garbage", None, id="garbage"),
    ],
)
def test_parse_http_date(value: str, expected: float | None) -> None:
    """The three HTTP-date forms parse to epoch seconds; anything else is None, never raises."""
    assert parse_http_date(value, now=NOW_2024) == expected


@pytest.mark.parametrize(
    ("value", "now", "expected_year"),
    [
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", NOW_2024, 1994, id="94-in-2024-is-1994"),
        pytest.param("Monday, 06-Nov-24 08:49:37 GMT", NOW_2024, 2024, id="24-in-2024-is-2024"),
        pytest.param("Thursday, 06-Nov-74 08:49:37 GMT", NOW_2024, 2074, id="50-years-ahead"),
        pytest.param("Friday, 06-Nov-75 08:49:37 GMT", NOW_2024, 1975, id="51-years-ahead"),
    ],
)
def test_rfc850_two_digit_year(value: str, now: float, expected_year: int) -> None:
    """An RFC 850 year more than 50 years in the future means the previous century."""
    parsed = parse_http_date(value, now=now)
    assert parsed is not None
    assert format_http_date(parsed)[12:16] == str(expected_year)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        pytest.param(EPOCH, IMF, id="rfc-example"),
        pytest.param(EPOCH + 0.999, IMF, id="fraction-dropped"),
        pytest.param(0.0, "Thu, 01 Jan 1970 00:00:00 GMT", id="epoch-zero"),
        pytest.param(1709208000.0, "Thu, 29 Feb 2024 12:00:00 GMT", id="leap-day"),
    ],
)
def test_format_http_date(epoch: float, expected: str) -> None:
    """Epoch seconds format as an IMF-fixdate that parses back to the same whole second."""
    assert format_http_date(epoch) == expected
    assert parse_http_date(expected) == float(int(epoch))


# --- Entity-tag comparison ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "strong", "weak"),
    [
        # The table of RFC 9110 §8.8.3.2.
        pytest.param('W/"1"', 'W/"1"', False, True, id="weak-weak"),
        pytest.param('W/"1"', 'W/"2"', False, False, id="weak-weak-different"),
        pytest.param('W/"1"', '"1"', False, True, id="weak-strong"),
        pytest.param('"1"', '"1"', True, True, id="strong-strong"),
        pytest.param('"1"', '"2"', False, False, id="strong-different"),
        pytest.param('""', '""', True, True, id="empty-opaque-tag"),
        pytest.param("1", "1", False, False, id="unquoted"),
        pytest.param('w/"1"', 'w/"1"', False, False, id="lowercase-w-is-malformed"),
        pytest.param('"a b"', '"a b"', False, False, id="space-not-etagc"),
    ],
)
def test_etag_comparison(a: str, b: str, strong: bool, weak: bool) -> None:
    """Strong comparison needs two equal strong tags; weak comparison ignores W/."""
    assert strong_match(a, b) is strong
    assert strong_match(b, a) is strong
    assert weak_match(a, b) is weak
    assert weak_match(b, a) is weak


# --- Preconditions ------------------------------------------------------------------------------

STRONG = '"abc"'
WEAK = 'W/"abc"'


@pytest.mark.parametrize(
    ("etag", "headers", "expected"),
    [
        pytest.param(STRONG, {}, PROCEED, id="no-conditions"),
        # If-Match: strong comparison (§13.1.1).
        pytest.param(STRONG, {"if_match": STRONG}, PROCEED, id="if-match-same"),
        pytest.param(STRONG, {"if_match": '"xyz"'}, FAILED, id="if-match-different"),
        pytest.param(STRONG, {"if_match": '"x", "abc"'}, PROCEED, id="if-match-in-list"),
        pytest.param(STRONG, {"if_match": '"x" ,\t"abc" '}, PROCEED, id="if-match-list-ows"),
        pytest.param(STRONG, {"if_match": '"x", "y"'}, FAILED, id="if-match-not-in-list"),
        pytest.param(STRONG, {"if_match": "*"}, PROCEED, id="if-match-star"),
        pytest.param(None, {"if_match": "*"}, PROCEED, id="if-match-star-without-etag"),
        pytest.param(None, {"if_match": STRONG}, FAILED, id="if-match-without-etag"),
        pytest.param(STRONG, {"if_match": WEAK}, FAILED, id="if-match-weak-tag-never-matches"),
        pytest.param(WEAK, {"if_match": WEAK}, FAILED, id="if-match-weak-etag-never-matches"),
        pytest.param(WEAK, {"if_match": STRONG}, FAILED, id="if-match-weak-etag-strong-tag"),
        pytest.param(STRONG, {"if_match": "abc"}, FAILED, id="if-match-unquoted"),
        pytest.param(STRONG, {"if_match": ""}, FAILED, id="if-match-empty"),
        pytest.param(STRONG, {"if_match": 'junk, "abc"'}, PROCEED, id="if-match-skips-junk"),
        pytest.param(STRONG, {"if_match": '"abc" junk'}, FAILED, id="if-match-trailing-junk"),
        pytest.param('"a,b"', {"if_match": '"x", "a,b"'}, PROCEED, id="if-match-comma-in-tag"),
        pytest.param(STRONG, {"if_match": '"a,b"'}, FAILED, id="if-match-comma-tag-no-split"),
        # If-None-Match: weak comparison (§13.1.2).
        pytest.param(STRONG, {"if_none_match": STRONG}, NOT_MODIFIED, id="inm-same"),
        pytest.param(STRONG, {"if_none_match": '"xyz"'}, PROCEED, id="inm-different"),
        pytest.param(STRONG, {"if_none_match": WEAK}, NOT_MODIFIED, id="inm-weak-tag"),
        pytest.param(WEAK, {"if_none_match": STRONG}, NOT_MODIFIED, id="inm-weak-etag"),
        pytest.param(WEAK, {"if_none_match": WEAK}, NOT_MODIFIED, id="inm-both-weak"),
        pytest.param(STRONG, {"if_none_match": '"x",W/"abc", "y"'}, NOT_MODIFIED, id="inm-in-list"),
        pytest.param(STRONG, {"if_none_match": '"x", "y"'}, PROCEED, id="inm-not-in-list"),
        pytest.param(STRONG, {"if_none_match": "*"}, NOT_MODIFIED, id="inm-star"),
        pytest.param(STRONG, {"if_none_match": " * "}, NOT_MODIFIED, id="inm-star-ows"),
        pytest.param(None, {"if_none_match": "*"}, NOT_MODIFIED, id="inm-star-without-etag"),
        pytest.param(None, {"if_none_match": STRONG}, PROCEED, id="inm-without-etag"),
        pytest.param(STRONG, {"if_none_match": "abc"}, PROCEED, id="inm-unquoted"),
        pytest.param(STRONG, {"if_none_match": ",,"}, PROCEED, id="inm-no-valid-tag"),
        pytest.param(STRONG, {"if_none_match": '"ABC"'}, PROCEED, id="inm-case-sensitive"),
        # If-Match is evaluated before If-None-Match.
        pytest.param(
            STRONG, {"if_match": '"x"', "if_none_match": STRONG}, FAILED, id="if-match-first"
        ),
        pytest.param(
            STRONG, {"if_match": STRONG, "if_none_match": STRONG}, NOT_MODIFIED, id="then-inm"
        ),
    ],
)
def test_entity_tag_preconditions(
    etag: str | None, headers: dict[str, str], expected: Outcome
) -> None:
    """If-Match uses strong and If-None-Match weak comparison, If-Match first (§13.2.2)."""
    assert evaluate_preconditions("GET", etag, EPOCH, **headers) is expected


@pytest.mark.parametrize(
    ("last_modified", "headers", "expected"),
    [
        # If-Modified-Since (§13.1.3): 304 unless modified after the date.
        pytest.param(EPOCH, {"if_modified_since": IMF}, NOT_MODIFIED, id="ims-equal"),
        pytest.param(EPOCH + 0.9, {"if_modified_since": IMF}, NOT_MODIFIED, id="ims-subsecond"),
        pytest.param(EPOCH, {"if_modified_since": AFTER}, NOT_MODIFIED, id="ims-older"),
        pytest.param(EPOCH, {"if_modified_since": BEFORE}, PROCEED, id="ims-newer"),
        pytest.param(
            EPOCH,
            {"if_modified_since": "Sunday, 06-Nov-94 08:49:37 GMT"},
            NOT_MODIFIED,
            id="ims-rfc850",
        ),
        pytest.param(
            EPOCH, {"if_modified_since": "Sun Nov  6 08:49:37 1994"}, NOT_MODIFIED, id="ims-asctime"
        ),
        pytest.param(EPOCH, {"if_modified_since": "yesterday"}, PROCEED, id="ims-invalid-ignored"),
        pytest.param(None, {"if_modified_since": IMF}, PROCEED, id="ims-unknown-last-modified"),
        # If-None-Match wins over If-Modified-Since, whichever way it goes.
        pytest.param(
            EPOCH,
            {"if_none_match": '"xyz"', "if_modified_since": IMF},
            PROCEED,
            id="inm-mismatch-overrides-ims",
        ),
        pytest.param(
            EPOCH,
            {"if_none_match": STRONG, "if_modified_since": BEFORE},
            NOT_MODIFIED,
            id="inm-match-overrides-ims",
        ),
        # If-Unmodified-Since (§13.1.4): 412 if modified after the date.
        pytest.param(EPOCH, {"if_unmodified_since": IMF}, PROCEED, id="ius-equal"),
        pytest.param(EPOCH, {"if_unmodified_since": AFTER}, PROCEED, id="ius-older"),
        pytest.param(EPOCH, {"if_unmodified_since": BEFORE}, FAILED, id="ius-newer"),
        pytest.param(EPOCH + 0.9, {"if_unmodified_since": IMF}, PROCEED, id="ius-subsecond"),
        pytest.param(EPOCH, {"if_unmodified_since": "soon"}, PROCEED, id="ius-invalid-ignored"),
        pytest.param(None, {"if_unmodified_since": BEFORE}, PROCEED, id="ius-unknown-lm"),
        pytest.param(
            EPOCH,
            {"if_match": STRONG, "if_unmodified_since": BEFORE},
            PROCEED,
            id="if-match-overrides-ius",
        ),
        pytest.param(
            EPOCH,
            {"if_unmodified_since": BEFORE, "if_none_match": STRONG},
            FAILED,
            id="ius-before-inm",
        ),
        pytest.param(
            EPOCH,
            {"if_unmodified_since": AFTER, "if_modified_since": IMF},
            NOT_MODIFIED,
            id="ius-passes-then-ims",
        ),
    ],
)
def test_date_preconditions(
    last_modified: float | None, headers: dict[str, str], expected: Outcome
) -> None:
    """Dates compare in whole seconds; invalid dates are ignored; If-None-Match beats IMS."""
    assert evaluate_preconditions("GET", STRONG, last_modified, **headers) is expected


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        pytest.param("HEAD", {"if_none_match": STRONG}, NOT_MODIFIED, id="head-inm"),
        pytest.param("HEAD", {"if_modified_since": IMF}, NOT_MODIFIED, id="head-ims"),
        pytest.param("HEAD", {"if_match": '"x"'}, FAILED, id="head-if-match"),
        pytest.param("POST", {"if_none_match": STRONG}, FAILED, id="unsafe-inm-is-412"),
        pytest.param("POST", {"if_modified_since": IMF}, PROCEED, id="unsafe-ims-ignored"),
    ],
)
def test_preconditions_by_method(method: str, headers: dict[str, str], expected: Outcome) -> None:
    """304 is only for GET/HEAD; other methods get 412 or ignore If-Modified-Since."""
    assert evaluate_preconditions(method, STRONG, EPOCH, **headers) is expected


# --- If-Range -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("if_range", "etag", "last_modified", "expected"),
    [
        pytest.param(None, STRONG, EPOCH, True, id="absent"),
        pytest.param(STRONG, STRONG, EPOCH, True, id="strong-etag-matches"),
        pytest.param(f" {STRONG} ", STRONG, EPOCH, True, id="strong-etag-ows"),
        pytest.param('"xyz"', STRONG, EPOCH, False, id="strong-etag-differs"),
        pytest.param(WEAK, STRONG, EPOCH, False, id="weak-tag-never-matches"),
        pytest.param(WEAK, WEAK, EPOCH, False, id="weak-both-never-match"),
        pytest.param(STRONG, WEAK, EPOCH, False, id="weak-etag-never-matches"),
        pytest.param(STRONG, None, EPOCH, False, id="no-etag"),
        pytest.param(f"{STRONG}, {STRONG}", STRONG, EPOCH, False, id="list-is-invalid"),
        pytest.param(IMF, STRONG, EPOCH, True, id="date-equal"),
        pytest.param(IMF, STRONG, EPOCH + 0.5, True, id="date-equal-subsecond"),
        pytest.param(AFTER, STRONG, EPOCH, False, id="date-later"),
        pytest.param(BEFORE, STRONG, EPOCH, False, id="date-earlier"),
        pytest.param("Sun Nov  6 08:49:37 1994", STRONG, EPOCH, True, id="date-asctime"),
        pytest.param(IMF, STRONG, None, False, id="date-unknown-last-modified"),
        pytest.param("tomorrow", STRONG, EPOCH, False, id="invalid"),
        pytest.param("", STRONG, EPOCH, False, id="empty"),
    ],
)
def test_if_range(
    if_range: str | None, etag: str | None, last_modified: float | None, expected: bool
) -> None:
    """If-Range needs a strong entity-tag match or the exact Last-Modified date (§13.1.5)."""
    assert if_range_allows(if_range, etag, last_modified) is expected


# --- Range --------------------------------------------------------------------------------------


def satisfiable(*ranges: tuple[int, int]) -> RangeDecision:
    return RangeDecision(RangeKind.SATISFIABLE, tuple(ByteRange(s, e) for s, e in ranges))


IGNORE = RangeDecision(RangeKind.IGNORE)
UNSATISFIABLE = RangeDecision(RangeKind.UNSATISFIABLE)
TOO_MANY = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES + 1))
JUST_ENOUGH = "bytes=" + ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES))


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        # Single ranges.
        pytest.param("bytes=0-99", 1000, satisfiable((0, 99)), id="first-100"),
        pytest.param("bytes=0-0", 1000, satisfiable((0, 0)), id="first-byte"),
        pytest.param("bytes=500-", 1000, satisfiable((500, 999)), id="open-ended"),
        pytest.param("bytes=999-", 1000, satisfiable((999, 999)), id="open-ended-last-byte"),
        pytest.param("bytes=-100", 1000, satisfiable((900, 999)), id="suffix"),
        pytest.param("bytes=-5000", 1000, satisfiable((0, 999)), id="suffix-larger-than-file"),
        pytest.param("bytes=-1000", 1000, satisfiable((0, 999)), id="suffix-whole-file"),
        pytest.param("bytes=900-5000", 1000, satisfiable((900, 999)), id="end-clamped"),
        pytest.param("BYTES=0-9", 1000, satisfiable((0, 9)), id="unit-case-insensitive"),
        pytest.param("bytes= 0-9 ", 1000, satisfiable((0, 9)), id="ows-around-spec"),
        pytest.param("bytes=0-9,,", 1000, satisfiable((0, 9)), id="empty-members-ignored"),
        # Unsatisfiable specs are dropped; all unsatisfiable is a 416.
        pytest.param("bytes=1000-", 1000, UNSATISFIABLE, id="start-at-size"),
        pytest.param("bytes=1000-2000", 1000, UNSATISFIABLE, id="start-past-end"),
        pytest.param("bytes=-0", 1000, UNSATISFIABLE, id="suffix-zero"),
        pytest.param("bytes=2000-,-0", 1000, UNSATISFIABLE, id="all-unsatisfiable"),
        pytest.param("bytes=2000-,0-9", 1000, satisfiable((0, 9)), id="unsatisfiable-dropped"),
        # An empty representation has no byte to name.
        pytest.param("bytes=0-", 0, UNSATISFIABLE, id="empty-file-open-ended"),
        pytest.param("bytes=0-0", 0, UNSATISFIABLE, id="empty-file-first-byte"),
        pytest.param("bytes=-10", 0, UNSATISFIABLE, id="empty-file-suffix"),
        pytest.param("bytes=5-1", 0, IGNORE, id="empty-file-invalid"),
        # Several ranges: sorted, overlapping and adjacent ones coalesced.
        pytest.param("bytes=0-9,20-29", 1000, satisfiable((0, 9), (20, 29)), id="two-ranges"),
        pytest.param("bytes=20-29,0-9", 1000, satisfiable((0, 9), (20, 29)), id="sorted"),
        pytest.param("bytes=0-9, 5-19", 1000, satisfiable((0, 19)), id="overlap-coalesced"),
        pytest.param("bytes=0-9,10-19", 1000, satisfiable((0, 19)), id="adjacent-coalesced"),
        pytest.param("bytes=0-9,11-19", 1000, satisfiable((0, 9), (11, 19)), id="gap-kept"),
        pytest.param("bytes=0-99,10-19", 1000, satisfiable((0, 99)), id="contained"),
        pytest.param("bytes=0-0,0-0", 1000, satisfiable((0, 0)), id="duplicate"),
        pytest.param("bytes=-100,0-", 1000, satisfiable((0, 999)), id="suffix-and-open"),
        pytest.param(
            "bytes=50-59,0-9,-10,5-14",
            1000,
            satisfiable((0, 14), (50, 59), (990, 999)),
            id="mixed",
        ),
        pytest.param(
            JUST_ENOUGH,
            1000,
            satisfiable(*((i * 10, i * 10 + 1) for i in range(8))),
            id="max-ranges",
        ),
        pytest.param(TOO_MANY, 1000, IGNORE, id="too-many-ranges"),
        # Anything invalid: the whole 200.
        pytest.param(None, 1000, IGNORE, id="absent"),
        pytest.param("items=0-9", 1000, IGNORE, id="unknown-unit"),
        pytest.param("bytes 0-9", 1000, IGNORE, id="missing-equals"),
        pytest.param("bytes=", 1000, IGNORE, id="empty-spec-list"),
        pytest.param("bytes=,", 1000, IGNORE, id="only-empty-members"),
        pytest.param("bytes=-", 1000, IGNORE, id="lone-dash"),
        pytest.param("bytes=9-0", 1000, IGNORE, id="start-after-end"),
        pytest.param("bytes=0-9,9-0", 1000, IGNORE, id="one-invalid-spec-spoils-all"),
        pytest.param("bytes=a-9", 1000, IGNORE, id="non-digit"),
        pytest.param("bytes=+1-9", 1000, IGNORE, id="signed"),
        pytest.param("bytes=0x10-20", 1000, IGNORE, id="hex"),
        pytest.param("bytes=0-9-", 1000, IGNORE, id="two-dashes"),
        pytest.param("bytes=1 0-20", 1000, IGNORE, id="space-inside-number"),
        pytest.param("bytes=١-٩", 1000, IGNORE, id="non-ascii-digits"),
        pytest.param("bytes=0-9=", 1000, IGNORE, id="second-equals"),
        pytest.param("bytes=0-" + "0" * 1020, 10**6, IGNORE, id="longer-than-1024"),
        pytest.param("garbage", 1000, IGNORE, id="garbage"),
        pytest.param("", 1000, IGNORE, id="empty"),
    ],
)
def test_parse_range(header: str | None, size: int, expected: RangeDecision) -> None:
    """Byte ranges are clamped, sorted and coalesced; bad headers are ignored (§14.1.1, §14.2)."""
    assert parse_range(header, size) == expected


def test_large_positions() -> None:
    """Positions beyond any real file are fine: they clamp or are unsatisfiable, never fail."""
    huge = "9" * 30
    assert parse_range(f"bytes=0-{huge}", 10) == satisfiable((0, 9))
    assert parse_range(f"bytes={huge}-", 10) == UNSATISFIABLE
    assert parse_range(f"bytes=-{huge}", 10) == satisfiable((0, 9))


@pytest.mark.parametrize(
    ("byte_range", "size", "expected"),
    [
        pytest.param(ByteRange(0, 99), 1000, "bytes 0-99/1000", id="first-100"),
        pytest.param(ByteRange(999, 999), 1000, "bytes 999-999/1000", id="last-byte"),
    ],
)
def test_content_range(byte_range: ByteRange, size: int, expected: str) -> None:
    """A 206 part's Content-Range names its inclusive bounds and the complete length (§14.4)."""
    assert content_range(byte_range, size) == expected
    assert byte_range.length == byte_range.end - byte_range.start + 1
