"""``/_proxy/...``: the management API (starlette routes; not on the hit path).

``/_proxy/_private/_cache/clear`` keeps the original proxy's answers — 403 without a token,
400 for a malformed ``Authorization``, 403 for a wrong token, 405 for other methods — but a
successful clear answers 200 with a JSON summary (the original's 304 means "not modified" to
every client and cache in between). With no ``--auth-key`` the API is disabled, never open.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from s3proxy import logging as log
from s3proxy.cache import Cache

CLEAR_PATH = "/_proxy/_private/_cache/clear"
_CLEAR_METHODS = ("GET", "DELETE")

_logger = log.get_logger("s3proxy.management")


def check_bearer(header: str | None, auth_key: str | None) -> Response | None:
    """``None`` if ``header`` carries the configured token, else the error response.

    The token is compared in constant time (:func:`hmac.compare_digest`)."""
    if auth_key is None:
        return PlainTextResponse("The management API is disabled (no --auth-key)\n", 403)
    if header is None:
        return PlainTextResponse("Forbidden\n", 403)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return PlainTextResponse("Invalid Authorization header\n", 400)
    if not hmac.compare_digest(token.strip().encode(), auth_key.encode()):
        return PlainTextResponse("Forbidden\n", 403)
    return None


def management_app(auth_key: str | None, cache: Callable[[], Cache]) -> Router:
    """The ``/_proxy`` routes. ``cache`` returns the open cache (it exists only after startup)."""

    async def clear(request: Request) -> Response:
        if request.method not in _CLEAR_METHODS:
            return PlainTextResponse(
                "Method Not Allowed\n", 405, headers={"allow": ", ".join(_CLEAR_METHODS)}
            )
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        summary = await asyncio.to_thread(cache().clear)
        _logger.info("cache_cleared", **summary)
        return JSONResponse({"cleared": True, **summary})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("Not Found\n", 404)(scope, receive, send)

    return Router(
        routes=[
            Route(CLEAR_PATH, clear, methods=["GET", "DELETE", "POST", "PUT", "PATCH"]),
            Route(CLEAR_PATH + "/", clear, methods=["GET", "DELETE", "POST", "PUT", "PATCH"]),
            Route("/_proxy/health", health, methods=["GET", "HEAD"]),
        ],
        default=not_found,
    )
