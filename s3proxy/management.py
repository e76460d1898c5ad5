"""``/_proxy/...``: the management API (starlette routes; not on the hit path).

``/_proxy/_private/_cache/clear`` keeps the original proxy's answers — 403 without a token,
400 for a malformed ``Authorization``, 403 for a wrong token, 405 for other methods — but a
successful clear answers 200 with a JSON summary (the original's 304 means "not modified" to
every client and cache in between). With no ``--auth-key`` the API is disabled, never open.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s3proxy import logging as log
from s3proxy import registry
from s3proxy.config import SiteConfig
from s3proxy.exceptions import S3ProxyError
from s3proxy.exchange import Exchange
from s3proxy.keys import Rejected, path_to_key
from s3proxy.listing import cache_keys, folders_above
from s3proxy.record import Network, parse_networks
from s3proxy.resources import Resources
from s3proxy.site import Site
from s3proxy.startup import index_key, probe

CLEAR_PATH = "/_proxy/_private/_cache/clear"
_CLEAR_METHODS = ("GET", "DELETE")
#: Seconds the readiness probe waits for S3.
READY_TIMEOUT = 2.0

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


def management_app(resources: Resources) -> ASGIApp:
    """The ``/_proxy`` routes of one worker, serving with its open ``resources``, each
    request with its request line and ``x-request-id`` (:func:`accounted`)."""
    config = resources.config
    auth_key = config.process.auth_key

    async def clear(request: Request) -> Response:
        if request.method not in _CLEAR_METHODS:
            return PlainTextResponse(
                "Method Not Allowed\n", 405, headers={"allow": ", ".join(_CLEAR_METHODS)}
            )
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        query = parse_qs(request.url.query, keep_blank_values=True)
        names = query.pop("site", None)
        sites = resources.sites()
        if names is not None:
            if len(names) != 1 or names[0] not in sites:
                return PlainTextResponse(f"No site named {names[-1]!r}\n", 404)
            sites = {names[0]: sites[names[0]]}
        rest = urlencode(query, doseq=True)
        if not rest and names is None:
            summary = await asyncio.to_thread(resources.cache.clear)
            _logger.info("cache_cleared", **summary)
            told = await tell_group(resources, [("clear", "")])
            return JSONResponse({"cleared": True, **summary, **told})
        purged: dict[str, dict[str, Any]] = {}
        operations: list[tuple[str, str]] = []
        for name, site in sites.items():
            target = purge_target(rest, site.config)
            if isinstance(target, Rejected):
                return PlainTextResponse(target.reason + "\n", target.status)
            purged[name] = await purge_site(resources, site, target)
            namespace = site.readthrough.namespace
            operations += [(kind, namespace + value) for kind, value in purges(site, target)]
        told = await tell_group(resources, operations)  # cache keys: namespaced
        if len(purged) == 1:
            ((name, result),) = purged.items()
            named = {"site": name} if names else {}
            return JSONResponse({"cleared": True, **result, **named, **told})
        return JSONResponse({"cleared": True, "sites": purged, **told})

    async def stats(request: Request) -> Response:
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        return JSONResponse(await asyncio.to_thread(stats_of, resources))

    async def metrics(request: Request) -> Response:
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        if not config.sinks.prometheus:
            return PlainTextResponse("Prometheus metrics are off (--prometheus true)\n", 404)
        body, content_type = await asyncio.to_thread(metrics_exposition, resources)
        return Response(body, media_type=content_type)

    async def sites_config(request: Request) -> Response:
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        if resources.reloader is None:
            return PlainTextResponse("No sites file (--config): nothing to reload\n", 404)
        return JSONResponse(resources.reloader.status())

    async def sites(request: Request) -> Response:
        denied = check_bearer(request.headers.get("authorization"), auth_key)
        if denied is not None:
            return denied
        name = request.path_params.get("name")
        status, body = await registry.answer(
            resources.registry, request.method, name, request.stream()
        )
        return JSONResponse(body, status)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        problems = await readiness(resources)
        status = 503 if problems else 200
        details: dict[str, Any] = {}
        if resources.group is not None:
            details["group"] = resources.group.status()
        if resources.registry is not None and resources.registry.skipped:
            # registered (in a group: on any instance) but in conflict with this one's file
            details["sites_not_served"] = resources.registry.skipped
        return JSONResponse({"ready": not problems, "problems": problems, **details}, status)

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("Not Found\n", 404)(scope, receive, send)

    every = ["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH"]
    router = Router(
        routes=[
            Route(CLEAR_PATH, clear, methods=every),
            Route(CLEAR_PATH + "/", clear, methods=every),
            Route("/_proxy/_private/_cache/stats", stats, methods=["GET"]),
            Route("/_proxy/_private/metrics", metrics, methods=["GET"]),
            Route("/_proxy/_private/config", sites_config, methods=["GET"]),
            Route("/_proxy/_private/sites", sites, methods=["GET"]),
            Route("/_proxy/_private/sites/{name}", sites, methods=["GET", "PUT", "DELETE"]),
            Route("/_proxy/health", health, methods=["GET", "HEAD"]),
            Route("/_proxy/ready", ready, methods=["GET", "HEAD"]),
        ],
        default=not_found,
    )
    return accounted(router, parse_networks(config.site.trusted_proxies))


def accounted(app: ASGIApp, trusted: tuple[Network, ...]) -> ASGIApp:
    """``app`` with the site's account of each request: the request line (status and body
    bytes as sent; the ``Authorization`` header is never in it) and ``x-request-id`` on the
    answer, by the same :class:`~s3proxy.exchange.Exchange` rules as the site's."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        x = Exchange.begin(scope, send, trusted)

        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                x.status, x.started = message["status"], True
                message["headers"] = [*message.get("headers", ()), *x.common]
            elif message["type"] == "http.response.body":
                x.sent += len(message.get("body", b""))
            await send(message)

        try:
            await app(scope, receive, send_noted)
        except BaseException:
            if not x.started:
                x.status = 500  # what the server answers for us
            raise
        finally:
            x.account(time.perf_counter() - started, trusted)

    return call


