"""The request line: one fixed-shape line per request, written straight to the sink.

This is the hit path's share of logging, so it skips structlog's processor chain: its fields
are fixed, so the JSON line is one f-string (what structlog's ``JSONRenderer`` would write for
the same fields, compact, keys in this order), buffered by :class:`~s3proxy.logging.sink.Sink`.
Other formats render the same fields through the renderer :func:`install` was given.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from s3proxy.logging import sink as _sinks
from s3proxy.logging.sink import Sink

#: Renders a request line's fields (``{"ts", "level", "event", **fields}``) in another format.
Render = Callable[[dict[str, object]], str]

_escape = json.encoder.encode_basestring_ascii  # the C escaper json.dumps itself uses
_timestamps = _sinks.timestamps

# Where request lines go: None when unconfigured, with no destination, or when the level is
# above info, so the hot path pays one global lookup to find out it has nothing to do.
_target: Sink | None = None
# None: the JSON f-string below; else the renderer of another format.
_render: Render | None = None


def install(target: Sink | None, render: Render | None) -> None:
    """Send request lines to ``target`` (None: drop them), rendered by ``render`` (None: JSON)."""
    global _target, _render
    _target, _render = target, render


def request(
    method: str, path: str, status: int, sent: int, duration_ms: float, cache: str, client_ip: str
) -> None:
    """Buffer the request line ``{"ts", "level": "info", "event": "request", "method", "path",
    "status", "bytes", "duration_ms", "cache", "client_ip"}``.

    ``method`` is an HTTP token and ``cache`` one of our words, so neither can hold a quote or
    a backslash; the free text (path, client IP) goes through the JSON escaper. Never raises
    for any str, int or float.
    """
    sink = _target
    if sink is None:
        return
    ts = _timestamps.format(_sinks.clock())
    if _render is None:
        sink.write(
            f'{{"ts":"{ts}","level":"info","event":"request",'
            f'"method":"{method}","path":{_escape(path)},"status":{status},"bytes":{sent},'
            f'"duration_ms":{duration_ms!r},"cache":"{cache}","client_ip":{_escape(client_ip)}}}'
        )
        return
    fields: dict[str, object] = {
        "ts": ts,
        "level": "info",
        "event": "request",
        "method": method,
        "path": path,
        "status": status,
        "bytes": sent,
        "duration_ms": duration_ms,
        "cache": cache,
        "client_ip": client_ip,
    }
    sink.write(_render(fields))
