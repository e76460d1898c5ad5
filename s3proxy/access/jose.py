"""JOSE for the OIDC rule, with joserfc (the only module importing it): verify a JWT against
an issuer's key set (RFC 7519 §7.2: signature, ``iss``, ``aud``, ``exp``), and seal or open
the session cookie (a JWE, RFC 7516, ``dir`` + ``A256GCM``: encrypted and authenticated).
No crypto of our own: this module only chooses algorithms and maps joserfc's errors to
:class:`TokenRefused`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OctKey

#: The key that seals cookies (joserfc's type, named here so no other module imports it).
SealingKey = OctKey
#: Signature algorithms accepted from an issuer (never ``none`` nor a shared-secret HMAC,
#: which would let anyone holding the public key set sign).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
_SEAL = {"alg": "dir", "enc": "A256GCM"}
#: Seconds of clock skew allowed between the issuer and us.
LEEWAY = 30


class TokenRefused(Exception):
    """A token or cookie that cannot be trusted; the message is a short reason, never the
    token."""


def key_set(jwks: Mapping[str, Any]) -> KeySet:
    """An issuer's published keys (``jwks_uri``'s document). Raises :class:`TokenRefused`."""
    try:
        return KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise TokenRefused(f"unusable key set: {exc}") from None


def verify_jwt(
    token: str, keys: KeySet, *, issuer: str, audience: str, now: int, nonce: str | None = None
) -> dict[str, Any]:
    """The claims of ``token`` if its signature is one of ``keys``' and ``iss``, ``aud``
    (one of), ``exp`` (and ``nonce``, for an ID token) are as expected at ``now``; raises
    :class:`TokenRefused` naming what failed."""
    try:
        decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
    except (JoseError, ValueError) as exc:
        raise TokenRefused(f"bad token: {exc.__class__.__name__}") from None
    options: dict[str, Any] = {
        "iss": {"essential": True, "value": issuer},
        "aud": {"essential": True, "value": audience},
        "exp": {"essential": True},
    }
    if nonce is not None:
        options["nonce"] = {"essential": True, "value": nonce}
    try:
        jwt.JWTClaimsRegistry(now=now, leeway=LEEWAY, **options).validate(decoded.claims)
    except JoseError as exc:
        raise TokenRefused(f"token claims refused: {exc.description or exc.error}") from None
    return dict(decoded.claims)


def sealing_key(secret: bytes, purpose: str) -> SealingKey:
    """A 256-bit key for ``purpose`` from an operator's secret (HMAC-SHA256 as HKDF's extract
    step, RFC 5869 §2.2), so one secret never keys two things."""
    return OctKey.import_key(hmac.new(secret, purpose.encode(), hashlib.sha256).digest())


def seal(claims: Mapping[str, Any], key: OctKey) -> str:
    """``claims`` as a compact JWE only ``key`` opens (and no one can alter)."""
    plaintext = json.dumps(claims, separators=(",", ":")).encode()
    return jwe.encrypt_compact(_SEAL, plaintext, key)


def unseal(token: str, key: OctKey) -> dict[str, Any]:
    """What :func:`seal` sealed; raises :class:`TokenRefused` for anything else."""
    try:
        plaintext = jwe.decrypt_compact(token, key, algorithms=["dir", "A256GCM"]).plaintext
        claims = json.loads(plaintext or b"")
    except (JoseError, ValueError, TypeError) as exc:
        raise TokenRefused(f"bad cookie: {exc.__class__.__name__}") from None
    if not isinstance(claims, dict):
        raise TokenRefused("bad cookie: not an object")
    return claims
