"""One site's access rules with their live checks: which rule decides a key path, and
whether a request passes it. Built once per site (:meth:`Gate.build` reads the secrets and the
htpasswd files, so a missing one fails startup); the site calls :meth:`Gate.rule_for` for
every key it is about to serve and, for a protected one, :meth:`Gate.quick` then
:meth:`Gate.decide`.

The hit path of a public path costs one dict lookup (the rule of each path is remembered);
a protected one adds its check's own memo lookup (a remembered Basic credential, an opened
session cookie or bearer token, or one HMAC for a signed link).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from s3proxy.access import signed
from s3proxy.access.basic import Htpasswd
from s3proxy.access.jose import sealing_key
from s3proxy.access.oidc import CALLBACK, LOGOUT, OidcCheck, Provider, ProviderError
from s3proxy.access.rules import Rule, RuleError, first_match
from s3proxy.access.secret import MIN_SECRET_BYTES, reveal
from s3proxy.access.session import LOGIN_COOKIE, Sessions, cookie
from s3proxy.access.throttle import Throttle
from s3proxy.access.verdict import (
    BY_AUTHORIZATION,
    GRANTED,
    Answer,
    Asking,
    Verdict,
)

#: The request's picked headers (lowercase names), as :class:`~s3proxy.exchange.Exchange`
#: holds them.
Headers = Mapping[bytes, bytes]

#: Paths whose rule is remembered; emptied when full.
MEMO_SIZE = 16_384
_NO_RULE = object()


class Check(Protocol):
    def quick(self, headers: Headers, path: str, query: bytes, now: float) -> Verdict | None:
        """The verdict if it needs no waiting (the hit path), else ``None``: from the
        request's picked ``headers``, its key ``path`` and ``query``."""

    async def decide(self, asking: Asking, now: float) -> Verdict:
        """The verdict, doing what :meth:`quick` could not (bcrypt, a provider's keys)."""


class BasicCheck:
    """``allow = "basic"`` (RFC 7617), with failed attempts throttled per address."""

    def __init__(self, rule: Rule, users: Htpasswd, throttle: Throttle) -> None:
        self.users = users
        self.throttle = throttle
        challenge = f'Basic realm="{rule.realm}", charset="UTF-8"'.encode()
        self._challenge = ((b"www-authenticate", challenge),)

    def quick(self, headers: Headers, path: str, query: bytes, now: float) -> Verdict | None:
        auth = headers.get(b"authorization")
        if auth is not None and self.users.remembered(auth) is not None:
            return BY_AUTHORIZATION
        return None

    async def decide(self, asking: Asking, now: float) -> Verdict:
        auth = asking.authorization
        if auth is None:
            return Answer(401, self._challenge, "Unauthorized")
        wait = self.throttle.retry_after(asking.address, now)
        if wait:
            return Answer(429, ((b"retry-after", str(wait).encode()),), "Too Many Requests")
        if await self.users.verify(auth) is not None:
            return BY_AUTHORIZATION
        self.throttle.failed(asking.address, now)
        return Answer(401, self._challenge, "Unauthorized")


class SignedCheck:
    """``allow = "signed"``: the query must hold a valid link to the path. A link that
    verified is remembered with its expiry (the HMAC and query parsing cost ~5x a memo)."""

    def __init__(self, site: str, secret: bytes) -> None:
        self.site = site
        self._secret = secret
        # (path, query) -> the link's expiry
        self._valid: dict[tuple[str, bytes], float] = {}

    def quick(self, headers: Headers, path: str, query: bytes, now: float) -> Verdict | None:
        link = (path, query)
        expires = self._valid.get(link)
        if expires is not None and now < expires:
            return GRANTED
        refused = signed.verify(self._secret, self.site, path, query, now)
        if refused is not None:
            return Answer(403, message=f"Forbidden: {refused.reason}")
        if len(self._valid) >= MEMO_SIZE:
            self._valid.clear()
        self._valid[link] = signed.expiry(query)
        return GRANTED

    async def decide(self, asking: Asking, now: float) -> Verdict:
        verdict = self.quick({}, asking.path, asking.query, now)
        assert verdict is not None
        return verdict


