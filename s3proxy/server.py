"""``run(config)``: prepare the cache directory, then serve with uvicorn (uvloop + httptools,
with the strict request heads of :mod:`s3proxy.protocol`), in-process or as ``--threads``
worker processes. Whatever the Config came from (options, the demo) is the CLI's business."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
from dataclasses import asdict
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from s3proxy import logging as log
from s3proxy import protocol, startup
from s3proxy.app import WORKER_CONFIG_ENV, App, configure_logging, create_app_from_environ
from s3proxy.config import Config
from s3proxy.environment import check_environment
from s3proxy.exceptions import ConfigError
from s3proxy.resources import load_sites, open_cache
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
    cache = open_cache(config.cache, config.origin.bucket or "")
    try:
        removed = cache.remove_leftovers()
        cache.recount()
    finally:
        cache.close()
    settings = {name: value for part in asdict(config).values() for name, value in part.items()}
    _logger.info("starting", removed_leftovers=removed, **log.redact(settings))


def run(config: Config) -> None:
    """Prepare, check the bucket and print the start line (see :mod:`s3proxy.startup`), then
    serve until stopped; exit 1 instead with ``--strict-startup`` if S3 will not serve."""
    prepare(config)
    configure_protocol(config)  # here too: a descriptor limit too low fails before serving
    sites = load_sites(config)
    if not startup.announce(config, sites, config.process.threads).ok and (
        config.process.strict_startup
    ):
        log.flush()
        raise SystemExit(1)
    options: dict[str, Any] = {
        "host": config.process.host,
        "port": config.process.port,
        "loop": "uvloop",
        # httptools, strict about request heads; workers import it by name and set its
        # bounds in worker_app.
        "http": protocol.StrictProtocol,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
    }
    workers = config.process.threads
    if workers > 1:
        os.environ[WORKER_CONFIG_ENV] = config.to_json()
        app = "s3proxy.server:worker_app"
        if config.process.sites_file:
            # uvicorn.run's path for workers, with SIGHUP passed on to each worker (each
            # reloads the sites file itself) instead of uvicorn's restart of every worker.
            settings = uvicorn.Config(app, factory=True, workers=workers, **options)
            _Supervisor(settings, sockets=[settings.bind_socket()]).run()
        else:
            uvicorn.run(app, factory=True, workers=workers, **options)
    else:
        uvicorn.run(App(config), **options)
    log.flush()


class _Supervisor(Multiprocess):
    """uvicorn's worker supervisor, but SIGHUP reloads in place (see :mod:`s3proxy.reload`)."""

    def handle_hup(self) -> None:
        _logger.info("sighup_forwarded", workers=len(self.processes))
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)


def worker_app() -> App:
    """What each ``--threads`` worker process serves, called by uvicorn (by name) before the
    worker listens: the app for the settings the parent left in the environment, and the
    protocol's bounds for the connections this process will accept."""
    app = create_app_from_environ()
    configure_protocol(app.config)
    return app


#: Descriptors a process needs besides its client connections: cache files being read and
#: written, pooled S3 connections, the index database, logs, sink pipes.
RESERVED_DESCRIPTORS = 256


def configure_protocol(config: Config) -> None:
    """This process's request-head bounds and connection cap, before it serves (uvicorn
    builds the protocol itself, one per connection: see :mod:`s3proxy.protocol`).

    Raises the soft limit on open descriptors (``ulimit -n``) to fit ``--max-connections``
    plus :data:`RESERVED_DESCRIPTORS`, as far as the hard limit allows; raises
    :class:`~s3proxy.exceptions.ConfigError` if the hard limit is lower, rather than let
    ``accept`` fail with EMFILE under load.
    """
    process = config.process
    strict = protocol.StrictProtocol
    strict.limit, strict.max_fields = process.max_header_size, process.max_header_fields
    strict.header_timeout = process.header_timeout
    strict.max_connections = max_connections = process.max_connections
    need = max_connections + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise ConfigError(
                f"--max-connections {max_connections} needs {need} open files, but this "
                f"process may open at most {hard} (ulimit -Hn): lower --max-connections "
                "or raise the limit"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
