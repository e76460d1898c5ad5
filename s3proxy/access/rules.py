"""Access rules (``[[sites.NAME.access]]``): parse a list of tables into frozen :class:`Rule`
values, and find the rule that decides a path. Pure: no I/O (a secret is named here and read
by :mod:`s3proxy.access.secret` when the site is built).

A rule is matched on the *key path*: ``/`` + the object key below the site's prefix, as
:func:`s3proxy.keys.path_to_key` decoded it exactly once (so ``%2F`` is already ``/``, dot
segments were refused, and a folder request names its index document). The first rule whose
globs match decides; a path no rule matches is public.

Globs are :func:`fnmatch.fnmatchcase` patterns (``*`` also matches ``/``). A protected rule
(basic, oidc, signed) matches *every spelling a store might take for the same object*: the
path as it is, and also with runs of ``/`` collapsed, case folded and Unicode NFC-normalised,
so ``//internal/x`` or ``/Internal/x`` is protected by ``/internal/*`` even on an
S3-compatible store that treats them alike. A public rule matches only the exact path, so it
never opens a spelling the rules after it protect.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from s3proxy.exceptions import ConfigError
from s3proxy.params import parse_size

ALLOWS = ("public", "basic", "oidc", "signed")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SLASHES = re.compile(r"/{2,}")


class RuleError(ConfigError):
    """An access table cannot be used: one line naming the rule and the key."""


@dataclass(frozen=True, slots=True)
class Secret:
    """Where a secret is: an environment variable or a file (never the value itself, so a
    rule can be printed or logged)."""

    env: str | None = None
    file: str | None = None

    def __str__(self) -> str:
        return f"env {self.env}" if self.env is not None else f"file {self.file}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Oidc:
    """An ``allow = "oidc"`` rule's provider and who may pass."""

    issuer: str
    client_id: str
    client_secret: Secret | None = None
    #: Key of the session cookie; without it, derived from ``client_secret``.
    cookie_secret: Secret | None = None
    #: Anyone the provider knows passes when both are empty.
    groups: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    groups_claim: str = "groups"
    email_claim: str = "email"
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    #: Accepted ``aud`` of a bearer JWT (default: ``client_id``).
    audience: str = ""
    #: Seconds a login lasts.
    session_lifetime: int = 8 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ``[[access]]`` table. ``index`` is its place in the file (0-based)."""

    index: int
    paths: tuple[str, ...]
    allow: str
    #: Objects larger than this many bytes answer 307 to a presigned S3 URL.
    presign_over: int | None = None
    realm: str = "restricted"
    htpasswd: str | None = None
    secret: Secret | None = None
    oidc: Oidc | None = None
    _loose: tuple[str, ...] = ()

    @property
    def public(self) -> bool:
        return self.allow == "public"

    def matches(self, path: str, loose: str) -> bool:
        """Whether the rule decides ``path`` (``loose`` is :func:`loosen` of it)."""
        if any(fnmatchcase(path, glob) for glob in self.paths):
            return True
        return not self.public and any(fnmatchcase(loose, glob) for glob in self._loose)


def loosen(path: str) -> str:
    """``path`` as a lenient store might take it: ``/`` runs collapsed, NFC, case folded."""
    return unicodedata.normalize("NFC", _SLASHES.sub("/", path)).casefold()


def first_match(rules: tuple[Rule, ...], path: str) -> Rule | None:
    """The rule that decides ``path`` (a key path: ``/`` + the decoded key below the prefix),
    or ``None``: public."""
    loose = loosen(path)
    for rule in rules:
        if rule.matches(path, loose):
            return rule
    return None


_COMMON = {"paths", "allow", "presign_over"}
_KEYS = {
    "public": _COMMON,
    "basic": _COMMON | {"htpasswd", "realm"},
    "signed": _COMMON | {"secret"},
    "oidc": _COMMON
    | {
        "issuer",
        "client_id",
        "client_secret",
        "cookie_secret",
        "groups",
        "emails",
        "groups_claim",
        "email_claim",
        "scopes",
        "audience",
        "session_lifetime",
    },
}


def parse(tables: Any, where: str) -> tuple[Rule, ...]:
    """The rules of a list of access tables; ``where`` (``docs.toml: site docs``) starts every
    error. Raises :class:`RuleError`."""
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise RuleError(f"{where}: access: must be [[sites.NAME.access]] tables")
    return tuple(_rule(i, table, f"{where}: access[{i}]") for i, table in enumerate(tables))


def _rule(index: int, table: Mapping[str, Any], where: str) -> Rule:
    allow = table.get("allow")
    if allow not in ALLOWS:
        raise RuleError(f"{where}: allow: must be one of {', '.join(ALLOWS)}")
    for key in table:
        if key not in _KEYS[allow]:
            known = ", ".join(sorted(_KEYS[allow]))
            raise RuleError(f"{where}: {key}: unknown key for allow = {allow!r} (known: {known})")
    paths = _globs(table.get("paths"), f"{where}: paths")
    presign = table.get("presign_over")
    rule = Rule(
        index=index,
        paths=paths,
        allow=allow,
        presign_over=None if presign is None else _size(presign, f"{where}: presign_over"),
        _loose=tuple(loosen(glob) for glob in paths),
    )
    if allow == "basic":
        htpasswd = _text(table, "htpasswd", where)
        realm = table.get("realm", "restricted")
        if not isinstance(realm, str) or not realm or any(c in realm for c in '"\\\r\n'):
            raise RuleError(f"{where}: realm: one line of text without quotes or backslashes")
        return replace(rule, htpasswd=htpasswd, realm=realm)
    if allow == "signed":
        return replace(rule, secret=_secret(table, "secret", where, required=True))
    if allow == "oidc":
        return replace(rule, oidc=_oidc(table, where))
    return rule


def _oidc(table: Mapping[str, Any], where: str) -> Oidc:
    issuer = _text(table, "issuer", where)
    if not issuer.startswith(("https://", "http://")):
        raise RuleError(f"{where}: issuer: must be an https:// URL")
    client_secret = _secret(table, "client_secret", where, required=False)
    cookie_secret = _secret(table, "cookie_secret", where, required=False)
    if client_secret is None and cookie_secret is None:
        raise RuleError(f"{where}: cookie_secret: needed when there is no client_secret")
    lifetime = table.get("session_lifetime", "8h")
    scopes = _strings(table, "scopes", where) or ("openid", "email", "profile")
    if "openid" not in scopes:
        raise RuleError(f'{where}: scopes: must include "openid"')
    return Oidc(
        issuer=issuer.rstrip("/"),
        client_id=_text(table, "client_id", where),
        client_secret=client_secret,
        cookie_secret=cookie_secret,
        groups=_strings(table, "groups", where),
        emails=tuple(e.lower() for e in _strings(table, "emails", where)),
        groups_claim=_text(table, "groups_claim", where, "groups"),
        email_claim=_text(table, "email_claim", where, "email"),
        scopes=scopes,
        audience=_text(table, "audience", where, "") or _text(table, "client_id", where),
        session_lifetime=_duration(lifetime, f"{where}: session_lifetime"),
    )


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(p, str) and p.startswith("/") for p in value)
    ):
        raise RuleError(f'{where}: a list of path globs like "/internal/*"')
    return tuple(value)


def _text(table: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if value is None:
        raise RuleError(f"{where}: {key}: missing")
    if not isinstance(value, str) or (default is None and not value):
        raise RuleError(f"{where}: {key}: must be a non-empty string")
    return value


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: {key}: must be a list of strings")
    return tuple(value)


def _secret(table: Mapping[str, Any], key: str, where: str, *, required: bool) -> Secret | None:
    value = table.get(key)
    if value is None:
        if required:
            raise RuleError(f"{where}: {key}: missing (use {{ env = ... }} or {{ file = ... }})")
        return None
    if (
        not isinstance(value, Mapping)
        or len(value) != 1
        or next(iter(value)) not in ("env", "file")
        or not isinstance(next(iter(value.values())), str)
        or not next(iter(value.values()))
    ):
        raise RuleError(
            f'{where}: {key}: must be {{ env = "NAME" }} or {{ file = "/path" }}, never the value'
        )
    return Secret(env=value.get("env"), file=value.get("file"))


def _size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    size = parse_size(value) if isinstance(value, str) else None
    if size is None:
        raise RuleError(f'{where}: "{value}" is not a size: use a byte count or e.g. 100m, 2g')
    return size


def parse_duration(value: Any) -> int | None:
    """Seconds from ``90``, ``"90"``, ``"30m"``, ``"8h"``, ``"1d"``; ``None`` if it is not a
    positive duration."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value > 0 else None
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) == 0:
        return None
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _duration(value: Any, where: str) -> int:
    seconds = parse_duration(value)
    if seconds is None:
        raise RuleError(f'{where}: "{value}" is not a duration: e.g. 3600, 30m, 8h, 1d')
    return seconds
