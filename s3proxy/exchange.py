"""One request being answered: what the handlers read from it, and what they learn while
answering (status, bytes sent, cache outcome, encoding) for the request line and the metrics
record.

The ``respond_*`` methods render through :mod:`s3proxy.responses` and keep that account, so
no handler can send a response without the log line knowing. Every answer carries
``x-request-id``: the one a trusted proxy sent, else one made here (see :meth:`Exchange.begin`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from s3proxy import logging as log
from s3proxy.access.signed import strip, strip_url
from s3proxy.outcome import NO_CACHE, Outcome
from s3proxy.plan import Body, Headers, Plan
from s3proxy.record import Network, Recorder, RequestRecord, client_ip, forwarded_request_id
from s3proxy.responses import send_body, send_empty, send_stream, send_text

if TYPE_CHECKING:
    from s3proxy.fastpath import Capture

# Every request field the site reads comes through here: the fast path keys the answers it
# keeps on these (all but those s3proxy.fastpath._UNKEYED names), so a field read otherwise
# would be one its answers ignore.
_WANTED = frozenset(
    {
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"range",
        b"if-range",
        b"origin",
        b"x-real-ip",
        b"x-forwarded-for",
        b"access-control-request-method",
        b"access-control-request-headers",
        b"accept-encoding",
        # for the request line only
        b"host",
        b"referer",
        b"user-agent",
        b"x-request-id",
        # access rules (s3proxy.access): the credentials a check reads
        b"authorization",
        b"cookie",
        # a body, or a request that waits: not for the fast path (s3proxy.fastpath)
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
    }
)
#: What the request line keeps of the path (keys longer than S3's 1,024 bytes get 414).
PATH_MAX = 1024

#: The request lines' "who asked" parts kept (:func:`account`), and the largest kept: at most
#: a few MB, however many clients there are.
_WHOS, _WHO_BYTES = 1024, 1024
_whos: dict[tuple[str, bytes | None, bytes | None, bytes | None], log.Who] = {}

#: The scope key of a request's fast-path capture (:class:`s3proxy.fastpath.Capture`).
CAPTURE = "s3proxy.capture"

_logger = log.get_logger("s3proxy.site")


def pick_headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """The request headers the endpoint reads; repeated ones joined with ``, `` (RFC 9110
    §5.3)."""
    picked: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in _WANTED:
            previous = picked.get(name)
            picked[name] = value if previous is None else previous + b", " + value
    return picked


def request_id_for(
    headers: dict[bytes, bytes], peer: str | None, trusted: tuple[Network, ...]
) -> bytes:
    """The request id of a request with (picked) ``headers`` from ``peer``: the
    ``X-Request-Id`` of a trusted proxy (:func:`s3proxy.record.forwarded_request_id`), else
    a new one."""
    forwarded = headers.get(b"x-request-id")
    if forwarded is not None:
        forwarded = forwarded_request_id(forwarded, peer, trusted)
    return forwarded or log.request_id()


@dataclass(slots=True, eq=False)
class Said:
    """What a request's line and metrics record say of its answer, not of who asked: made
    once per request on the slow path (:meth:`Exchange.said`), once per answer the fast path
    replays (:mod:`s3proxy.fastpath`)."""

    line: log.Fixed
    mime: str
    compressed: bool
    origin_bytes: int


def account(
    said: Said,
    headers: dict[bytes, bytes],
    peer: str | None,
    trusted: tuple[Network, ...],
    request_id: bytes,
    http_version: str,
    elapsed: float,
    recorder: Recorder | None,
) -> None:
    """Write the request line of ``said``'s answer to a request with (picked) ``headers``
    from ``peer`` answered in ``elapsed`` seconds, and give ``recorder`` its metrics record:
    every request's, whichever path answered it."""
    if recorder is None and not log.writing():
        return  # (the line's fields cost 6k instructions of a 60k fast-path hit)
    get, line = headers.get, said.line
    ip = client_ip(get(b"x-real-ip"), get(b"x-forwarded-for"), peer, trusted)
    host, referrer, agent = get(b"host"), get(b"referer"), get(b"user-agent")
    asked = (ip, host, referrer, agent)
    who = _whos.get(asked)
    if who is None:
        who = log.Who(
            ip,
            # Whole, as nginx logs them: the server bounds the head (--max-header-size).
            host.decode("latin-1") if host else "",
            strip_url(referrer).decode("latin-1") if referrer else "",  # a signed link's too
            agent.decode("latin-1") if agent else "",
        )
        if len(host or b"") + len(referrer or b"") + len(agent or b"") <= _WHO_BYTES:
            if len(_whos) >= _WHOS:
                _whos.clear()
            _whos[asked] = who
    micros = int(elapsed * 1_000_000)  # the line's duration_ms is to the microsecond
    log.write(line, micros, who, request_id.decode("latin-1"), http_version)
    if recorder is not None:
        recorder.emit(
            RequestRecord(
                timestamp=time.time() - elapsed,
                method=line.method,
                resource=line.path,
                mime_type=said.mime,
                ip=ip,
                size=line.sent,
                duration_us=micros,
                status=line.status,
                cache=line.cache,
                compressed=said.compressed,
                origin_bytes=said.origin_bytes,
                site=line.site,
            )
        )


