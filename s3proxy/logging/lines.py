"""The request line: one fixed-shape line per request, written straight to the sink.

This is the hit path's share of logging, so it skips structlog's processor chain: its fields
are fixed, so the JSON line is one f-string (what structlog's ``JSONRenderer`` writes for the
same fields, compact, keys in this order), buffered by :class:`~s3proxy.logging.sink.Sink`.
``combined`` is nginx's format of that name, for tools that read it; ``console`` renders the
fields through the events' renderer, which :func:`install` is given.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable

from s3proxy.logging import sink as _sinks
from s3proxy.logging.sink import Sink

#: Renders a request line's fields (``{"ts", "level", "event", **fields}``) in another format.
Render = Callable[[dict[str, object]], str]

_escape = json.encoder.encode_basestring_ascii  # the C escaper json.dumps itself uses
_EMPTY = _escape("")
_timestamps = _sinks.timestamps

# Where request lines go: None when unconfigured, with no destination, or when the level is
# above info, so the hot path pays one global lookup to find out it has nothing to do.
_target: Sink | None = None
_combined = False
# None: JSON or combined; else the renderer of another format.
_render: Render | None = None


def install(target: Sink | None, log_format: str, render: Render | None = None) -> None:
    """Send request lines to ``target`` (None: drop them) in ``log_format``: "json",
    "combined", or any other name for ``render``'s."""
    global _target, _combined, _render
    _target, _combined = target, log_format == "combined"
    _render = None if log_format in ("json", "combined") else render


class Fixed:
    """What a request line says of the answer rather than of who asked (the method, path and
    query, status, bytes, cache outcome, encoding, site), rendered once: :func:`write` adds
    the rest. The fast path keeps one with each answer it replays (:mod:`s3proxy.fastpath`),
    so its lines are this module's, made by the same two functions as every other."""

    __slots__ = (
        *("method", "path", "status", "sent", "cache", "query", "encoding", "site"),
        *("_lead", "_site", "_middles"),
    )

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        sent: int,
        cache: str,
        query: str = "",
        encoding: str = "",
        site: str = "",
    ) -> None:
        self.method, self.path, self.status, self.sent = method, path, status, sent
        self.cache, self.query, self.encoding, self.site = cache, query, encoding, site
        # The JSON line's fragments, in the line's order (see :func:`write`). ``method`` is
        # an HTTP token and ``cache`` one of our words, so neither can hold a quote or a
        # backslash; the free text goes through the JSON escaper.
        self._lead = (
            f'"level":"info","event":"request","method":"{method}","path":{_escape(path)},'
            f'"status":{status},"bytes":{sent},"duration_ms":'
        )
        self._site = f'"site":{_escape(site)}}}'
        #: The line's middle part for each client that asked (see :meth:`middle`), made on
        #: first use: a fast-path answer keeps its Fixed, and 16k of them are in memory.
        self._middles: dict[Who, str] | None = None

    def middle(self, who: Who) -> str:
        """The part of the line from ``"cache"`` to ``"request_id":``, for ``who``."""
        middles = self._middles
        if middles is None:
            middles = self._middles = {}
        middle = middles.get(who)
        if middle is None:
            query, encoding = self.query, self.encoding
            middle = (
                f'"cache":"{self.cache}",{who._address}'
                f'"query":{_escape(query) if query else _EMPTY},{who._agent}'
                f'"encoding":{_escape(encoding) if encoding else _EMPTY},"request_id":'
            )
            if len(middles) < _MIDDLES:
                middles[who] = middle
        return middle


# repr(micros / 1000) (what JSONRenderer writes for the float) for a request under a second,
# from tables: a float's repr costs 2.4k instructions, a tenth of a fast-path hit's line.
_WHOLE = [str(n) for n in range(1000)]
_FRACTION = [repr(n / 1000)[1:] for n in range(1000)]  # ".0", ".001", ..., ".05", ".999"


def _millis(micros: int) -> str:
    """``repr(micros / 1000)``."""
    if 0 <= micros < 1_000_000:
        whole, fraction = divmod(micros, 1000)
        return _WHOLE[whole] + _FRACTION[fraction]
    return repr(micros / 1000)


_MIDDLES = 64  # middle parts one Fixed keeps (one per client that asked, at most)


class Who:
    """Who asked, as a request line shows it: the client's address and the Host, Referer and
    User-Agent fields (already stripped of credentials), rendered once. A client's requests
    mostly share them, so :func:`s3proxy.exchange.account` keeps those it made."""

    __slots__ = ("client_ip", "host", "referrer", "user_agent", "_address", "_agent")

    def __init__(
        self, client_ip: str, host: str = "", referrer: str = "", user_agent: str = ""
    ) -> None:
        self.client_ip, self.host, self.referrer, self.user_agent = (
            client_ip, host, referrer, user_agent
        )  # fmt: skip
        self._address = f'"client_ip":{_escape(client_ip)},"host":{_escape(host)},'
        # Referrer is mostly absent: "" needs no escaper's call.
        self._agent = (
            f'"referrer":{_escape(referrer) if referrer else _EMPTY},'
            f'"user_agent":{_escape(user_agent)},'
        )