class Gate:
    """The rules of one site and a check for each protected one."""

    def __init__(
        self, rules: tuple[Rule, ...], checks: dict[int, Check], logins: list[OidcCheck]
    ) -> None:
        self.rules = rules
        self.checks = checks
        self.logins = logins
        self._memo: dict[str, object] = {}

    @classmethod
    def build(cls, site: str, rules: tuple[Rule, ...], where: str) -> Gate:
        """Read every rule's secrets and files now. Raises :class:`RuleError`."""
        checks: dict[int, Check] = {}
        logins: list[OidcCheck] = []
        throttle = Throttle()
        sessions: Sessions | None = None  # one key per site: its first oidc rule's
        for rule in rules:
            here = f"{where}: access[{rule.index}]"
            if rule.allow == "basic":
                assert rule.htpasswd is not None
                users = Htpasswd(rule.htpasswd)
                if users.stamp is None:
                    raise RuleError(f"{here}: htpasswd: cannot read {rule.htpasswd}")
                checks[rule.index] = BasicCheck(rule, users, throttle)
            elif rule.allow == "signed":
                assert rule.secret is not None
                secret = reveal(rule.secret, f"{here}: secret", min_bytes=MIN_SECRET_BYTES)
                checks[rule.index] = SignedCheck(site, secret)
            elif rule.allow == "oidc":
                settings = rule.oidc
                assert settings is not None
                client = settings.client_secret
                client_secret = reveal(client, f"{here}: client_secret") if client else None
                keyed = settings.cookie_secret or settings.client_secret
                assert keyed is not None
                key_source = reveal(keyed, f"{here}: cookie_secret", min_bytes=MIN_SECRET_BYTES)
                if sessions is None:
                    sessions = Sessions(sealing_key(key_source, f"s3proxy session {site}"))
                login = OidcCheck(rule.index, Provider(settings, client_secret), sessions)
                checks[rule.index] = login
                logins.append(login)
        return cls(rules, checks, logins)

    def rule_for(self, path: str) -> Rule | None:
        """The protected rule deciding ``path`` (a key path), ``None`` when it is public."""
        rule = self._memo.get(path, _NO_RULE)
        if rule is _NO_RULE:
            found = first_match(self.rules, path)
            rule = None if found is None or found.public else found
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[path] = rule
        assert rule is None or isinstance(rule, Rule)
        return rule

    def quick(
        self, rule: Rule, headers: Headers, path: str, query: bytes, now: float
    ) -> Verdict | None:
        return self.checks[rule.index].quick(headers, path, query, now)

    async def decide(self, rule: Rule, asking: Asking, now: float) -> Verdict:
        try:
            return await self.checks[rule.index].decide(asking, now)
        except ProviderError as exc:
            return Answer(502, message=f"Bad Gateway: the login provider failed ({exc})")

    async def page(self, url_path: str, asking: Asking) -> Answer:
        """``/_proxy/auth/callback`` and ``/_proxy/auth/logout``."""
        now = time.time()
        if not self.logins:
            return Answer(404, message="Not Found")
        try:
            if url_path == LOGOUT:
                return await self.logins[0].logout(asking)
            if url_path != CALLBACK:
                return Answer(404, message="Not Found")
            value = cookie(asking.cookies, LOGIN_COOKIE)
            login = self.logins[0].sessions.open_login(value, now) if value else None
            check = next((c for c in self.logins if login and c.index == login["rule"]), None)
            if login is None or check is None:
                return Answer(400, message="Bad Request: no login in progress here (or it expired)")
            return await check.callback(asking, login, now)
        except ProviderError as exc:
            return Answer(502, message=f"Bad Gateway: the login provider failed ({exc})")
