"""Signed, expiring links (``allow = "signed"``): make them, and check one. Pure: the secret
and ``now`` are passed in.

A link's query carries ``s3p_expires`` (Unix seconds), ``s3p_sig`` and, for a link to a whole
folder, ``s3p_prefix``. The signature is HMAC-SHA256 (RFC 2104) over the site's name, whether
it grants a path or a prefix, that path or prefix (decoded, as :mod:`s3proxy.keys` decodes a
request's path) and the expiry, base64url without padding. It is compared in constant time.
The parameters are stripped (:func:`strip`) before anything else reads the query, and a key
never holds the query, so they reach neither S3 nor the cache key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode

EXPIRES = "s3p_expires"
SIGNATURE = "s3p_sig"
PREFIX = "s3p_prefix"
PARAMS = frozenset({EXPIRES, SIGNATURE, PREFIX})
_PARAMS_BYTES = tuple(f"{name}=".encode() for name in PARAMS)


@dataclass(frozen=True, slots=True)
class Refused:
    """The link does not grant the path: answer 403 with ``reason``."""

    reason: str


def _mac(secret: bytes, site: str, scope: str, path: str, expires: int) -> str:
    message = f"{site}\n{scope}\n{path}\n{expires}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(secret: bytes, site: str, path: str, expires: int, *, prefix: bool = False) -> str:
    """The query (without ``?``) that grants ``path`` (a decoded URL path such as
    ``/downloads/a b.zip``), or every path under it with ``prefix``, until ``expires``."""
    if prefix and not path.endswith("/"):
        raise ValueError(f"a prefix link needs a folder path ending in '/': {path!r}")
    scope = "prefix" if prefix else "path"
    params = {EXPIRES: str(expires), SIGNATURE: _mac(secret, site, scope, path, expires)}
    if prefix:
        params[PREFIX] = path
    return urlencode(params, quote_via=quote)


def link(
    secret: bytes, site: str, path: str, expires_in: int, now: float, *, prefix: bool = False
) -> str:
    """``/downloads/a%20b.zip?s3p_expires=...&s3p_sig=...``: a link to ``path`` (decoded)
    valid ``expires_in`` seconds from ``now``, for applications that hand out links."""
    query = sign(secret, site, path, int(now) + expires_in, prefix=prefix)
    return f"{quote(path, safe='/')}?{query}"


def verify(secret: bytes, site: str, path: str, query: bytes, now: float) -> Refused | None:
    """``None`` if ``query`` holds a valid link to ``path`` (the request's decoded path),
    else why not. Never raises on a malformed query."""
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    signature, expires_text = params.get(SIGNATURE), params.get(EXPIRES)
    if signature is None or expires_text is None:
        return Refused("this path needs a signed link")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return Refused("malformed link expiry")
    expires = int(expires_text)
    granted = params.get(PREFIX)
    scope, signed_path = ("prefix", granted) if granted is not None else ("path", path)
    expected = _mac(secret, site, scope, signed_path, expires)
    if not hmac.compare_digest(expected.encode(), signature.encode("latin-1")):
        return Refused("the link was altered or is for another path")
    if granted is not None and not (path.startswith(granted) and granted.endswith("/")):
        return Refused("the link is for another path")
    if now >= expires:
        return Refused("the link has expired")
    return None


def expiry(query: bytes) -> float:
    """The expiry a link's query carries (call after :func:`verify` accepted it)."""
    params = dict(parse_qsl(query.decode("latin-1")))
    return float(params[EXPIRES])


def strip(query: bytes) -> bytes:
    """``query`` without the link's parameters (for anything that reads or forwards it)."""
    if b"s3p_" not in query:
        return query
    kept = [part for part in query.split(b"&") if not part.startswith(_PARAMS_BYTES)]
    return b"&".join(kept)


def strip_url(url: bytes) -> bytes:
    """``url`` (a Referer) with a link's parameters taken out of its query."""
    if b"s3p_" not in url:
        return url
    base, _, query = url.partition(b"?")
    kept = strip(query)
    return base + b"?" + kept if kept else base