async def tell_group(resources: Resources, operations: list[tuple[str, str]]) -> dict[str, Any]:
    """``{"group": ...}``: the other instances told of cache operations applied here, and how
    many acknowledged within a second (``{}`` without ``--redis-url``)."""
    if resources.group is None:
        return {}
    return {"group": await resources.group.invalidated(operations)}


async def purge_site(
    resources: Resources, site: Site, target: tuple[str, str] | None
) -> dict[str, Any]:
    """Drop ``target`` (a key or a prefix; ``None``: everything) of ``site``'s cache entries,
    in every worker; what was dropped, by the keys of the site's bucket."""
    (kind, value), *listings = purges(site, target)
    namespace, cache = site.readthrough.namespace, resources.cache
    dropped = await asyncio.to_thread(cache.purge, **{kind: namespace + value})
    for _, key in listings:
        dropped += await asyncio.to_thread(cache.purge, key=namespace + key)
    _logger.info("cache_purged", site=site.name, **{kind: value}, dropped=len(dropped))
    return {kind: value, "dropped": [key[len(namespace) :] for key in dropped]}


def purges(site: Site, target: tuple[str, str] | None) -> list[tuple[str, str]]:
    """The cache operations that drop ``target`` of ``site`` (``None``: everything), the
    target first: a key, with the listings that show it when the site lists folders (a
    published or deleted object changes its folder's listing and those above)."""
    kind, value = target if target is not None else ("prefix", "")
    if kind != "key" or not site.config.listing:
        return [(kind, value)]
    above = folders_above(value, site.config.prefix)
    return [(kind, value), *(("key", key) for folder in above for key in cache_keys(folder))]


def purge_target(query: str, site: SiteConfig) -> tuple[str, str] | Rejected | None:
    """``?path=/a/b.html`` -> ("key", key); ``?prefix=/docs/`` -> ("prefix", key prefix);
    no query -> ``None`` (clear everything). Paths are mapped exactly as requests are."""
    if not query:
        return None
    params = parse_qs(query, keep_blank_values=True)
    if (
        set(params) - {"path", "prefix"}
        or len(params) != 1
        or len(next(iter(params.values()))) != 1
    ):
        return Rejected(400, "use one of ?path=/some/file or ?prefix=/some/folder/")
    kind, (value,) = next(iter(params.items()))
    if not value.startswith("/"):
        return Rejected(400, f"{kind} must start with /")
    raw = quote(value, safe="/").encode()
    if kind == "path":
        key = path_to_key(raw, prefix=site.prefix, index_document=site.index_document)
        return key if isinstance(key, Rejected) else ("key", key.key)
    mapped = path_to_key(raw + b"x", prefix=site.prefix)
    return mapped if isinstance(mapped, Rejected) else ("prefix", mapped.key[:-1])


def stats_of(resources: Resources) -> dict[str, Any]:
    """This worker's view of the cache and its sinks (blocking: reads the index)."""
    sinks = resources.sinks
    return {
        "worker": os.getpid(),
        "cache": resources.cache.stats(),
        "requests": dict(sum((site.counts for site in resources.sites().values()), Counter())),
        "sinks": sinks.stats() if sinks is not None else {},
    }


def metrics_exposition(resources: Resources) -> tuple[bytes, str]:
    """Prometheus text: every sink process's metric files, plus the cache's size (blocking)."""
    from s3proxy.sinks import prometheus

    stats = resources.cache.stats()
    directory = prometheus.multiprocess_dir(resources.config.cache.cache_dir)
    redis = None if resources.group is None else resources.group.connected
    return prometheus.scrape(directory, stats["disk_entries"], stats["disk_bytes"], redis)


async def readiness(resources: Resources) -> list[str]:
    """What keeps this worker from serving: S3 will not serve a site's index (the startup
    check's verdict, asked again each time; ``site NAME: s3: ...`` with a sites file), the
    cache is not writable, the group's first join is not over (a few milliseconds; Redis
    away ends it too: the instance then serves alone)."""
    sites = resources.sites()
    verdicts = await asyncio.gather(
        *(
            probe(site.readthrough.origin, index_key(site.config), READY_TIMEOUT)
            for site in sites.values()
        )
    )
    named = resources.config.process.sites_file is not None
    problems = [
        f"site {name}: s3: {verdict.reason}" if named else f"s3: {verdict.reason}"
        for name, verdict in zip(sites, verdicts, strict=True)
        if not verdict.ok
    ]
    try:
        await asyncio.to_thread(resources.cache.probe)
    except S3ProxyError as exc:
        problems.append(f"cache: {exc}")
    if resources.group is not None and not resources.group.settled:
        problems.append("group: joining (the group's sites and missed purges not loaded yet)")
    return problems
