"""S3 website hosting's redirects, as pure decisions (no I/O): an object's
``x-amz-website-redirect-location``, a site's ``redirect_all`` (S3's RedirectAllRequestsTo:
the request's path and query kept) and its ``routing_rules`` (S3's RoutingRules, first match
wins; a rule with ``HttpErrorCodeReturnedEquals`` applies once the object's lookup answered
that error, the others before it). Rules match the path under the site's root.

S3 only accepts a redirect location that is a path on the same site (``/new/page``) or an
``http(s)://`` URL; anything else is not honoured here either (the object is served as it
is), so a stray value cannot send visitors to ``//evil.example`` or ``javascript:``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

from s3proxy.keys import percent_decode

#: What a Location may keep as it is: RFC 3986's reserved and unreserved characters and ``%``
#: (an escape already made); everything else (spaces, quotes, non-ASCII) is escaped.
_URI_SAFE = "/:?#[]@!$&'()*+,;=%~"
#: What a path made from a key keeps as it is (RFC 3986's pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=~"
_HTTP_URL = re.compile(r"^https?://[^/?#\\\s]+", re.IGNORECASE)


def object_redirect(value: str) -> bytes | None:
    """The ``Location`` for an object's ``x-amz-website-redirect-location`` ``value``, or
    ``None`` when S3 would not honour it: a path must start with one ``/`` (``//host`` and
    ``/\\host`` name another host), a URL must be ``http://`` or ``https://`` with a host."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return None
    if value.startswith("/"):
        if value.startswith(("//", "/\\")):
            return None
    elif not _HTTP_URL.match(value):
        return None
    return quote(value, safe=_URI_SAFE).encode("ascii")


#: S3's limit on the rules of one website configuration.
MAX_RULES = 50
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_CONDITION = ("KeyPrefixEquals", "HttpErrorCodeReturnedEquals")
_REDIRECT = ("HostName", "Protocol", "ReplaceKeyPrefixWith", "ReplaceKeyWith", "HttpRedirectCode")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_SITE_URL = re.compile(r"^(https?)://([^/?#]+)/?$", re.IGNORECASE)


class RoutingRule(NamedTuple):
    """One of S3's website ``RoutingRules``; ``None`` is a field it leaves out. (A tuple, not
    a dataclass: the config's ``asdict`` and JSON keep it whole, and it is checked again.)"""

    key_prefix: str | None = None  # Condition.KeyPrefixEquals
    error_code: int | None = None  # Condition.HttpErrorCodeReturnedEquals
    protocol: str | None = None  # Redirect.Protocol
    host: str | None = None  # Redirect.HostName
    replace_prefix: str | None = None  # Redirect.ReplaceKeyPrefixWith
    replace_key: str | None = None  # Redirect.ReplaceKeyWith
    code: int = 301  # Redirect.HttpRedirectCode


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where a request goes: ``scheme`` and ``host`` ``None`` keep the request's own, and
    with both ``None`` the ``Location`` is the path alone."""

    code: int
    path: bytes
    scheme: str | None = None
    host: str | None = None

    def location(self, scheme: str, host: bytes | None, query: bytes) -> bytes:
        """The ``Location``: the request's ``scheme`` and ``host`` where the redirect keeps
        them (a host that is not ``name[:port]`` gives the path alone), then the query."""
        out = self.path
        if self.scheme is not None or self.host is not None:
            name = self.host or (host or b"").decode("latin-1")
            if _HOST.match(name):
                out = f"{self.scheme or scheme}://{name}".encode() + out
        return out + b"?" + query if query else out

    def location_in(self, scope: Mapping[str, Any]) -> bytes:
        """The ``Location`` answering the ASGI request ``scope`` (its scheme, Host, query)."""
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        return self.location(scope["scheme"], host, scope["query_string"])


def parse_rules(value: Any) -> tuple[RoutingRule, ...]:
    """Rules in the JSON shape ``aws s3api get-bucket-website`` prints (a list, or a JSON
    text of one, or ``{"RoutingRules": [...]}``). Raises ``ValueError`` with one line that
    names the rule and its key."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if isinstance(value, Mapping) and set(value) == {"RoutingRules"}:
        value = value["RoutingRules"]
    if not isinstance(value, list | tuple):
        raise ValueError('a list of {"Condition": {...}, "Redirect": {...}} rules')
    if len(value) > MAX_RULES:
        raise ValueError(f"{len(value)} rules: S3 allows at most {MAX_RULES}")
    return tuple(_rule(item, n) for n, item in enumerate(value, 1))


