"""Property-based tests (hypothesis): key mapping (:mod:`s3proxy.keys`), Range parsing and
precondition evaluation (:mod:`s3proxy.conditional`) agree with small reference models
written here from the RFCs, on generated inputs rather than chosen ones.

The models are deliberately naive (a regex substitution for percent-decoding, a set of byte
positions for ranges, a split on commas for entity-tag lists), so they share no code and
few ideas with the implementations they check. Runs are derandomized (the same examples
every run, no example database written) so a failure is reproducible and CI is stable.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the dev extra: scripts/test installs it")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from s3proxy.conditional import (  # noqa: E402
    MAX_RANGES,
    ByteRange,
    Outcome,
    RangeDecision,
    RangeKind,
    evaluate_preconditions,
    format_http_date,
    parse_range,
)
from s3proxy.keys import MAX_KEY_BYTES, Key, Rejected, path_to_key  # noqa: E402

settings.register_profile(
    "s3proxy", derandomize=True, database=None, deadline=None, max_examples=100
)
settings.load_profile("s3proxy")


# --- key mapping ----------------------------------------------------------------------------


def model_key(raw: bytes, prefix: str, index_document: str) -> Key | Rejected:
    """The key a raw path names (README "Keys"), or the status that refuses it."""
    if not raw.startswith(b"/"):
        return Rejected(400, "")
    if re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
        return Rejected(400, "")
    # One pass of a substitution cannot decode what it produced: "%2541" is "%41".
    decoded = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), raw)
    if any(byte < 0x20 or byte == 0x7F for byte in decoded):
        return Rejected(400, "")
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(400, "")
    if {".", ".."} & set(path.split("/")):
        return Rejected(400, "")
    name = path[1:]
    index = name == "" or name.endswith("/")
    key = prefix + name + (index_document if index else "")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return Rejected(414, "")
    return Key(key, index)


def _outcome(result: Key | Rejected) -> Key | int:
    """A key, or just the status of a refusal (the reasons are prose)."""
    return result.status if isinstance(result, Rejected) else result


# Paths made of the pieces that matter: separators, dots, escapes (good, bad, of controls,
# of dots and slashes, of UTF-8 and of broken UTF-8), raw UTF-8 and control bytes.
_PATH_PIECES = st.sampled_from(
    [b"/", b"//", b".", b"..", b"a", b"b.c", b"%", b"%2", b"%2e", b"%2E%2e", b"%2F", b"%25",
     b"%41", b"%zz", b"%00", b"%7f", b"%C3%A9", b"%C3", b"%FF", b"\xc3\xa9", b"\xff", b"\x00",
     b"\x1f", b"+", b" ", b"~", b"index.html", b"x" * 300]
)  # fmt: skip
_RAW_PATHS = st.one_of(
    st.lists(_PATH_PIECES, max_size=12).map(lambda pieces: b"/" + b"".join(pieces)),
    st.lists(_PATH_PIECES, max_size=6).map(b"".join),  # may lack the leading slash
    st.binary(max_size=40),
)
_PREFIXES = st.sampled_from(["", "site/", "a/b/"])


@given(_RAW_PATHS, _PREFIXES, st.sampled_from(["index.html", "default.htm"]))
def test_path_to_key_matches_the_model(raw: bytes, prefix: str, index_document: str) -> None:
    """Every raw path maps to the model's key, or is refused with the model's status."""
    got = path_to_key(raw, prefix=prefix, index_document=index_document)
    assert _outcome(got) == _outcome(model_key(raw, prefix, index_document))


_KEY_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(list("/.%+~ ")),
    max_size=40,
)


@given(_KEY_TEXT, _PREFIXES)
def test_any_key_round_trips_through_its_encoded_path(name: str, prefix: str) -> None:
    """A key percent-encoded into a path maps back to itself, byte for byte (decoded once:
    ``%`` stays ``%``), unless it has a dot segment, which no path may name."""
    got = path_to_key(b"/" + quote(name, safe="/").encode("ascii"), prefix=prefix)
    if {".", ".."} & set(("/" + name).split("/")):
        assert got == Rejected(400, "dot segments are not allowed in the path")
    elif len((prefix + name).encode()) + len("index.html") <= MAX_KEY_BYTES:
        index = name == "" or name.endswith("/")
        assert got == Key(prefix + name + ("index.html" if index else ""), index)


@given(_RAW_PATHS, _PREFIXES)
def test_no_accepted_path_escapes_the_prefix(raw: bytes, prefix: str) -> None:
    """Whatever the path, an accepted key lies inside the prefix and has no dot segment."""
    got = path_to_key(raw, prefix=prefix)
    if isinstance(got, Key):
        assert got.key.startswith(prefix)
        assert not {".", ".."} & set(got.key.split("/"))


# --- Range (RFC 9110 §14.1.1, §14.2) ---------------------------------------------------------


def model_range(header: str | None, size: int) -> RangeDecision:
    """The bytes a Range header selects, as a set of positions, then as maximal runs."""
    if header is None or len(header) > 1024:
        return RangeDecision(RangeKind.IGNORE)
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip(" \t").lower() != "bytes":
        return RangeDecision(RangeKind.IGNORE)
    specs = [spec.strip(" \t") for spec in range_set.split(",")]
    specs = [spec for spec in specs if spec]
    if not specs or len(specs) > MAX_RANGES:
        return RangeDecision(RangeKind.IGNORE)
    selected: set[int] = set()
    for spec in specs:
        m = re.fullmatch(r"([0-9]*)-([0-9]*)", spec)
        if m is None or m[1] == m[2] == "" or (m[1] and m[2] and int(m[1]) > int(m[2])):
            return RangeDecision(RangeKind.IGNORE)
        if m[1] == "":  # the last n bytes
            selected |= set(range(max(size - int(m[2]), 0), size))
        else:
            last = size - 1 if m[2] == "" else min(int(m[2]), size - 1)
            selected |= set(range(int(m[1]), last + 1))
    if not selected:
        return RangeDecision(RangeKind.UNSATISFIABLE)
    runs: list[ByteRange] = []
    for position in sorted(selected):
        if runs and runs[-1].end == position - 1:
            runs[-1] = ByteRange(runs[-1].start, position)
        else:
            runs.append(ByteRange(position, position))
    return RangeDecision(RangeKind.SATISFIABLE, tuple(runs))


_NUMBER = st.one_of(st.integers(0, 70).map(str), st.just("99999999999999999999"), st.just(""))
_WS = st.sampled_from(["", " ", "\t", "  "])
_SPEC = st.one_of(
    st.builds(lambda a, b, c, d: f"{a}{b}-{c}{d}", _WS, _NUMBER, _NUMBER, _WS),
    st.sampled_from(["", "x", "1-2-3", "-", "٣-5", "+1-2", "0x1-2"]),
)
_RANGE_HEADERS = st.one_of(
    st.none(),
    st.builds(
        lambda unit, specs: f"{unit}={','.join(specs)}",
        st.sampled_from(["bytes", "BYTES", " bytes ", "items", ""]),
        st.lists(_SPEC, min_size=0, max_size=MAX_RANGES + 2),
    ),
    st.text(max_size=30),
)


# Sizes from 1: a zero-length representation's Range is the endpoint's decision (issue 12).
@given(_RANGE_HEADERS, st.integers(1, 64))
def test_parse_range_matches_the_model(header: str | None, size: int) -> None:
    """Ignored, unsatisfiable, or exactly the model's bytes as sorted, disjoint,
    non-adjacent ranges."""
    assert parse_range(header, size) == model_range(header, size)


# --- preconditions (RFC 9110 §13.1, §13.2.2) ------------------------------------------------

# entity-tag (§8.8.3): etagc is %x21 / %x23-7E / obs-text; the generated tags hold no comma.
_ETAG = re.compile(r'(W/)?"([\x21\x23-\x2b\x2d-\x7e\x80-\xff]*)"')


def model_list_matches(header: str, etag: str | None, *, weak: bool) -> bool:
    """An If-Match / If-None-Match list against the current tag (§13.1.1, §13.1.2): ``*``
    matches any current representation; malformed members are skipped."""
    if header.strip(" \t") == "*":
        return True
    ours = _ETAG.fullmatch(etag) if etag is not None else None
    if ours is None:
        return False
    for member in header.split(","):
        theirs = _ETAG.fullmatch(member.strip(" \t"))
        if theirs is None or theirs[2] != ours[2]:
            continue
        if weak or not (theirs[1] or ours[1]):  # strong comparison: neither may be weak
            return True
    return False


def model_preconditions(
    method: str,
    etag: str | None,
    last_modified: float | None,
    headers: dict[str, str],
    dates: dict[str, int],
) -> Outcome:
    """§13.2.2's order; ``dates`` holds the valid dates of the date headers (invalid ones are
    ignored, §13.1.3, §13.1.4)."""
    modified = None if last_modified is None else int(last_modified)
    if "if-match" in headers:
        if not model_list_matches(headers["if-match"], etag, weak=False):
            return Outcome.PRECONDITION_FAILED
    elif "if-unmodified-since" in dates and modified is not None:
        if modified > dates["if-unmodified-since"]:
            return Outcome.PRECONDITION_FAILED
    safe = method in ("GET", "HEAD")
    if "if-none-match" in headers:
        if model_list_matches(headers["if-none-match"], etag, weak=True):
            return Outcome.NOT_MODIFIED if safe else Outcome.PRECONDITION_FAILED
    elif "if-modified-since" in dates and safe and modified is not None:
        if modified <= dates["if-modified-since"]:
            return Outcome.NOT_MODIFIED
    return Outcome.PROCEED


_BASE = 1_700_000_000
# The representation's tag is well formed, as S3's are; the request's members may not be.
_TAGS = st.sampled_from(['"a"', '"b"', 'W/"a"', 'W/"b"', '""'])
_MEMBERS = st.one_of(_TAGS, st.sampled_from(["a", "*", 'W/"', '"a', "", " ", 'w/"a"', '"a b"']))
_LISTS = st.one_of(
    st.just("*"),
    st.lists(st.tuples(_WS, _MEMBERS, _WS).map("".join), min_size=1, max_size=4).map(",".join),
)
_DATE_OFFSETS = st.one_of(st.integers(-2, 2), st.none())  # None: not a date


@st.composite
def _conditional_requests(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, int]]:
    headers: dict[str, str] = {}
    dates: dict[str, int] = {}
    for name in ("if-match", "if-none-match"):
        if draw(st.booleans()):
            headers[name] = draw(_LISTS)
    for name in ("if-modified-since", "if-unmodified-since"):
        if draw(st.booleans()):
            offset = draw(_DATE_OFFSETS)
            if offset is None:
                headers[name] = draw(st.sampled_from(["yesterday", "", "Sun, 31 Feb 2023"]))
            else:
                dates[name] = _BASE + offset
                headers[name] = format_http_date(_BASE + offset)
    return headers, dates


@given(
    st.sampled_from(["GET", "HEAD", "PUT", "DELETE"]),
    st.one_of(st.none(), _TAGS),
    st.one_of(st.none(), st.sampled_from([_BASE - 1, _BASE, _BASE + 0.5, _BASE + 1])),
    _conditional_requests(),
)
def test_preconditions_match_the_model(
    method: str,
    etag: str | None,
    last_modified: float | None,
    request: tuple[dict[str, str], dict[str, int]],
) -> None:
    """304, 412 or proceed exactly as the model decides, for any mix of the four headers."""
    headers, dates = request
    got = evaluate_preconditions(
        method,
        etag,
        last_modified,
        if_match=headers.get("if-match"),
        if_none_match=headers.get("if-none-match"),
        if_modified_since=headers.get("if-modified-since"),
        if_unmodified_since=headers.get("if-unmodified-since"),
    )
    assert got == model_preconditions(method, etag, last_modified, headers, dates)
