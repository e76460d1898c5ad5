"""``allow = "oidc"``: OpenID Connect login (authorization code flow with PKCE, ``state`` and
``nonce``; OpenID Connect Core 1.0 §3.1) and ``Authorization: Bearer <JWT>`` for API clients.
The only module importing :mod:`httpx` and :mod:`authlib`; JOSE is :mod:`.jose`'s.

The provider is found by discovery (``/.well-known/openid-configuration``, fetched at the
first login or bearer token and kept); its key set is fetched then, and again when a token
names a key it does not hold (at most once a minute: a key rotation, not a flood of made-up
``kid`` values). The session cookie carries the subject, email, groups and an expiry; groups
and emails are checked at each request, so a rule's change applies to sessions already open.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from s3proxy import logging as log
from s3proxy.access.jose import TokenRefused, key_set, verify_jwt
from s3proxy.access.rules import Oidc
from s3proxy.access.session import (
    LOGIN_COOKIE,
    LOGIN_LIFETIME,
    SESSION_COOKIE,
    Identity,
    Sessions,
    cookie,
    set_cookie,
)
from s3proxy.access.verdict import BY_AUTHORIZATION, BY_COOKIE, Answer, Asking, Granted, Verdict

CALLBACK = "/_proxy/auth/callback"
LOGOUT = "/_proxy/auth/logout"
#: Seconds between two fetches of the key set for an unknown key.
KEYS_REFRESH = 60.0
#: Bearer tokens and session verdicts remembered at most (emptied when full).
MAX_BEARERS = 4096
#: The longest Cookie field whose verdict is remembered (4096 of them: at most 16 MB).
_JUDGED_FIELD = 4096
_logger = log.get_logger("s3proxy.access")


def _client() -> httpx.AsyncClient:
    """A client for one exchange with the provider: they are rare (discovery and keys once,
    one code per login), so no pool outlives them and a reload leaves nothing to close."""
    return httpx.AsyncClient(timeout=10.0, follow_redirects=False)


class ProviderError(Exception):
    """The provider could not be reached or answered nonsense (-> 502)."""


class Provider:
    """One issuer, as a client of it (``client_id``, ``client_secret``)."""

    def __init__(self, settings: Oidc, client_secret: bytes | None) -> None:
        self.settings = settings
        self._secret = client_secret
        self._metadata: dict[str, Any] | None = None
        self._keys: Any = None
        self._keys_at = -KEYS_REFRESH

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with _client() as http:
                answer = await http.get(url, headers={"accept": "application/json"})
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"{url}: {exc.__class__.__name__}") from None
        if not isinstance(document, dict):
            raise ProviderError(f"{url}: not a JSON object")
        return document

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document (OpenID Connect Discovery 1.0 §4)."""
        if self._metadata is None:
            issuer = self.settings.issuer
            document = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if document.get("issuer", "").rstrip("/") != issuer:  # §4.3
                raise ProviderError(f"discovery names another issuer: {document.get('issuer')}")
            self._metadata = document
        return self._metadata

    async def _key_set(self, refresh: bool) -> Any:
        now = time.monotonic()
        if self._keys is None or (refresh and now - self._keys_at >= KEYS_REFRESH):
            jwks = await self._get_json((await self.metadata())["jwks_uri"])
            try:
                self._keys = key_set(jwks)
            except TokenRefused as exc:
                raise ProviderError(str(exc)) from None
            self._keys_at = now
        return self._keys

    async def verify(self, token: str, now: int, nonce: str | None = None) -> dict[str, Any]:
        """A JWT's claims, checked against the issuer's keys; a failure to verify with the
        keys held is retried once with a fresh key set (rotation)."""
        settings = self.settings
        audience = settings.audience if nonce is None else settings.client_id
        issuer = settings.issuer
        try:
            keys = await self._key_set(False)
            return verify_jwt(token, keys, issuer=issuer, audience=audience, now=now, nonce=nonce)
        except TokenRefused:
            if await self._key_set(True) is keys:
                raise
            return verify_jwt(
                token, self._keys, issuer=issuer, audience=audience, now=now, nonce=nonce
            )

    async def login_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        """Where to send the browser to log in (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
        endpoint = (await self.metadata())["authorization_endpoint"]
        url: str = prepare_grant_uri(
            endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=" ".join(self.settings.scopes),
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return url

    async def redeem(self, code: str, redirect_uri: str, verifier: str) -> str:
        """The ID token for an authorization code (RFC 6749 §4.1.3, client_secret_basic)."""
        endpoint = (await self.metadata())["token_endpoint"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        extra: dict[str, Any] = {}
        if self._secret is None:  # a public client (RFC 6749 §2.1): PKCE is its proof
            form["client_id"] = self.settings.client_id
        else:
            extra["auth"] = httpx.BasicAuth(self.settings.client_id, self._secret.decode())
        try:
            async with _client() as http:
                answer = await http.post(endpoint, data=form, **extra)
            tokens = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"token endpoint: {exc.__class__.__name__}") from None
        if answer.status_code != 200 or not isinstance(tokens, dict):
            error = tokens.get("error") if isinstance(tokens, dict) else None
            raise ProviderError(f"token endpoint answered {answer.status_code} {error or ''}")
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderError("token endpoint sent no id_token")
        return id_token

    def identity(self, claims: dict[str, Any], expires: int) -> Identity:
        settings = self.settings
        groups = claims.get(settings.groups_claim, ())
        if isinstance(groups, str):
            groups = [groups]
        email = claims.get(settings.email_claim, "")
        return Identity(
            settings.issuer,
            str(claims.get("sub", "")),
            email.lower() if isinstance(email, str) else "",
            tuple(str(g) for g in groups) if isinstance(groups, list | tuple) else (),
            expires,
        )


class OidcCheck:
    """An oidc rule's check, and the login, callback and logout pages it serves."""

    def __init__(self, index: int, provider: Provider, sessions: Sessions) -> None:
        self.index = index
        self.provider = provider
        self.settings = provider.settings
        self.sessions = sessions
        self._bearers: dict[str, Identity] = {}
        # session cookie -> (its expiry, this rule's verdict on it)
        self._judged: dict[bytes, tuple[int, Verdict]] = {}  # by the Cookie field

    def allowed(self, identity: Identity) -> bool:
        """Whether the rule's groups or emails admit ``identity`` (anyone, if it names none)."""
        settings = self.settings
        if not settings.groups and not settings.emails:
            return True
        return identity.email in settings.emails or any(
            group in settings.groups for group in identity.groups
        )

    def _judge(self, identity: Identity, granted: Granted) -> Verdict:
        if identity.issuer != self.settings.issuer:  # a session another rule's issuer opened
            return Answer(403, message="Forbidden: log out and in with this path's provider")
        if self.allowed(identity):
            return granted
        return Answer(403, message="Forbidden: your account is not allowed here")

    def quick(
        self, headers: Mapping[bytes, bytes], path: str, query: bytes, now: float
    ) -> Verdict | None:
        """The hit path's check: a session cookie or bearer token already opened."""
        auth = headers.get(b"authorization")
        if auth is not None and auth[:7].lower() == b"bearer ":
            known = self._bearers.get(auth[7:].strip().decode("latin-1"))
            if known is not None and now < known.expires:
                return self._judge(known, BY_AUTHORIZATION)
            return None
        # Remembered by the whole Cookie field: the same bytes hold the same session, and
        # finding the session's cookie in them costs 7k instructions (11% of a hit).
        raw = headers.get(b"cookie")
        if not raw:
            return None
        judged = self._judged.get(raw)
        if judged is not None and now < judged[0]:
            return judged[1]
        value = cookie(raw, SESSION_COOKIE)
        if not value:
            return None
        identity = self.sessions.open(value, now)
        if identity is None:
            return None
        verdict = self._judge(identity, BY_COOKIE)
        if len(self._judged) >= MAX_BEARERS:
            self._judged.clear()
        if len(raw) <= _JUDGED_FIELD:
            self._judged[raw] = (identity.expires, verdict)
        return verdict

    async def decide(self, asking: Asking, now: float) -> Verdict:
        """A bearer token to verify, or the start of a login."""
        auth = asking.authorization
        if auth is not None and auth[:7].lower() == b"bearer ":
            return await self._bearer(auth[7:].strip().decode("latin-1"), now)
        headers = {b"cookie": asking.cookies} if asking.cookies else {}
        verdict = self.quick(headers, asking.path, asking.query, now)
        if verdict is not None:
            return verdict
        return await self._login(asking, now)

    async def _bearer(self, token: str, now: float) -> Verdict:
        try:
            claims = await self.provider.verify(token, int(now))
        except TokenRefused as exc:
            challenge = b'Bearer error="invalid_token"'
            return Answer(401, ((b"www-authenticate", challenge),), f"Unauthorized: {exc}")
        identity = self.provider.identity(claims, int(claims["exp"]))
        if len(self._bearers) >= MAX_BEARERS:
            self._bearers.clear()
        self._bearers[token] = identity
        return self._judge(identity, BY_AUTHORIZATION)

    async def _login(self, asking: Asking, now: float) -> Verdict:
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = await self.provider.login_url(asking.origin + CALLBACK, state, nonce, verifier)
        login = {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "return": asking.target.decode("latin-1"),
            "rule": self.index,
            "exp": int(now) + LOGIN_LIFETIME,
        }
        value = self.sessions.make_login(login)
        started = set_cookie(LOGIN_COOKIE, value, LOGIN_LIFETIME, asking.secure, "/_proxy/auth/")
        return Answer(
            302, ((b"location", url.encode()), (b"set-cookie", started)), "Found: log in first"
        )

    async def callback(self, asking: Asking, login: dict[str, Any], now: float) -> Answer:
        """The provider sent the browser back (RFC 6749 §4.1.2): check ``state``, redeem the
        code, verify the ID token and its ``nonce``, then open the session and go back."""
        params = dict(parse_qsl(asking.query.decode("latin-1")))
        if not hmac.compare_digest(params.get("state", "").encode(), login["state"].encode()):
            return Answer(400, message="Bad Request: this login is not the one in progress")
        if "error" in params:
            return Answer(403, message=f"Forbidden: the provider said {params['error'][:64]}")
        if "code" not in params:
            return Answer(400, message="Bad Request: no authorization code")
        try:
            id_token = await self.provider.redeem(
                params["code"], asking.origin + CALLBACK, login["verifier"]
            )
            claims = await self.provider.verify(id_token, int(now), nonce=login["nonce"])
        except TokenRefused as exc:
            return Answer(403, message=f"Forbidden: {exc}")
        expires = int(now) + self.settings.session_lifetime
        identity = self.provider.identity(claims, expires)
        session = self.sessions.make(identity)
        lifetime = self.settings.session_lifetime
        back = login["return"]
        if not back.startswith("/") or back.startswith(("//", "/\\")):  # a path of this site
            back = "/"
        return Answer(
            302,
            (
                (b"location", back.encode("latin-1")),
                (b"set-cookie", set_cookie(SESSION_COOKIE, session, lifetime, asking.secure)),
                (b"set-cookie", set_cookie(LOGIN_COOKIE, "", 0, asking.secure, "/_proxy/auth/")),
            ),
            "Found",
        )

    async def logout(self, asking: Asking) -> Answer:
        """Forget the session here, then end it at the provider if it offers that."""
        location = "/"
        try:
            end = (await self.provider.metadata()).get("end_session_endpoint")
        except ProviderError:
            end = None
        if isinstance(end, str):
            query = {"client_id": self.settings.client_id, "post_logout_redirect_uri": "/"}
            query["post_logout_redirect_uri"] = asking.origin + "/"
            location = f"{end}?{urlencode(query)}"
        cleared = set_cookie(SESSION_COOKIE, "", 0, asking.secure)
        return Answer(302, ((b"location", location.encode()), (b"set-cookie", cleared)), "Found")
