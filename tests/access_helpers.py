"""Helpers of the access tests: a sites file whose site has access rules, credentials."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt

from tests.servers import ProxyServer

#: The site the access tests serve (a signed link names it).
SITE = "docs"


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def sites_file(tables: list[dict[str, Any]], folder: Path | None = None) -> Path:
    """A sites file with one default site, :data:`SITE`, whose access rules are ``tables``
    (its other settings are the command line's)."""
    lines = [f"[sites.{SITE}]", "default = true"]
    for table in tables:
        lines.append(f"[[sites.{SITE}.access]]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in table.items())
    folder = folder or Path(tempfile.mkdtemp(prefix="s3proxy-access-"))
    path = folder / "sites.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def start_guarded(
    start_proxy: Callable[..., ProxyServer], tables: list[dict[str, Any]], **overrides: Any
) -> ProxyServer:
    """s3proxy serving the test's bucket as :data:`SITE`, with these access rules."""
    return start_proxy(sites_file=str(sites_file(tables)), **overrides)


def htpasswd_line(user: str, password: str) -> bytes:
    """A line as ``htpasswd -B`` writes it ($2y$, cost 5)."""
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).replace(b"$2b$", b"$2y$", 1)
    return user.encode() + b":" + digest + b"\n"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}"}
