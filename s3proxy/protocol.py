"""The HTTP/1.1 protocol s3proxy serves with: uvicorn's httptools protocol, made strict about
what a request head may be and how long it may take.

llhttp, under uvicorn, parses what it is given: it puts no limit on a head's size or number
of fields, does not check ``Host``, turns a method it does not know into a bare 400, and
uvicorn waits forever for a head that never ends (its keep-alive timeout only runs between
requests). :class:`StrictProtocol` refuses, each with a short plain-text response and
``connection: close``, then ends the connection:

======  ==============================================================================
status  when
======  ==============================================================================
400     an HTTP/1.1 request without ``Host``; any request with two ``Host`` fields or a
        ``Host`` that is not ``uri-host [":" port]`` (RFC 9112 §3.2, RFC 9110 §7.2); a
        head llhttp cannot parse
408     a head begun but not complete within :attr:`~StrictProtocol.header_timeout`
        seconds (nginx's ``client_header_timeout``); a connection that sent nothing in
        that time is closed without a response, as nginx does
431     a head over :attr:`~StrictProtocol.limit` bytes (request line, header lines and
        the blank line; bodies are not counted) or with more than
        :attr:`~StrictProtocol.max_fields` header fields (RFC 6585 §5; Apache's
        ``LimitRequestFields``)
501     a method llhttp does not know (RFC 9110 §9.1, §15.6.2); methods it knows but the
        site does not serve get the app's 405 with ``Allow``
503     a connection accepted while :attr:`~StrictProtocol.max_connections` are open in
        this process, answered at once so a flood costs a descriptor for moments only
======  ==============================================================================

Each refusal is logged as one request line (method and path if the request line got that
far; no header value). A fresh cache hit is answered here too, before any ASGI scope exists
(:mod:`s3proxy.fastpath`, ``--fast-path``). This module, :mod:`s3proxy.fastpath` and
:mod:`s3proxy.server` are the only ones that import uvicorn.
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from s3proxy import fastpath, refusals
from s3proxy.refusals import Refusal, unknown_method
from s3proxy.sweep import Sweep

__all__ = ["HEADER_TIMEOUT", "MAX_CONNECTIONS", "MAX_FIELDS", "MAX_HEADER_SIZE"]
__all__ += ["StrictProtocol"]

#: Bytes a request head may take by default (``--max-header-size``): the request line, every
#: header line and the blank line that ends them (64 KiB, as many proxies allow; nginx's
#: default is 4 buffers of 8 KiB, so no head nginx forwards is refused).
MAX_HEADER_SIZE = 64 * 1024

#: Header fields a request head may have by default (``--max-header-fields``): Apache's
#: ``LimitRequestFields``.
MAX_FIELDS = 100

#: Seconds a request head may take to arrive by default (``--header-timeout``): nginx's
#: ``client_header_timeout``.
HEADER_TIMEOUT = 60.0

#: Connections one process serves at once by default (``--max-connections``): nginx's usual
#: ``worker_connections``.
MAX_CONNECTIONS = 1024

#: Seconds a refused connection still reads (and drops) what the client sends before it is
#: closed; see :meth:`StrictProtocol._close_lingering`.
LINGER_SECONDS = 2.0


# RFC 9110 §7.2: Host = uri-host [ ":" port ]; uri-host (RFC 3986 §3.2.2) is an IP-literal
# in brackets or a reg-name (which covers IPv4 addresses): unreserved, pct-encoded and
# sub-delims. An empty value is valid (RFC 9112 §3.2: a target without authority).
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z._~!$&'()*+,;=:-]+\]|(?:[0-9A-Za-z._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
)
# Host values found valid in this process: a keep-alive client sends the same one with
# each request, so the regular expression runs once per value, not per request.
_valid_hosts: set[bytes] = set()
_VALID_HOSTS_KEPT = 256


class _Answered:
    """The cycle of a connection whose last request the fast path answered: complete (and
    what uvicorn sets when the connection is lost: nothing waits on it)."""

    response_complete = True
    message_event = SimpleNamespace(set=lambda: None)


_ANSWERED = _Answered()


class StrictProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses the heads this module's table lists.

    A head is counted from the end of the previous message (or from the start of the
    connection) until the parser reports the headers complete, and never more than
    :attr:`limit` bytes of it are fed to the parser, whatever the size of a read. A refusal
    is written after any responses still owed to earlier requests on the connection
    (HTTP/1.1 answers in order, RFC 9112 §9.3.2); then the connection ends, lingering (see
    :meth:`_close_lingering`), and nothing more of it is parsed.

    A head that starts in the middle of a read, behind a pipelined request, is counted (in
    bytes and in time) from the next read: it may reach the parser with up to one read
    (256 KB in uvloop) more than the limit. No head is refused for bytes of its body or of
    another request. The header timeout is checked by one timer per process every second
    (:mod:`s3proxy.sweep`), so a head times out between :attr:`header_timeout` and a second
    later; requests pay nothing for it.
    """

    #: The bounds in this process: set once from the options before serving starts
    #: (:func:`s3proxy.server.configure_protocol`); uvicorn builds the protocol itself, one
    #: per connection.
    limit: ClassVar[int] = MAX_HEADER_SIZE
    max_fields: ClassVar[int] = MAX_FIELDS
    header_timeout: ClassVar[float] = HEADER_TIMEOUT
    max_connections: ClassVar[int] = MAX_CONNECTIONS

    # Per-connection state, as class defaults so uvicorn's constructor stays as it is.
    _head_open = True  # no head has ended since the last message did
    _head_bytes = 0  # bytes received while this head was open
    _head_seen = 0  # the sweep that first saw this head waiting (0: none yet)
    _hosts = 0  # Host fields in this head so far
    _host = b""  # the last of them
    _refused = False  # a refusal is sent or owed: nothing more is parsed
    _fast: fastpath.FastPath | None = None  # the app's fast path (None: off)
    _in_url = False  # a message began and its head has not ended (its url is being read)
    _connection = False  # the head has a Connection field
    _idle_since: float | None = None  # when the connection last became idle (None: busy)

    # The hit path pays on_header's one comparison per field more than uvicorn's and
    # on_headers_complete's checks: callgrind, a keep-alive GET with 8 fields, real parser,
    # uvicorn's cycle, trivial app: 118.4k instructions before (431 only), 121.8k now (+2.8%).
    # uvicorn's keep-alive timer, made anew for every response, cost 7k instructions of the
    # fast path's 34k floor: one per connection now checks that the whole timeout was idle.

    # --- uvicorn's protocol, overridden ----------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        self._new_head()
        self._fast = fastpath.find(self.app)
        Sweep.ensure(self.loop, self.connections, self.header_timeout)
        if len(self.connections) > self.max_connections:
            self._refuse(Refusal(*refusals.BUSY))

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
            if self._head_bytes > self.limit:
                self._receive_past_limit(data)
                return
        self._feed(data)

    # uvicorn begins a message's ASGI scope in on_message_begin. A request the fast path
    # answers needs none, so llhttp is not asked to call it at all (a Python call less per
    # request): the head's state is reset when the previous message completes (_new_head),
    # and the scope is begun in on_headers_complete, for the slow path only (_begin_scope).
    on_message_begin = None  # type: ignore[assignment]

    def _new_head(self) -> None:
        self.url, self.headers, self.expect_100_continue = b"", [], False
        self._connection = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._in_url = True

    def _begin_scope(self) -> None:
        """uvicorn's on_message_begin (its scope), late: keeps the head read so far."""
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header (lower-case name, note Expect: 100-continue, keep the pair),
        # with Host counted on the way: one comparison, where a scan of the list afterwards
        # would cost a loop over every field.
        name = name.lower()
        if name == b"host":
            self._hosts += 1
            self._host = value
        elif name == b"connection":
            self._connection = True
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def version(self) -> tuple[str, bool]:
        """The request's HTTP version, and whether the connection stays open after its
        response (as uvicorn decides: never after HTTP/1.0)."""
        parser = self.parser
        if parser.should_keep_alive() and not self._connection:
            # llhttp parses 0.9, 1.0, 1.1 and 2.0 only, and keeps all but 1.1 alive only
            # when a Connection field asks: this is 1.1, known without get_http_version's
            # string formatting (2k instructions, 3% of a fast-path hit).
            return "1.1", True
        version = parser.get_http_version()
        return version, version != "1.0" and parser.should_keep_alive()

    def on_headers_complete(self) -> None:
        self._head_open = False
        hosts, self._hosts = self._hosts, 0
        if hosts != 1 or self._host not in _valid_hosts or len(self.headers) > self.max_fields:
            self._check_head(hosts)  # raises Refusal, which stops the parser
        self._in_url = False
        # A fresh hit is answered here (s3proxy.fastpath); else the app is, maybe captured.
        capture = self._fast.answer(self) if self._fast is not None else False
        if capture is True:
            return
        self._begin_scope()
        HttpToolsProtocol.on_headers_complete(self)
        if capture:
            capture.watch(self)

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: data came (uvicorn cancels its timer here)

    def on_response_complete(self) -> None:
        """uvicorn's, but the keep-alive timer is armed only when none is (see above)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            self._idle_since = None
            self._start_asgi_task(*self.pipeline.pop())
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._keep_alive_check(self.timeout_keep_alive)

    def _keep_alive_check(self, left: float = 0.0) -> None:
        """Close the connection if it has been idle for ``timeout_keep_alive`` seconds, else
        look again when it would have been (once it is idle again, if it is busy now)."""
        self.timeout_keep_alive_task, since = None, self._idle_since
        if since is not None:
            left = left or since + self.timeout_keep_alive - self.loop.time()
            if left <= 0:
                return self.timeout_keep_alive_handler()
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        HttpToolsProtocol.connection_lost(self, exc)

    def on_message_complete(self) -> None:
        self._head_open, self._head_bytes, self._head_seen = True, 0, 0
        if self.cycle is not _ANSWERED:  # type: ignore[comparison-overlap]
            # (uvicorn's only tells the app that the body ended)
            HttpToolsProtocol.on_message_complete(self)
        self._new_head()

    def answered(self, keep_alive: bool) -> None:
        """The fast path wrote a whole response: what :meth:`on_response_complete` does when
        one is complete, for a connection with nothing pipelined and reading not paused (the
        fast path answers only then)."""
        self.cycle = _ANSWERED  # type: ignore[assignment]
        self.server_state.total_requests += 1
        if not keep_alive:
            self.transport.close()
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self._keep_alive_check(self.timeout_keep_alive)

    # --- parsing -------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with the parser's errors mapped to refusals (its own
        sends a bare 400 for each)."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, Refusal):
                raise
            self._refuse(refusal)
        except httptools.HttpParserInvalidMethodError:
            self._refuse(unknown_method(data, whole_head=self._head_bytes == len(data)))
        except httptools.HttpParserError:
            self._refuse(Refusal(*refusals.BAD_REQUEST))

    def _check_head(self, hosts: int) -> None:
        """The slow path of :meth:`on_headers_complete`: raise the :class:`Refusal` this
        head earns, or return (and remember its Host as valid)."""
        if len(self.headers) > self.max_fields:
            raise Refusal(*refusals.TOO_MANY)
        if hosts > 1:
            raise Refusal(*refusals.BAD_HOST)
        if hosts == 0:
            # RFC 9112 §3.2: required of HTTP/1.1 only (1.0 predates it).
            if self.parser.get_http_version() == "1.1":
                raise Refusal(*refusals.BAD_HOST)
            return
        if _HOST.fullmatch(self._host) is None:
            raise Refusal(*refusals.BAD_HOST)
        if len(_valid_hosts) >= _VALID_HOSTS_KEPT:
            _valid_hosts.clear()
        _valid_hosts.add(self._host)

    def _receive_past_limit(self, data: bytes) -> None:
        """``data`` takes the open head past the limit: feed the part within it, and refuse
        the request if its head still does not end there."""
        if self._refused:  # the connection is closing: read nothing more
            return
        within = self.limit - (self._head_bytes - len(data))
        if within:
            self._feed(data[:within])
        if self._refused or self.transport.is_closing():
            return
        if self._head_open and self._head_bytes > self.limit:
            self._refuse(Refusal(*refusals.TOO_LARGE))
        elif self.transport.get_protocol() is self:  # not upgraded to a websocket
            self.data_received(data[within:])  # the head ended: the rest is a body or more

    # --- refusing --------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Stop parsing and reading; answer ``refusal`` once every earlier request on the
        connection has its response, then end the connection."""
        if self._refused:
            return
        # From now on data_received takes every read past the limit, where it is dropped.
        self._refused, self._head_open, self._head_bytes = True, True, self.limit
        self.flow.pause_reading()
        url = self.url if self._in_url else b""  # (the head's fields are not logged)
        method = refusal.method or (self.parser.get_method().decode("latin-1") if url else "-")
        refusal.log(method, url, self.client[0] if self.client else "-")
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._send(refusal)
            return
        owed = cycle.on_response

        def after_owed_response() -> None:
            owed()
            self._send(refusal)

        cycle.on_response = after_owed_response

    def _send(self, refusal: Refusal) -> None:
        """The refusal's response; the connection ends with it, since the rest of the
        request was never read."""
        if self.transport.is_closing():
            return
        defaults = self.server_state.default_headers
        self.transport.write(refusal.response(STATUS_LINE[refusal.status], defaults))
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after the response, without losing it. The client may still be sending:
        closing a socket with unread data makes the kernel answer RST, and a RST can destroy
        the response before the client reads it. So, as nginx's ``lingering_close``: end our
        side (FIN after the response), read and drop what still comes, and close when the
        client does or after :data:`LINGER_SECONDS`."""
        transport = self.transport
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()  # data_received drops it: the connection is refused
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def swept(self, number: int, sweeps: int) -> None:
        """The header timeout's sweep ``number`` looks (see :mod:`s3proxy.sweep`)."""
        # Waiting for a head: one begun, or a first one that has not begun. Between requests
        # (no bytes, a response under way or kept alive) is not waiting.
        if self._refused or not (self._head_open and (self._head_bytes or self.cycle is None)):
            return
        if not self._head_seen:
            self._head_seen = number
        elif number - self._head_seen >= sweeps:
            self._time_out()

    def _time_out(self) -> None:
        """The header timeout passed: 408 if the head began, else close quietly (a client
        that sent nothing has nothing to be answered; nginx does the same)."""
        if self._head_bytes:
            self._refuse(Refusal(*refusals.TIMED_OUT))
        else:
            self._refused = True
            self.transport.close()
