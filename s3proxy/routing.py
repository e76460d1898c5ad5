"""Pure: which site a request's ``Host`` names.

A host is compared without its port, in lowercase, without a trailing dot (RFC 9110 §7.2:
``Host`` is ``uri-host [ ":" port ]``; RFC 4343: DNS names are case-insensitive; a trailing
dot names the same absolute domain). An exact name wins over a wildcard; ``*.example.com``
matches exactly one label more (``a.example.com``, not ``a.b.example.com`` nor
``example.com``); a request that matches no site goes to the default site, if there is one.

A :class:`Router` is immutable once made (a reload makes a new one and swaps it in whole) and
remembers each raw ``Host`` value it has answered, so that a routed hit costs one dict lookup
however many sites there are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
#: Distinct raw Host values remembered; the memo is emptied when full (a scanner sending
#: random names must not grow memory).
MEMO_SIZE = 4096


def normalize(host: bytes) -> str:
    """``Docs.Example.COM.:8080`` -> ``docs.example.com``; ``[::1]:80`` -> ``[::1]``."""
    text = host.decode("latin-1").strip().lower()
    if text.startswith("["):  # an IPv6 literal: its colons are not a port's
        end = text.find("]")
        return text[: end + 1] if end >= 0 else text
    name, colon, port = text.rpartition(":")
    if colon and port.isdigit():
        text = name
    return text.rstrip(".")


class Router(Generic[T]):
    """Host -> site value (or ``None``: no site, no default)."""

    __slots__ = ("_default", "_exact", "_memo", "_wildcards")

    def __init__(self, claims: Iterable[tuple[str, T]], default: T | None = None) -> None:
        """``claims``: normalised host names (``*.`` for a wildcard) and their sites; a name
        claimed twice is the caller's error to refuse (see :mod:`s3proxy.sitesfile`)."""
        self._exact: dict[str, T] = {}
        self._wildcards: dict[str, T] = {}
        for host, site in claims:
            if host.startswith("*."):
                self._wildcards[host[2:]] = site
            else:
                self._exact[host] = site
        self._default = default
        self._memo: dict[bytes | None, T | None] = {}

    def route(self, host: bytes | None) -> T | None:
        """The site for a raw ``Host`` header value (``None``: no header, the default)."""
        try:
            return self._memo[host]
        except KeyError:
            pass
        site = self._find(normalize(host)) if host else self._default
        memo = self._memo
        if len(memo) >= MEMO_SIZE:
            memo.clear()
        memo[host] = site
        return site

    def _find(self, host: str) -> T | None:
        site = self._exact.get(host)
        if site is not None:
            return site
        _, dot, parent = host.partition(".")
        if dot:
            site = self._wildcards.get(parent)
            if site is not None:
                return site
        return self._default
