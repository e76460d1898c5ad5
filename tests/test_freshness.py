"""How long a stored copy is fresh: ``--ttl``, or the object's own Cache-Control/Expires."""

from __future__ import annotations

import pytest

from s3proxy.conditional import format_http_date
from s3proxy.freshness import MAX_DELTA, StaleWindows, lifetime, parse_cache_control, stale_windows
from s3proxy.meta import ObjectMeta

NOW = 1_700_000_000.0
TTL = 300


def meta(cache_control: str | None = None, expires: str | None = None) -> ObjectMeta:
    return ObjectMeta(size=1, cache_control=cache_control, expires=expires)


@pytest.mark.parametrize(
    ("cache_control", "expires", "seconds"),
    [
        pytest.param(None, None, TTL, id="nothing-ttl"),
        pytest.param("max-age=60", None, 60, id="max-age"),
        pytest.param("public, max-age=60", None, 60, id="max-age-in-list"),
        pytest.param("Max-Age=60", None, 60, id="names-case-insensitive"),
        pytest.param('max-age="60"', None, 60, id="quoted-argument"),
        pytest.param("max-age=60, s-maxage=5", None, 5, id="s-maxage-wins"),
        pytest.param("s-maxage=0, max-age=600", None, 0, id="s-maxage-zero"),
        pytest.param("max-age=0", None, 0, id="max-age-zero"),
        pytest.param("max-age=60, max-age=120", None, 0, id="twice-is-stale"),
        pytest.param("max-age=soon", None, 0, id="invalid-is-stale"),
        pytest.param("max-age=-5", None, 0, id="negative-is-stale"),
        pytest.param("max-age", None, 0, id="no-argument-is-stale"),
        pytest.param("max-age=99999999999", None, MAX_DELTA, id="huge-capped"),
        pytest.param("no-cache", None, 0, id="no-cache"),
        pytest.param("max-age=60, no-store", None, 0, id="no-store"),
        pytest.param("private, max-age=60", None, 0, id="private"),
        pytest.param("public", format_http_date(NOW + 90), 90, id="expires"),
        pytest.param("max-age=60", format_http_date(NOW + 90), 60, id="max-age-over-expires"),
        pytest.param(None, format_http_date(NOW - 90), 0, id="expires-past"),
        pytest.param(None, "0", 0, id="expires-invalid"),
        pytest.param("immutable", None, TTL, id="other-directives-ttl"),
    ],
)
def test_honoured_headers_decide_the_lifetime(
    cache_control: str | None, expires: str | None, seconds: float
) -> None:
    """With ``--honor-cache-control``: RFC 9111 §4.2.1's order for a shared cache."""
    assert lifetime(meta(cache_control, expires), TTL, NOW, honor=True) == seconds


@pytest.mark.parametrize("cache_control", [None, "max-age=60", "no-cache", "private"])
def test_without_honouring_the_ttl_decides(cache_control: str | None) -> None:
    """By default every object lives ``--ttl``, whatever it says (the original's rule)."""
    assert lifetime(meta(cache_control, format_http_date(NOW + 9)), TTL, NOW, honor=False) == TTL


def test_cache_control_is_parsed_into_directives() -> None:
    """Names lower-cased, arguments unquoted, repeats kept in order, empty parts skipped."""
    assert parse_cache_control(' Public,, MAX-AGE="10" , max-age=20,no-cache') == {
        "public": [None],
        "max-age": ["10", "20"],
        "no-cache": [None],
    }


SWR, SIE = 30, 3600


@pytest.mark.parametrize(
    ("cache_control", "windows"),
    [
        pytest.param(None, (SWR, SIE), id="nothing-options"),
        pytest.param("max-age=60", (SWR, SIE), id="max-age-options"),
        pytest.param("max-age=60, stale-while-revalidate=5", (5, SIE), id="own-swr"),
        pytest.param("max-age=60, stale-if-error=7", (SWR, 7), id="own-sie"),
        pytest.param("stale-while-revalidate=5, stale-if-error=7", (5, 7), id="both-own"),
        pytest.param('Stale-While-Revalidate="5"', (5, SIE), id="case-and-quotes"),
        pytest.param("stale-while-revalidate=0", (0, SIE), id="own-zero-closes"),
        pytest.param("stale-if-error=soon", (SWR, 0), id="invalid-closes"),
        pytest.param("stale-if-error=1, stale-if-error=2", (SWR, 0), id="twice-closes"),
        pytest.param("stale-while-revalidate", (0, SIE), id="no-argument-closes"),
        pytest.param("must-revalidate, stale-if-error=60", (0, 0), id="must-revalidate"),
        pytest.param("proxy-revalidate", (0, 0), id="proxy-revalidate"),
        pytest.param("no-cache, stale-while-revalidate=60", (0, 0), id="no-cache"),
        pytest.param("no-store", (0, 0), id="no-store"),
        pytest.param("private", (0, 0), id="private"),
        pytest.param("s-maxage=60", (0, 0), id="s-maxage-implies-proxy-revalidate"),
        pytest.param("s-maxage=60, stale-if-error=9", (0, 9), id="s-maxage-own-sie"),
    ],
)
def test_honoured_headers_decide_the_stale_windows(
    cache_control: str | None, windows: tuple[int, int]
) -> None:
    """With ``--honor-cache-control``: the object's RFC 5861 extensions replace the options,
    and what forbids serving stale (RFC 9111 §4.2.4) closes both windows."""
    got = stale_windows(meta(cache_control), while_revalidate=SWR, if_error=SIE, honor=True)
    assert got == StaleWindows(*windows)


@pytest.mark.parametrize("cache_control", [None, "stale-if-error=1", "must-revalidate"])
def test_without_honouring_the_options_decide_the_stale_windows(cache_control: str | None) -> None:
    """By default the options set both windows, whatever the object says."""
    got = stale_windows(meta(cache_control), while_revalidate=SWR, if_error=SIE, honor=False)
    assert got == StaleWindows(SWR, SIE)
