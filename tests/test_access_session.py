"""The OIDC rule's cookies: sealed (encrypted and authenticated), expiring, with the
attributes RFC 6265 gives them; time passed in."""

from __future__ import annotations

import pytest

from s3proxy.access.jose import SealingKey, sealing_key
from s3proxy.access.session import Identity, Sessions, cookie, set_cookie

NOW = 1_800_000_000
ALICE = Identity("https://login.example", "alice", "alice@example.com", ("staff",), NOW + 60)


def test_a_sealed_session_opens_until_it_expires() -> None:
    """What was sealed opens with the same key, and not once its expiry is past."""
    sessions = Sessions(sealing_key(b"k" * 32, "s3proxy session docs"))
    value = sessions.make(ALICE)
    assert "alice" not in value  # encrypted, not only signed
    assert sessions.open(value, NOW) == ALICE
    assert sessions.open(value, NOW + 60) is None


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(sealing_key(b"k" * 32, "s3proxy session blog"), id="another-site"),
        pytest.param(sealing_key(b"j" * 32, "s3proxy session docs"), id="another-secret"),
    ],
)
def test_another_key_opens_nothing(key: SealingKey) -> None:
    """A cookie sealed for another site or with another secret is no session here."""
    value = Sessions(sealing_key(b"k" * 32, "s3proxy session docs")).make(ALICE)
    assert Sessions(key).open(value, NOW) is None


def test_an_altered_cookie_opens_nothing() -> None:
    """Any changed character of the sealed value fails authentication."""
    sessions = Sessions(sealing_key(b"k" * 32, "s3proxy session docs"))
    value = sessions.make(ALICE)
    for i in (0, len(value) // 2, len(value) - 1):
        changed = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]
        assert sessions.open(changed, NOW) is None
    assert sessions.open("not a cookie", NOW) is None


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (b"a=1; s3proxy_session=xyz; b=2", "xyz"),
        (b"s3proxy_session=xyz", "xyz"),
        (b"xs3proxy_session=xyz", None),
        (b"a=1", None),
        (None, None),
    ],
)
def test_cookie(header: bytes | None, value: str | None) -> None:
    """One cookie's value from a Cookie header (RFC 6265 §5.4), by its exact name."""
    assert cookie(header, "s3proxy_session") == value


def test_set_cookie_attributes() -> None:
    """HttpOnly and SameSite=Lax always; Secure over https; Max-Age 0 removes it."""
    plain = set_cookie("s", "v", 3600, secure=False)
    assert plain == b"s=v; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
    assert set_cookie("s", "v", 3600, secure=True).endswith(b"; Secure")
    assert b"Max-Age=0" in set_cookie("s", "", 0, secure=True, path="/_proxy/auth/")
