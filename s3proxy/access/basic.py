"""``allow = "basic"``: HTTP Basic authentication (RFC 7617) against an htpasswd file of
bcrypt lines, as ``htpasswd -B`` writes them. The only module importing :mod:`bcrypt`.

The file is re-read when its modification time or size changes, looked at no more than once a
second (a ``stat`` per request would cost more than the rest of the check). A credential that
verified is remembered for :data:`REMEMBER` seconds, keyed by the whole ``Authorization``
value, so a protected hit does not pay bcrypt (milliseconds, by design) each time; a change of
the file forgets every one. Checking a new credential runs bcrypt in a thread, off the event
loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from collections.abc import Callable

import bcrypt

from s3proxy import logging as log

#: Seconds a verified credential is trusted without bcrypt.
REMEMBER = 60.0
#: Seconds between two looks at the file.
STAT_INTERVAL = 1.0
#: Credentials remembered at most (emptied when full).
MAX_REMEMBERED = 4096
_BCRYPT = (b"$2a$", b"$2b$", b"$2y$")
#: Checked for a user the file does not have, so an unknown name costs what a known one
#: does (no user enumeration by timing); no password matches it.
_NOBODY = b"$2b$05$6EFKyD5foc4u1tiYxFIxPep1Qee1Ebbo04PI7Ks4nA1.Q6i9nZsr."
_logger = log.get_logger("s3proxy.access")


def parse_htpasswd(text: bytes) -> tuple[dict[str, bytes], list[int]]:
    """``user:$2y$...`` lines -> {user: hash}, and the numbers of lines skipped because they
    hold another kind of hash (MD5, SHA-1, crypt: too weak or unverifiable here). Blank lines
    and ``#`` comments are ignored."""
    users: dict[str, bytes] = {}
    skipped: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        user, sep, digest = line.partition(b":")
        if not sep or not user or not digest.startswith(_BCRYPT):
            skipped.append(number)
            continue
        users[user.decode("utf-8", "replace")] = digest
    return users, skipped


def credentials(authorization: bytes) -> tuple[str, bytes] | None:
    """(user, password) from a ``Basic`` Authorization value, or ``None`` (RFC 7617 §2)."""
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user.decode("utf-8", "replace"), password


class Htpasswd:
    """The users of one htpasswd file, kept current, and who has proved a password lately."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._users: dict[str, bytes] = {}
        #: (mtime, size) of the file as last read; ``None`` when it could not be read.
        self.stamp: tuple[int, int] | None = None
        self._looked = -STAT_INTERVAL
        # Authorization value -> (user, trusted until)
        self._verified: dict[bytes, tuple[str, float]] = {}
        self.load()

    def load(self) -> None:
        """Read the file now. A file that cannot be read lets nobody in (fail closed)."""
        try:
            stat = os.stat(self.path)
            with open(self.path, "rb") as file:
                text = file.read()
        except OSError as exc:
            _logger.error("htpasswd_unreadable", path=self.path, error=exc.strerror)
            self._users, self.stamp = {}, None
        else:
            self._users, skipped = parse_htpasswd(text)
            self.stamp = (stat.st_mtime_ns, stat.st_size)
            if skipped:
                _logger.warning("htpasswd_lines_skipped", path=self.path, lines=skipped)
        self._verified.clear()

    def _refresh(self, now: float) -> None:
        self._looked = now
        try:
            stat = os.stat(self.path)
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = None
        if stamp != self.stamp:
            self.load()

    def remembered(self, authorization: bytes) -> str | None:
        """The user, if this exact credential verified within :data:`REMEMBER` seconds and
        the file has not changed since: the hit path's check, no bcrypt."""
        now = self._clock()
        if now - self._looked >= STAT_INTERVAL:
            self._refresh(now)
        known = self._verified.get(authorization)
        if known is None or known[1] <= now:
            return None
        return known[0]

    async def verify(self, authorization: bytes) -> str | None:
        """The user whose password ``authorization`` carries, or ``None``; bcrypt runs in a
        thread."""
        user = self.remembered(authorization)
        if user is not None:
            return user
        parsed = credentials(authorization)
        if parsed is None:
            return None
        name, password = parsed
        digest = self._users.get(name)
        matched = await asyncio.to_thread(_checkpw, password, digest or _NOBODY)
        if digest is None or not matched:
            return None
        if len(self._verified) >= MAX_REMEMBERED:
            self._verified.clear()
        self._verified[authorization] = (name, self._clock() + REMEMBER)
        return name


def _checkpw(password: bytes, digest: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, digest)
    except ValueError:  # a malformed hash in the file
        return False