@dataclass(slots=True, eq=False)
class Exchange:
    """A request (``scope``, its picked ``headers``) and the account of its answer."""

    scope: Mapping[str, Any]
    send: Any
    headers: dict[bytes, bytes]
    method: str
    request_id: bytes = b""
    #: Headers every answer ends with: ``x-request-id``, then CORS's (:mod:`s3proxy.cors`).
    common: Headers = field(default_factory=list)
    #: What every answer varies on besides what a representation's own headers name
    #: (``Origin`` on a site with CORS), else b"".
    vary: bytes = b""
    now: float = 0.0
    status: int = 200
    sent: int = 0
    cache: str = NO_CACHE
    mime: bytes = b""
    compressed: bool = False
    #: The Content-Encoding of what was sent (a variant's, or the object's own), else b"".
    encoding: bytes = b""
    origin_bytes: int = 0
    #: Objects over this many bytes answer 307 to a presigned URL (an access rule's).
    presign_over: int | None = None
    #: The response has started: a failure now can only abort the connection.
    started: bool = False
    #: What the fast path learns from this request, if it may answer its like next time.
    capture: Capture | None = None

    @classmethod
    def begin(
        cls,
        scope: Mapping[str, Any],
        send: Any,
        trusted: tuple[Network, ...],
        headers: dict[bytes, bytes] | None = None,
    ) -> Exchange:
        """The exchange of a new request, with its request id: the ``X-Request-Id`` of a
        trusted proxy (:func:`s3proxy.record.forwarded_request_id`), else a new one.
        ``headers``: the scope's, picked already (the fast path picks them first)."""
        if headers is None:
            headers = pick_headers(scope["headers"])
        x = cls(scope, send, headers, scope["method"])
        client = scope.get("client")
        x.request_id = request_id_for(headers, client[0] if client else None, trusted)
        x.common = [(b"x-request-id", x.request_id)]
        x.capture = scope.get(CAPTURE)
        return x

    def said(self, site: str = "", sent: int | None = None) -> Said:
        """What the request's line and record say of its answer, for a request to ``site``
        (``sent``: the body's bytes, when its send has not returned to count them)."""
        scope, query = self.scope, self.scope["query_string"]
        line = log.Fixed(
            self.method,
            scope["raw_path"].decode("latin-1")[:PATH_MAX],
            self.status,
            self.sent if sent is None else sent,
            self.cache,
            # A signed link's signature is a credential: never in a log line.
            strip(query).decode("latin-1") if query else "",
            self.encoding.decode("latin-1") if self.encoding else "",
            site,
        )
        return Said(line, self.mime.decode("latin-1"), self.compressed, self.origin_bytes)

    def account(
        self,
        elapsed: float,
        trusted: tuple[Network, ...],
        site: str = "",
        recorder: Recorder | None = None,
    ) -> None:
        """Write the request line of a request to ``site`` answered in ``elapsed`` seconds,
        and give ``recorder`` its metrics record (see :func:`account`)."""
        client = self.scope.get("client")
        peer = client[0] if client else None
        version = self.scope["http_version"]
        said = self.said(site)
        account(said, self.headers, peer, trusted, self.request_id, version, elapsed, recorder)

    def note(self, outcome: Outcome) -> None:
        """Account for what the read-through did. Several reads make one request (the key,
        then an SPA index or an error page): a hit keeps the status of an earlier read, any
        other outcome replaces it."""
        if outcome.cache != "hit" or self.cache == NO_CACHE:
            self.cache = outcome.cache
        self.origin_bytes += outcome.origin_bytes
        if self.capture is not None:
            self.capture.noted(outcome)

    def ending(self) -> Headers:
        """The headers an answer not made from a representation ends with: the common ones,
        and ``Vary`` (a representation's own headers carry it, merged with theirs)."""
        if self.vary:
            return [*self.common, (b"vary", self.vary)]
        return self.common

    async def respond_empty(self, status: int, headers: Headers) -> None:
        """An answer without a body (a redirect, a 204), ending with :meth:`ending`."""
        await self._send_empty(status, headers + self.ending())

    async def _send_empty(self, status: int, headers: Headers) -> None:
        self.status = status
        self.started = True
        await send_empty(self.send, status, headers)

    async def respond_text(self, status: int, message: str, headers: Headers | None = None) -> None:
        """Our own short plain-text answer (never S3's XML), ending with :meth:`ending`."""
        self.status, self.started = status, True
        ending = self.ending()
        self.sent = await send_text(self.send, status, message, [*(headers or ()), *ending])

    async def respond_body(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.started = True
        await send_body(self.send, status, headers, body)
        self.sent = len(body)

    async def respond_stream(
        self, status: int, headers: Headers, chunks: AsyncIterator[bytes]
    ) -> None:
        """Stream ``chunks``; if they fail part way the exception propagates and the server
        aborts the connection (see :func:`s3proxy.responses.send_stream`)."""
        self.status, self.started = status, True
        self.sent = await send_stream(self.send, status, headers, chunks)

    def render(
        self,
        plan: Plan,
        body: bytes | AsyncIterator[bytes] | None = None,
        extra: Headers | None = None,
    ) -> Awaitable[None]:
        """Send ``plan`` with the request's common headers (its id, CORS): ``body`` (the part
        the plan chose, in memory or as chunks) unless the plan sends none; ``extra`` headers
        are those only the body's maker knows (a multipart boundary, a variant's length).
        Returns the sending coroutine rather than being one: the hit path saves a frame.

        A plan under 400 (200, 206, 304) is made from a representation, whose headers carry
        the site's ``Vary`` merged with ``Accept-Encoding`` (:func:`s3proxy.responses.describe`);
        the others (412, an error document) get it here."""
        headers = plan.headers + extra + self.common if extra else plan.headers + self.common
        if self.capture is not None:
            self.capture.rendered(plan, self)
        if plan.body is Body.MESSAGE:
            return self.respond_text(plan.status, plan.message, plan.headers)
        if plan.status >= 400 and self.vary:  # 412, an error document (see above)
            headers.append((b"vary", self.vary))
        if body is None or plan.body is Body.NONE:
            return self._send_empty(plan.status, headers)
        if type(body) is bytes:
            return self.respond_body(plan.status, headers, body)
        assert not isinstance(body, bytes)
        return self.respond_stream(plan.status, headers, body)

    async def crashed(self, exc: Exception) -> None:
        """An unexpected exception before the response started: log it (its traceback at
        debug), answer 500 with the common headers (the server's own 500 has none)."""
        _logger.error("request_crashed", request_id=self.request_id.decode(), exc_info=exc)
        await self.respond_text(500, "Internal Server Error")

    async def fail(self, status: int, message: str, exc: Exception | None, key: str) -> None:
        """S3 or the cache failed before the response started: log why, answer ``status``."""
        _logger.warning("request_failed", key=key, status=status, error=str(exc))
        await self.respond_text(status, message)
