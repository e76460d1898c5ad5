"""Logging: one line per request, app events and the standard library's records (uvicorn's,
botocore's), in one format, buffered; the only package that imports structlog (here) or
configures the standard library's logging.

Events go through structlog's own processors: ``add_log_level``, ``add_logger_name``,
``format_exc_info`` (the traceback, at debug only) and ``JSONRenderer`` or ``ConsoleRenderer``;
stdlib records reach the same chain through ``ProcessorFormatter``'s ``foreign_pre_chain``.
What is ours is what structlog does not ship:

- :mod:`~s3proxy.logging.sink`: the buffer, whole-line writes and the daily ``O_APPEND`` file
  every worker appends to, behind structlog's logger factory;
- :mod:`~s3proxy.logging.lines`: the fixed-shape request line (:func:`request`), written to
  the sink without the processor chain because it is on every request's path;
- three small processors: the ``ts`` field (UTC, milliseconds, shared with the request line),
  ``exc`` ("Type: message") and the order of the first keys.

A line is one JSON object ``{"ts", "level", "event", "logger", **fields}`` (or, with
``log_format="console"``, structlog's key=value console line); JSON lines never contain a
newline, because ``json`` escapes control characters. Exceptions add ``exc`` and, at debug,
``traceback``. With ``log_format="combined"`` the request lines are nginx's combined format in
``s3proxy-YYYY-MM-DD.log``, for tools that read it, and events go as JSON to
``s3proxy-events-YYYY-MM-DD.log`` (nginx's access and error logs).

botocore's and aiobotocore's records below warning are dropped whatever the level: at info
they are chatter ("Found credentials in environment variables"), at debug they hold signed
request headers.

Use :func:`request` for the request line and :func:`get_logger` for app events:
``log.info("cache_cleared", entries=3)``. Event names are snake_case, values go in fields,
never in f-strings. Nothing here logs a secret by itself: log configurations through
:func:`redact`, and keep credentials and ``Authorization`` out of request fields.

Only request lines are buffered; events (ours and the stdlib's) are written at once, together
with any request lines before them, so a supervisor without a lifespan, or a process that
uvicorn ends by re-raising SIGTERM, loses nothing but at most a second of request lines. The
app runs :func:`flush_periodically` as a task in its lifespan and does not call :func:`close`.
:func:`close` undoes :func:`configure` (tests, reconfiguration).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from s3proxy.logging import lines
from s3proxy.logging import sink as _sinks
from s3proxy.logging.lines import Fixed, Who, request, request_id, write, writing
from s3proxy.logging.sink import BUFFER_BYTES, DailyFile, Sink

if TYPE_CHECKING:
    from s3proxy.parts import LogsConfig

__all__ = [
    "BUFFER_BYTES",
    "Fixed",
    "LOG_FORMATS",
    "REDACTED",
    "Who",
    "close",
    "configure",
    "flush",
    "flush_periodically",
    "get_logger",
    "redact",
    "redact_url",
    "request",
    "request_id",
    "write",
    "writing",
]

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    {"auth_key", "secret", "aws_secret_access_key", "authorization", "key", "mongo_uri", "ilp_host"}
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
LOG_FORMATS = ("json", "console", "combined")
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")
_QUIET_LOGGERS = ("botocore", "aiobotocore")
_DEFAULT_LOGGER_NAME = "s3proxy"

# Where events go, and where request lines go (the same sink unless the format is combined).
_sink: Sink | None = None
_request_sink: Sink | None = None
_handler: logging.Handler | None = None


class _SinkLogger:
    """What structlog's logger factory makes: it receives the rendered line and writes it."""

    def __init__(self, name: str) -> None:
        self.name = name  # read by structlog.stdlib.add_logger_name

    def msg(self, line: str) -> None:
        sink = _sink
        if sink is not None:
            sink.write(line)
            sink.flush()  # events are rare: write them now (a process may die by signal)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


