"""Signed, expiring links: made by one function, checked by another, time passed in."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from s3proxy.access.signed import Refused, link, sign, strip, verify

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000.0


def _split(made: str) -> tuple[str, bytes]:
    path, _, query = made.partition("?")
    return unquote(path), query.encode()


def test_a_link_grants_its_path_until_it_expires() -> None:
    """The link made for a path verifies for that path, and not after its expiry."""
    path, query = _split(link(SECRET, "docs", "/downloads/a b.zip", 3600, NOW))
    assert path == "/downloads/a b.zip"
    assert verify(SECRET, "docs", path, query, NOW + 3599) is None
    assert verify(SECRET, "docs", path, query, NOW + 3600) == Refused("the link has expired")


@pytest.mark.parametrize(
    ("site", "path", "change", "reason"),
    [
        pytest.param("docs", "/downloads/b.zip", None, "altered or is for another", id="path"),
        pytest.param("blog", "/downloads/a.zip", None, "altered or is for another", id="site"),
        pytest.param(
            "docs",
            "/downloads/a.zip",
            (b"s3p_expires=18", b"s3p_expires=19"),
            "altered",
            id="expiry-pushed",
        ),
        pytest.param(
            "docs", "/downloads/a.zip", (b"s3p_sig=", b"s3p_sig=A"), "altered", id="signature"
        ),
        pytest.param("docs", "/downloads/a.zip", (b"s3p_sig=", b"x="), "needs a signed", id="none"),
        pytest.param(
            "docs",
            "/downloads/a.zip",
            (b"s3p_expires=18", b"s3p_expires=-18"),
            "malformed",
            id="bad-expiry",
        ),
    ],
)
def test_tampered_or_foreign_links_are_refused(
    site: str, path: str, change: tuple[bytes, bytes] | None, reason: str
) -> None:
    """Another path, another site, a moved expiry or a changed signature: refused, with why."""
    _, query = _split(link(SECRET, "docs", "/downloads/a.zip", 3600, NOW))
    if change is not None:
        query = query.replace(*change)
    refused = verify(SECRET, site, path, query, NOW)
    assert isinstance(refused, Refused) and reason in refused.reason


def test_another_secret_signs_other_links() -> None:
    """A link signed with another key does not verify."""
    path, query = _split(link(b"another-secret-of-32-bytes......", "docs", "/d/a", 60, NOW))
    assert isinstance(verify(SECRET, "docs", path, query, NOW), Refused)


def test_a_prefix_link_grants_everything_under_its_folder() -> None:
    """``--prefix``: every path below the folder, nothing beside it."""
    _, query = _split(link(SECRET, "docs", "/downloads/2024/", 60, NOW, prefix=True))
    assert verify(SECRET, "docs", "/downloads/2024/x/y.iso", query, NOW) is None
    assert verify(SECRET, "docs", "/downloads/2024/", query, NOW) is None
    refused = verify(SECRET, "docs", "/downloads/2025/y.iso", query, NOW)
    assert refused == Refused("the link is for another path")
    moved = query.replace(b"s3p_prefix=%2Fdownloads%2F2024%2F", b"s3p_prefix=%2Fdownloads%2F")
    assert isinstance(verify(SECRET, "docs", "/downloads/2025/y.iso", moved, NOW), Refused)


def test_a_prefix_must_be_a_folder() -> None:
    """A prefix without its trailing slash would also grant its sibling ``/a-secret``."""
    with pytest.raises(ValueError, match="ending in '/'"):
        sign(SECRET, "docs", "/downloads/a", 1, prefix=True)


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        (b"", b""),
        (b"v=1", b"v=1"),
        (b"s3p_expires=1&s3p_sig=abc", b""),
        (b"a=1&s3p_expires=1&b=2&s3p_sig=abc&s3p_prefix=%2F", b"a=1&b=2"),
    ],
)
def test_strip_removes_only_the_link_parameters(query: bytes, kept: bytes) -> None:
    """The link's parameters never travel further than the check."""
    assert strip(query) == kept
