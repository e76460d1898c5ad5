"""Helpers of the access tests: a proxy whose site has access rules, credentials."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import bcrypt

from s3proxy.access.gate import Gate
from s3proxy.access.guard import Guard
from s3proxy.access.rules import parse
from tests.servers import ProxyServer


def guard(proxy: ProxyServer, tables: list[dict[str, Any]]) -> ProxyServer:
    """Give the proxy's site these ``[[access]]`` rules, as a sites file would."""
    site = proxy.app.resources.site
    gate = Gate.build("default", parse(tables, "test"), "test")
    site.guard = Guard(gate, site.config.prefix, site.config.index_document, site.trusted)
    return proxy


def start_guarded(
    start_proxy: Callable[..., ProxyServer], tables: list[dict[str, Any]], **overrides: Any
) -> ProxyServer:
    return guard(start_proxy(**overrides), tables)


def htpasswd_line(user: str, password: str) -> bytes:
    """A line as ``htpasswd -B`` writes it ($2y$, cost 5)."""
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).replace(b"$2b$", b"$2y$", 1)
    return user.encode() + b":" + digest + b"\n"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}
