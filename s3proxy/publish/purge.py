"""After a publish, purge the changed and deleted paths from running proxies
(``/_proxy/_private/_cache/clear?path=...`` with the bearer token), so readers get the new
site at once instead of after the TTL.

A proxy serves the published prefix as its root (its own ``--prefix``), so the key
``<prefix>docs/a.html`` is the path ``/docs/a.html``. Past :data:`MAX_PATHS` paths one clear
of the whole cache is cheaper than a request per path. A proxy that cannot be purged is
reported and does not fail the publish: the objects are published, and the proxies catch up
within their TTL.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import quote

#: Paths purged one by one; more than this clear the whole cache.
MAX_PATHS = 100
CLEAR_PATH = "/_proxy/_private/_cache/clear"
TIMEOUT = 10.0


def path_of(key: str, prefix: str) -> str:
    """The URL path a proxy serving ``prefix`` answers ``key`` at."""
    return "/" + key[len(prefix) :]


def requests_for(base: str, paths: list[str], site: str | None = None) -> list[str]:
    """The clear URLs that purge ``paths`` on the proxy at ``base`` (of one site of its sites
    file when ``site`` is given)."""
    root = base.rstrip("/") + CLEAR_PATH
    named = f"site={quote(site, safe='')}" if site else ""
    if len(paths) > MAX_PATHS:
        return [f"{root}?{named}" if named else root]
    return [
        f"{root}?path={quote(path, safe='/')}" + (f"&{named}" if named else "") for path in paths
    ]


def _get(url: str, token: str | None) -> None:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
        response.read()


async def purge_all(
    bases: tuple[str, ...],
    token: str | None,
    paths: list[str],
    say: Callable[[str], None],
    site: str | None = None,
) -> int:
    """Purge ``paths`` (of ``site``, when given) on every proxy; returns how many proxies
    were purged."""
    purged = 0
    for base in bases:
        try:
            for url in requests_for(base, paths, site):
                await asyncio.to_thread(_get, url, token)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            say(f"warning: could not purge {base}: {reason}")
            continue
        purged += 1
    return purged