def _rule(item: Any, n: int) -> RoutingRule:
    if isinstance(item, RoutingRule):
        return item
    if isinstance(item, list | tuple):  # a rule that went through the config's JSON
        item = _aws(RoutingRule(*item))
    where = f"rule {n}"
    if not isinstance(item, Mapping) or not set(item) <= {"Condition", "Redirect"}:
        raise ValueError(f"{where}: takes Condition and Redirect")
    condition = {}
    if "Condition" in item:  # optional: a rule without one applies to every request
        condition = _table(item["Condition"], _CONDITION, f"{where}: Condition")
    redirect = _table(item.get("Redirect"), _REDIRECT, f"{where}: Redirect")
    error = condition.get("HttpErrorCodeReturnedEquals")
    code = redirect.get("HttpRedirectCode", "301")
    protocol = redirect.get("Protocol")
    host = redirect.get("HostName")
    if error is not None and not (error.isdigit() and 400 <= int(error) <= 599):
        raise ValueError(f"{where}: Condition: HttpErrorCodeReturnedEquals: {error} is not 4xx/5xx")
    if not code.isdigit() or int(code) not in REDIRECT_CODES:
        raise ValueError(f"{where}: Redirect: HttpRedirectCode: {code} is not 301/302/303/307/308")
    if protocol is not None and protocol not in ("http", "https"):
        raise ValueError(f'{where}: Redirect: Protocol: "{protocol}" is not http or https')
    if host is not None and not _HOST.match(host):
        raise ValueError(f'{where}: Redirect: HostName: "{host}" is not a host[:port]')
    if "ReplaceKeyPrefixWith" in redirect and "ReplaceKeyWith" in redirect:
        raise ValueError(
            f"{where}: Redirect: ReplaceKeyPrefixWith and ReplaceKeyWith exclude each other"
        )
    return RoutingRule(
        condition.get("KeyPrefixEquals"),
        None if error is None else int(error),
        protocol,
        host,
        redirect.get("ReplaceKeyPrefixWith"),
        redirect.get("ReplaceKeyWith"),
        int(code),
    )


def _table(value: Any, keys: tuple[str, ...], where: str) -> dict[str, str]:
    """A Condition or Redirect: known keys, one-line strings (numbers as S3 prints them)."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{where}: a table of {', '.join(keys)}")
    out = {}
    for key, item in value.items():
        if key not in keys:
            raise ValueError(f"{where}: {key}: unknown key (known: {', '.join(keys)})")
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        if not isinstance(item, str) or any(ord(c) < 0x20 or c == "\x7f" for c in item):
            raise ValueError(f"{where}: {key}: must be one line of text")
        out[key] = item
    return out


def _aws(rule: RoutingRule) -> dict[str, Any]:
    """``rule`` as ``aws s3api get-bucket-website`` prints it."""
    condition = {"KeyPrefixEquals": rule.key_prefix, "HttpErrorCodeReturnedEquals": rule.error_code}
    redirect = {
        "Protocol": rule.protocol,
        "HostName": rule.host,
        "ReplaceKeyPrefixWith": rule.replace_prefix,
        "ReplaceKeyWith": rule.replace_key,
        "HttpRedirectCode": rule.code,
    }
    out: dict[str, Any] = {"Redirect": {k: v for k, v in redirect.items() if v is not None}}
    if rule.key_prefix is not None or rule.error_code is not None:
        out["Condition"] = {k: v for k, v in condition.items() if v is not None}
    return out


def site_url(value: str) -> tuple[str, str]:
    """``redirect_all``'s ``https://www.example.com`` as (scheme, host). Raises
    ``ValueError``: only a scheme and a host (the request's path and query are kept)."""
    match = _SITE_URL.match(value)
    if match is None or not _HOST.match(match[2]):
        raise ValueError(f'"{value}" is not like https://www.example.com (no path)')
    return match[1].lower(), match[2]


def route(rules: tuple[RoutingRule, ...], key: str, status: int | None) -> Redirect | None:
    """The first rule matching ``key`` (the path under the site's root, decoded, without its
    leading ``/``) and ``status``: ``None`` before the object is looked up (rules with an
    error condition wait for the error), else the error answered."""
    for rule in rules:
        if rule.error_code != status or not key.startswith(rule.key_prefix or ""):
            continue
        if rule.replace_key is not None:
            key = rule.replace_key
        elif rule.replace_prefix is not None:
            key = rule.replace_prefix + key[len(rule.key_prefix or "") :]
        # One leading "/" only: "//host" would leave the site.
        path = quote("/" + key.lstrip("/"), safe=_PATH_SAFE).encode()
        return Redirect(rule.code, path, rule.protocol, rule.host)
    return None


@dataclass(frozen=True, slots=True)
class Website:
    """A site's redirects other than objects': ``redirect_all`` (scheme, host) and its
    routing rules."""

    rules: tuple[RoutingRule, ...]
    redirect_all: tuple[str, str] | None = None

    @classmethod
    def of(cls, redirect_all: str | None, rules: tuple[RoutingRule, ...]) -> Website:
        """The site's redirects (none: :meth:`before` and :meth:`after` answer ``None``)."""
        return cls(rules, None if redirect_all is None else site_url(redirect_all))

    def before(self, raw_path: bytes) -> Redirect | None:
        """The redirect of a request for ``raw_path`` before any object is looked up (a pure
        function of the path: the site remembers it with the path's key)."""
        if self.redirect_all is not None:
            scheme, host = self.redirect_all
            return Redirect(301, quote(raw_path, safe=_PATH_SAFE + "%").encode(), scheme, host)
        return self.after(raw_path, None)

    def after(self, raw_path: bytes, status: int | None) -> Redirect | None:
        """The routing rule's redirect of a request for ``raw_path`` answered ``status`` (the
        site asks after its folder redirect and SPA index, before its error document)."""
        if not self.rules:
            return None
        decoded = percent_decode(raw_path)
        try:
            key = decoded.decode("utf-8").removeprefix("/") if decoded is not None else None
        except UnicodeDecodeError:
            key = None
        return None if key is None else route(self.rules, key, status)
