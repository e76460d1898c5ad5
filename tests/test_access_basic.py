"""Basic auth: htpasswd bcrypt lines, re-read on change, a verified credential remembered;
failed attempts throttled per address."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import bcrypt
import pytest

from s3proxy.access.basic import REMEMBER, Htpasswd, credentials, parse_htpasswd
from s3proxy.access.throttle import Throttle


def _line(user: str, password: str) -> bytes:
    # htpasswd -B writes $2y$ with cost 5
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).replace(b"$2b$", b"$2y$", 1)
    return user.encode() + b":" + digest + b"\n"


def _basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_parse_keeps_bcrypt_lines_only() -> None:
    """Comments and blanks are ignored; MD5/SHA-1/crypt lines are skipped by number."""
    text = b"# users\n\n" + _line("ann", "pw") + b"bob:{SHA}abc\ncarl:$apr1$x$y\n"
    users, skipped = parse_htpasswd(text)
    assert list(users) == ["ann"] and skipped == [4, 5]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_basic("ann", "p:w"), ("ann", b"p:w")),
        (b"basic " + base64.b64encode(b"ann:"), ("ann", b"")),
        (b"Bearer abc", None),
        (b"Basic !!!", None),
        (b"Basic " + base64.b64encode(b"no-colon"), None),
    ],
)
def test_credentials(value: bytes, expected: tuple[str, bytes] | None) -> None:
    """RFC 7617: the scheme is case-insensitive, the password may hold colons."""
    assert credentials(value) == expected


def test_verify_remember_and_reload(tmp_path: Path) -> None:
    """A right password passes (then without bcrypt), a wrong one does not; a changed file is
    re-read and forgets what was remembered."""
    path = tmp_path / "htpasswd"
    path.write_bytes(_line("ann", "right"))
    clock = Clock()
    users = Htpasswd(str(path), clock)
    good = _basic("ann", "right")
    assert users.remembered(good) is None
    assert asyncio.run(users.verify(good)) == "ann"
    assert users.remembered(good) == "ann"
    assert asyncio.run(users.verify(_basic("ann", "wrong"))) is None
    assert asyncio.run(users.verify(_basic("nobody", "right"))) is None
    clock.now += REMEMBER
    assert users.remembered(good) is None  # remembered only briefly
    assert asyncio.run(users.verify(good)) == "ann"
    path.write_bytes(_line("bob", "other") + b"# ann removed, a longer file\n")
    os.utime(path, ns=(1, 1))
    clock.now += 1  # the file is looked at once a second
    assert users.remembered(good) is None
    assert asyncio.run(users.verify(good)) is None
    assert asyncio.run(users.verify(_basic("bob", "other"))) == "bob"


def test_a_missing_file_lets_nobody_in(tmp_path: Path) -> None:
    """Fail closed: no file, no users."""
    users = Htpasswd(str(tmp_path / "absent"))
    assert asyncio.run(users.verify(_basic("ann", "right"))) is None


def test_throttle_counts_failures_per_address_within_a_window() -> None:
    """Past the budget an address waits for its window to end; others are not affected."""
    throttle = Throttle(attempts=3, window=60)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1", 100.0) == 0
        throttle.failed("10.0.0.1", 100.0)
    assert throttle.retry_after("10.0.0.1", 130.0) == 31
    assert throttle.retry_after("10.0.0.2", 130.0) == 0
    assert throttle.retry_after("10.0.0.1", 160.0) == 0
