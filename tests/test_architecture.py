"""Each third-party library is imported in one place, so the layers stay what the package
docstrings say they are (the rule httpx keeps for httpcore)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "s3proxy"

# library -> the modules (relative to s3proxy/) allowed to import it
OWNERS = {
    # publish/bucket.py is the write side (put, multipart, delete) of `s3proxy publish`, a
    # separate command: it keeps the serving path's read-only origin.py free of it, and makes
    # each call once, since publish owns its retries and timeouts (transfer.py).
    "aiobotocore": {"origin.py", "publish/bucket.py"},
    # demo.py seeds the emulator with its own synchronous client, before serving starts.
    "botocore": {"origin.py", "demo.py", "publish/bucket.py"},
    # origin.py maps aiobotocore's aiohttp errors (as publish/bucket.py does); the
    # line-protocol sink POSTs with it.
    "aiohttp": {"origin.py", "sinks/influx.py", "publish/bucket.py"},
    "diskcache": {"cache/index.py"},
    "watchfiles": {"reload.py"},
    "structlog": {"logging/__init__.py"},
    "moto": {"demo.py"},
    "boto3": {"demo.py"},
    # protocol.py extends uvicorn's HTTP protocol (the request-head bound); server.py runs it;
    # fastpath.py answers hits in it, as uvicorn would (its status lines, its proxy headers).
    "uvicorn": {"server.py", "protocol.py", "fastpath.py"},
    "starlette": {"management.py"},
    # params.py: click's types for the settings, which config.py checks values with.
    "click": {"cli.py", "params.py", "settings.py"},
    "cloup": {"cli.py"},
    "prometheus_client": {"sinks/prometheus.py"},
    "pymongo": {"sinks/mongo.py"},
    "bson": {"sinks/mongo.py"},
    "maxminddb": {"sinks/geoip.py"},
    "websockets": {"sinks/geoip.py"},
    # --redis-url: a group of instances; group/__init__.py's docstring says why a stream.
    "redis": {"group/bus.py"},
    "bcrypt": {"access/basic.py"},
    # JOSE (tokens, the sealed session cookie) in one module; OAuth and its HTTP in another.
    "joserfc": {"access/jose.py"},
    "authlib": {"access/oidc.py"},
    "httpx": {"access/oidc.py"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_third_party_libraries_stay_in_their_module(path: Path) -> None:
    """A module imports a foreign library only if it is that library's one owner."""
    relative = str(path.relative_to(PACKAGE))
    for library in _imports(path) & OWNERS.keys():
        assert relative in OWNERS[library], f"{relative} imports {library}"


def test_pure_modules_do_no_io() -> None:
    """Decision modules import nothing that does I/O."""
    io = {"os", "socket", "asyncio", "s3proxy"} | OWNERS.keys()
    for name in ("keys.py", "conditional.py", "access/signed.py", "access/throttle.py"):
        assert not (_imports(PACKAGE / name) & io), name


# module -> s3proxy modules it must not import: each would be an edge pointing up the layers
# (cli -> server -> app -> resources/management -> site -> readthrough -> cache/origin).
UPWARD = {
    "server.py": {"s3proxy.cli"},
    "app.py": {"s3proxy.cli", "s3proxy.server"},
    "resources.py": {"s3proxy.cli", "s3proxy.server", "s3proxy.app", "s3proxy.management"},
    "management.py": {"s3proxy.cli", "s3proxy.server", "s3proxy.app"},
    "config.py": {"s3proxy.cli", "s3proxy.server", "s3proxy.app"},
    # the access rules know nothing of the site that applies them
    "access/rules.py": {"s3proxy.site", "s3proxy.app", "s3proxy.access.gate"},
    "access/gate.py": {"s3proxy.site", "s3proxy.app", "s3proxy.exchange"},
}


def _s3proxy_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.startswith("s3proxy.")}


@pytest.mark.parametrize("name", sorted(UPWARD))
def test_no_back_edges(name: str) -> None:
    """Imports point down: no module reaches back into one that builds or runs it."""
    assert not (_s3proxy_imports(PACKAGE / name) & UPWARD[name]), name
