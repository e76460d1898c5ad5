"""The OIDC rule's cookies: the session (who logged in, until when) and the login in
progress (state, nonce, PKCE verifier, where to return). Both are sealed by
:mod:`s3proxy.access.jose` (encrypted and authenticated), ``HttpOnly``, ``SameSite=Lax``,
and ``Secure`` when the request came over https.

Opening a session cookie costs a JWE decryption (~50-200 µs): an opened cookie is remembered
until its own expiry, so a protected hit costs one dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3proxy.access.jose import SealingKey, TokenRefused, seal, unseal

SESSION_COOKIE = "s3proxy_session"
LOGIN_COOKIE = "s3proxy_login"
#: Seconds a login may take at the provider.
LOGIN_LIFETIME = 600
#: Opened cookies remembered at most (emptied when full).
MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a session or a bearer token speaks for, by whose word, and until when (Unix
    seconds)."""

    issuer: str
    subject: str
    email: str
    groups: tuple[str, ...]
    expires: int


def cookie(header: bytes | None, name: str) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` header (RFC 6265 §5.4), or ``None``."""
    if not header:
        return None
    wanted = name.encode() + b"="
    for part in header.split(b";"):
        part = part.strip()
        if part.startswith(wanted):
            return part[len(wanted) :].decode("latin-1")
    return None


def set_cookie(name: str, value: str, max_age: int, secure: bool, path: str = "/") -> bytes:
    """A ``Set-Cookie`` value; ``max_age`` 0 removes the cookie (RFC 6265 §4.1)."""
    attributes = f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    return (attributes + "; Secure" if secure else attributes).encode("latin-1")


class Sessions:
    """Seal and open one site's OIDC cookies with its key."""

    def __init__(self, key: SealingKey) -> None:
        self._key = key
        self._opened: dict[str, Identity] = {}

    def make(self, identity: Identity) -> str:
        return seal(
            {
                "iss": identity.issuer,
                "sub": identity.subject,
                "email": identity.email,
                "groups": list(identity.groups),
                "exp": identity.expires,
            },
            self._key,
        )

    def open(self, value: str, now: float) -> Identity | None:
        """The identity in a session cookie, if it is ours and not expired."""
        identity = self._opened.get(value)
        if identity is None:
            try:
                claims = unseal(value, self._key)
                identity = Identity(
                    str(claims["iss"]),
                    str(claims["sub"]),
                    str(claims.get("email", "")),
                    tuple(str(g) for g in claims.get("groups", ())),
                    int(claims["exp"]),
                )
            except (TokenRefused, KeyError, TypeError, ValueError):
                return None
            if len(self._opened) >= MAX_REMEMBERED:
                self._opened.clear()
            self._opened[value] = identity
        return identity if now < identity.expires else None

    def make_login(self, login: dict[str, Any]) -> str:
        return seal(login, self._key)

    def open_login(self, value: str, now: float) -> dict[str, Any] | None:
        """A login in progress (see :mod:`s3proxy.access.oidc`), if ours and recent."""
        try:
            login = unseal(value, self._key)
        except TokenRefused:
            return None
        expires = login.get("exp")
        return login if isinstance(expires, int) and now < expires else None