def writing() -> bool:
    """Whether request lines go anywhere (else :func:`write` does nothing)."""
    return _target is not None


def request(
    method: str,
    path: str,
    status: int,
    sent: int,
    duration_ms: float,
    cache: str,
    client_ip: str,
    host: str = "",
    query: str = "",
    referrer: str = "",
    user_agent: str = "",
    encoding: str = "",
    request_id: str = "",
    http_version: str = "1.1",
    site: str = "",
) -> None:
    """Buffer the request line ``{"ts", "level": "info", "event": "request", "method", "path",
    "status", "bytes", "duration_ms", "cache", "client_ip", "host", "query", "referrer",
    "user_agent", "encoding", "request_id", "site"}``; "" stands for a header that was not sent.
    ``http_version`` is only in the combined format. Never raises for any str, int or float.
    """
    if _target is not None:
        line = Fixed(method, path, status, sent, cache, query, encoding, site)
        who = Who(client_ip, host, referrer, user_agent)
        write(line, round(duration_ms * 1000), who, request_id, http_version)


def write(line: Fixed, micros: int, who: Who, request_id: str, http_version: str = "1.1") -> None:
    """Buffer the request line of ``line``'s answer to ``who`` after ``micros``
    microseconds, with this request's own fields (see :func:`request`)."""
    sink = _target
    if sink is None:
        return
    now = _sinks.clock()
    if _combined:
        sink.write(
            _combined_line(
                now, line.method, line.path, line.query, http_version, line.status, line.sent,
                who.client_ip,
            )
            + f' "{_clf(who.referrer or "-")}" "{_clf(who.user_agent or "-")}"'
        )  # fmt: skip
        return
    ts = _timestamps.format(now)
    if _render is None:
        # The parts that depend on the answer and on who asked are joined once per pair:
        # the fast path's answers write the same line to the same client again and again.
        sink.write(
            f'{{"ts":"{ts}",{line._lead}{_millis(micros)},{line.middle(who)}'
            f"{_escape(request_id)},{line._site}"
        )
        return
    fields: dict[str, object] = {
        "ts": ts,
        "level": "info",
        "event": "request",
        "method": line.method,
        "path": line.path,
        "status": line.status,
        "bytes": line.sent,
        "duration_ms": micros / 1000,
        "cache": line.cache,
        "client_ip": who.client_ip,
        "host": who.host,
        "query": line.query,
        "referrer": who.referrer,
        "user_agent": who.user_agent,
        "encoding": line.encoding,
        "request_id": request_id,
        "site": line.site,
    }
    sink.write(_render({k: v for k, v in fields.items() if v != ""}))  # for a human to read


# nginx's access_log escaping (escape=default): '"', '\' and bytes outside 0x20-0x7e become
# \xHH. Our strings are latin-1 decodings of the request's bytes, so this covers every byte.
_CLF_ESCAPES = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_clf_cache: tuple[int, str] = (-1, "")


def _clf(text: str) -> str:
    return text.translate(_CLF_ESCAPES)


def _clf_time(t: float) -> str:
    """nginx's ``$time_local`` in UTC, ``01/May/2024:23:59:59 +0000``, cached per second
    (month names are English whatever the locale, as nginx writes them)."""
    global _clf_cache
    second = int(t)
    cached_second, text = _clf_cache
    if second != cached_second:
        tm = time.gmtime(second)
        text = f"{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:" + time.strftime(
            "%H:%M:%S +0000", tm
        )
        _clf_cache = (second, text)
    return text


def _combined_line(
    now: float,
    method: str,
    path: str,
    query: str,
    http_version: str,
    status: int,
    sent: int,
    client_ip: str,
) -> str:
    """``$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent``: the
    common part of nginx's combined format (the referrer and user agent follow)."""
    target = f"{path}?{query}" if query else path
    line = f"{method} {target} HTTP/{http_version}" if method != "-" else "-"
    return f'{_clf(client_ip)} - - [{_clf_time(now)}] "{_clf(line)}" {status} {sent}'


# Request ids: a random per-process prefix and a counter, 22 hex digits. Unique across
# workers and restarts (48 random bits); bytes, since the header wants them so. The counter's
# last three digits come from a table and the rest are formatted once per 4,096 ids: 1k
# instructions an id, against 2.9k for formatting all ten (2 µs for uuid4().hex).
_LOW = [b"%03x" % n for n in range(4096)]
_id_prefix = os.urandom(6).hex().encode()
_id_counter = itertools.count(1)
_high: tuple[int, bytes] = (-1, b"")  # (the counter >> 12, the id's first 19 digits)


def request_id() -> bytes:
    """A new request id (ASCII) for a request no trusted proxy named."""
    global _high
    n = next(_id_counter)
    high, first = _high
    if n >> 12 != high:
        high = n >> 12
        first = b"%s%07x" % (_id_prefix, high)
        _high = (high, first)
    return first + _LOW[n & 0xFFF]


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter, _high
    _id_prefix, _id_counter = os.urandom(6).hex().encode(), itertools.count(1)
    _high = (-1, b"")


# A forked worker must not repeat its parent's ids.
os.register_at_fork(after_in_child=_new_id_prefix)
