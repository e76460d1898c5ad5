"""``run(config)``: prepare the cache directory, then serve with uvicorn (uvloop + httptools,
with the request-head bound of :mod:`s3proxy.protocol`), in-process or as ``--threads``
worker processes."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import asdict
from typing import Any

import uvicorn

from s3proxy import logging as log
from s3proxy.app import (
    WORKER_CONFIG_ENV,
    App,
    configure_logging,
    create_app_from_environ,
    open_cache,
)
from s3proxy.config import Config, check_environment, default_cache_dir
from s3proxy.exceptions import ConfigError
from s3proxy.protocol import HeaderLimitProtocol
from s3proxy.sinks import factory as sinks

_logger = log.get_logger("s3proxy.server")


def prepare(config: Config) -> None:
    """Startup checks and cleanup, once, before any worker starts: the cache dir must be
    writable; files a crash left half-written are removed."""
    check_environment(config)
    try:
        configure_logging(config.logs)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot write logs to {config.logs.log_dir}: {exc}") from None
    sinks.prepare(config.sinks, config.cache.cache_dir)
    cache = open_cache(config.cache, config.origin.bucket)
    try:
        removed = cache.remove_leftovers()
        cache.recount()
    finally:
        cache.close()
    settings = {name: value for part in asdict(config).values() for name, value in part.items()}
    _logger.info("starting", removed_leftovers=removed, **log.redact(settings))


def run(config: Config) -> None:
    prepare(config)
    options: dict[str, Any] = {
        "host": config.process.host,
        "port": config.process.port,
        "loop": "uvloop",
        # httptools, with heads over --max-header-size refused (431); workers import it by
        # name and set its bound in worker_app.
        "http": HeaderLimitProtocol,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
    }
    workers = config.process.threads
    if workers > 1:
        os.environ[WORKER_CONFIG_ENV] = config.to_json()
        uvicorn.run("s3proxy.server:worker_app", factory=True, workers=workers, **options)
    else:
        HeaderLimitProtocol.limit = config.process.max_header_size
        uvicorn.run(App(config), **options)
    log.flush()


def worker_app() -> App:
    """What each ``--threads`` worker process serves, called by uvicorn (by name) before the
    worker listens: the app for the settings the parent left in the environment, and the
    request-head bound for the connections this process will accept."""
    app = create_app_from_environ()
    HeaderLimitProtocol.limit = app.config.process.max_header_size
    return app


def run_demo(params: dict[str, Any]) -> None:
    """Start the local S3 emulator with the sample site and serve it."""
    from s3proxy.cli import build_config
    from s3proxy.demo import instructions, run_demo_origin

    # The emulator needs no AWS settings, and a profile that does not exist breaks moto.
    os.environ.pop("AWS_PROFILE", None)
    with run_demo_origin() as origin, tempfile.TemporaryDirectory(prefix="s3proxy-demo-") as tmp:
        params = {**params, "bucket": origin.bucket}
        config = build_config(params)
        config = config.replace(
            endpoint_url=origin.endpoint_url,
            region=origin.region,
            key=origin.key_id,
            secret=origin.secret,
            path_style=True,
            error_document=config.site.error_document or "404.html",
            # A throwaway cache, unless one was asked for: the demo's objects are not yours.
            cache_dir=tmp
            if params.get("cache_dir") == default_cache_dir()
            else config.cache.cache_dir,
            # A random management token, unless one was given, so the API can be tried.
            auth_key=config.process.auth_key or secrets.token_urlsafe(18),
        )
        listen = config.process
        host = "127.0.0.1" if listen.host in ("0.0.0.0", "::") else listen.host
        host = f"[{host}]" if ":" in host else host
        assert listen.auth_key is not None
        print(instructions(f"http://{host}:{listen.port}", listen.auth_key), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            run(config)