def _logger_factory(name: str | None = None, *_: Any) -> _SinkLogger:
    return _SinkLogger(name or _DEFAULT_LOGGER_NAME)


class _SinkHandler(logging.Handler):
    """Hands stdlib records, rendered by structlog's ``ProcessorFormatter``, to the sink."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _sink
        if sink is None:
            return
        try:
            sink.write(self.format(record))
            sink.flush()  # not buffered: uvicorn's last lines come after our lifespan ends
        except Exception:
            self.handleError(record)


def _add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``ts``: when a stdlib record was made, else now; the request line's format."""
    record = event_dict.get("_record")
    now = record.created if record is not None else _sinks.clock()
    event_dict["ts"] = _sinks.timestamps.format(now)
    return event_dict


def _add_exc(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``exc``: "Type: message" of ``exc_info``, which stays for ``format_exc_info``."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        event_dict["exc"] = f"{type(exc_info).__qualname__}: {exc_info}"
    return event_dict


def _drop_exc_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Above debug, ``exc`` is all of the exception a line carries."""
    event_dict.pop("exc_info", None)
    return event_dict


def _head_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """ts, level, event, logger, then the fields in the order given (processors append)."""
    ordered: EventDict = {
        "ts": event_dict.pop("ts"),
        "level": event_dict.pop("level"),
        "event": event_dict.pop("event", ""),
        "logger": event_dict.pop("logger"),
    }
    ordered.update(event_dict)
    return ordered


def _traceback_key(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """JSON calls the traceback ``traceback``; ConsoleRenderer prints ``exception`` below."""
    if "exception" in event_dict:
        event_dict["traceback"] = event_dict.pop("exception")
    return event_dict


def _dumps(event_dict: EventDict, **kw: Any) -> str:
    """json.dumps that never raises into the caller: a non-str key or a circular reference
    degrades the line to strings."""
    try:
        return json.dumps(event_dict, **kw)
    except (TypeError, ValueError):
        return json.dumps({str(k): str(v) for k, v in event_dict.items()}, **kw)


def _processors(json_format: bool, debug: bool) -> tuple[list[Processor], list[Processor]]:
    """(the chain every event and record goes through, the rest of it up to the renderer)."""
    pre_chain: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_timestamp,
        _add_exc,
        structlog.processors.format_exc_info if debug else _drop_exc_info,
    ]
    renderer: Processor
    if json_format:
        # Compact, and default=str: a stray Path or datetime must not break the line.
        renderer = structlog.processors.JSONRenderer(_dumps, separators=(",", ":"), default=str)
        return pre_chain, [_head_first, _traceback_key, renderer]
    renderer = structlog.dev.ConsoleRenderer(
        colors=False, timestamp_key="ts", exception_formatter=structlog.dev.plain_traceback
    )
    return pre_chain, [_head_first, renderer]


def _open_sink(log_dir: str | None, name: str, console: bool, retention_days: int) -> Sink:
    file = DailyFile(log_dir, name, retention_days) if log_dir is not None else None
    if file is not None:
        file.fd(_sinks.clock())  # open now: fail at startup, not at the first flush
    return Sink(file, console)


def configure_from(part: LogsConfig) -> None:
    """:func:`configure` as a process's logging settings say."""
    configure(
        level=part.log_level,
        log_dir=part.log_dir,
        console=part.console,
        log_format=part.log_format,
        retention_days=part.log_retention,
    )


def configure(
    *,
    level: str = "info",
    log_dir: str | None = "logs/",
    console: bool = False,
    log_format: str = "json",
    retention_days: int = 14,
) -> None:
    """Set up the sinks, structlog and stdlib logging; calling it again replaces the setup.

    ``level`` is one of debug/info/warning/error/critical, any case. ``log_dir`` is created
    if missing (with or without a trailing slash); None writes no file. ``console`` echoes
    every line to stdout. ``log_format`` is one of :data:`LOG_FORMATS`. Daily files dated
    more than ``retention_days`` before today are deleted (0 keeps them all).

    Raises ValueError for an unknown level or format and OSError if a log file cannot be
    opened, so a bad setup fails at startup rather than losing lines later.
    """
    global _sink, _request_sink, _handler
    min_level = _LEVELS.get(level.lower())
    if min_level is None:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(_LEVELS)}")
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; expected one of {LOG_FORMATS}")
    combined = log_format == "combined"
    events_name = "s3proxy-events" if combined else "s3proxy"
    events = _open_sink(log_dir, events_name, console, retention_days)
    requests = _open_sink(log_dir, "s3proxy", console, retention_days) if combined else events

    close()
    _sink, _request_sink = events, requests
    json_format = log_format != "console"
    pre_chain, post_chain = _processors(json_format, debug=min_level <= logging.DEBUG)
    renderer = post_chain[-1]
    has_destination = log_dir is not None or console
    lines.install(
        requests if min_level <= logging.INFO and has_destination else None,
        log_format,
        lambda fields: str(renderer(None, "info", fields)),
    )
    structlog.configure(
        processors=[*pre_chain, *post_chain],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=_logger_factory,
        # Module-level loggers must follow a reconfiguration (a new level, a new sink), so
        # loggers are not cached: a few µs per event, fine for app events.
        cache_logger_on_first_use=False,
    )

    _handler = _SinkHandler()
    _handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=pre_chain,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *post_chain],
        )
    )
    root = logging.getLogger()
    root.addHandler(_handler)
    root.setLevel(min_level)
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.setLevel(logging.NOTSET)
        uvicorn_logger.propagate = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(min_level, logging.WARNING))

    # atexit keeps one entry per registration; unregister first so it stays at one.
    atexit.unregister(flush)
    atexit.register(flush)


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger for app events; ``name`` goes in the ``logger`` field."""
    logger: FilteringBoundLogger = structlog.get_logger(name)
    return logger


def _open_sinks() -> list[Sink]:
    return [s for s in {id(s): s for s in (_request_sink, _sink) if s is not None}.values()]


def flush() -> None:
    """Write buffered lines now. Blocks on os.write (page cache: tens of µs for 32 KiB)."""
    for sink in _open_sinks():
        sink.flush()


def close() -> None:
    """Flush, close the files and undo :func:`configure`; a no-op when not configured."""
    global _sink, _request_sink, _handler
    sinks = _open_sinks()
    _sink = _request_sink = None
    lines.install(None, "json")
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    for sink in sinks:
        sink.close()
    if sinks:
        structlog.reset_defaults()
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    atexit.unregister(flush)


async def flush_periodically(interval: float = 1.0) -> None:
    """Flush every ``interval`` seconds until cancelled, and once more on the way out.

    Run it as a task in the app's lifespan and cancel it at shutdown.
    """
    try:
        while True:
            await asyncio.sleep(interval)
            flush()
    finally:
        flush()


def redact(
    mapping: Mapping[str, object], secret_keys: frozenset[str] = SECRET_KEYS
) -> dict[str, object]:
    """A copy of ``mapping`` safe to log: secret values (keys matched in any case) become
    :data:`REDACTED`, unless None, so "not set" stays visible. Nested mappings too."""
    secrets = {k.lower() for k in secret_keys}
    out: dict[str, object] = {}
    for key, value in mapping.items():
        if value is not None and key.lower() in secrets:
            out[key] = REDACTED
        elif isinstance(value, Mapping):
            out[key] = redact(value, secret_keys)
        else:
            out[key] = value
    return out


def redact_url(url: str) -> str:
    """``url`` safe to log: a user or password in it becomes :data:`REDACTED`."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{REDACTED}@{host}"))


def _forget_buffer_after_fork() -> None:
    for sink in _open_sinks():
        sink.forget_after_fork()


# Declared once at import (there is no way to unregister): a forked worker must not write
# the lines its parent buffered before the fork; the parent writes those.
os.register_at_fork(after_in_child=_forget_buffer_after_fork)
