"""The HTTP/1.1 protocol s3proxy serves with: uvicorn's httptools protocol, with a bound on
the size of each request head (request line and header block).

llhttp, under uvicorn, puts no limit on a request head: a client could send megabytes of
headers and every byte would be parsed and kept in memory. :class:`HeaderLimitProtocol`
counts the bytes of each head as they arrive, before they reach the parser, and answers a
head longer than :data:`MAX_HEADER_SIZE` with ``431 Request Header Fields Too Large``
(RFC 6585 §5), then closes the connection — as nginx answers heads past its
``large_client_header_buffers``. Bodies are not counted.

This module and :mod:`s3proxy.server` are the only ones that import uvicorn.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from s3proxy import logging as log

__all__ = ["MAX_HEADER_SIZE", "HeaderLimitProtocol"]

#: Bytes a request head may take by default (``--max-header-size``): the request line, every
#: header line and the blank line that ends them (64 KiB, as many proxies allow; nginx's
#: default is 4 buffers of 8 KiB, so no head nginx forwards is refused).
MAX_HEADER_SIZE = 64 * 1024

#: Seconds a refused connection still reads (and drops) what the client sends before it is
#: closed; see :meth:`HeaderLimitProtocol._close_lingering`.
LINGER_SECONDS = 2.0

_BODY = b"Request header fields too large.\n"
_LOGGED_PATH = 1024  # as much of the path as a request line shows (s3proxy.site does the same)


class HeaderLimitProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that refuses request heads over :data:`MAX_HEADER_SIZE`.

    A head is counted from the end of the previous message (or from the start of the
    connection) until the parser reports the headers complete, and never more than
    :data:`MAX_HEADER_SIZE` bytes of it are fed to the parser, whatever the size of a read.
    Refused: a 431 with a short plain-text body and ``connection: close``, written after
    any responses still owed to earlier requests on the connection; then the connection
    ends (lingering, see :meth:`_close_lingering`) and nothing more of it is parsed. One
    request line is logged: status 431, the method and path if the request line got that
    far, the peer's address; no header.

    A head that starts in the middle of a read, behind a pipelined request, is counted
    from the next read: it may reach the parser with up to one read (256 KB in uvloop)
    more than the limit. No head is refused for bytes of its body or of another request.
    """

    #: The bound in this process: set once from ``--max-header-size`` before serving starts
    #: (:mod:`s3proxy.server`); uvicorn builds the protocol itself, one per connection.
    limit = MAX_HEADER_SIZE

    # Per-connection state, as class defaults so uvicorn's constructor stays as it is.
    _head_open = True  # no head has ended since the last message did
    _head_bytes = 0  # bytes received while this head was open

    # The three overrides below are all the hit path pays. Measured (Python 3.11, uvloop,
    # this 2-core machine): 0.11 µs per request for the three (timeit, uvicorn's methods
    # stubbed out), against ~9.5 µs for a whole keep-alive request through the real parser
    # and a trivial ASGI app, where the difference stayed within run-to-run noise; wrk
    # against a cached 2,950-byte object cannot resolve it (rounds vary by ±20% here).

    def data_received(self, data: bytes) -> None:
        if self._head_open:
            self._head_bytes += len(data)
            if self._head_bytes > self.limit:
                self._receive_past_limit(data)
                return
        HttpToolsProtocol.data_received(self, data)

    def on_headers_complete(self) -> None:
        self._head_open = False
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._head_open, self._head_bytes = True, 0
        HttpToolsProtocol.on_message_complete(self)

    def _receive_past_limit(self, data: bytes) -> None:
        """``data`` takes the open head past the limit: feed the part within it, and refuse
        the request if its head still does not end there."""
        within = self.limit - (self._head_bytes - len(data))
        if within < 0:  # refused already: the connection is closing, read nothing more
            return
        if within:
            HttpToolsProtocol.data_received(self, data[:within])
        if self.transport.is_closing():  # the parser refused the request itself (400)
            return
        if self._head_open and self._head_bytes > self.limit:
            self._refuse()
        elif self.transport.get_protocol() is self:  # not upgraded to a websocket
            self.data_received(data[within:])  # the head ended: the rest is a body or more

    def _refuse(self) -> None:
        """Stop reading; answer 431 once every earlier request on the connection has its
        response (HTTP/1.1 answers in order, RFC 9112 §9.3.2)."""
        self.flow.pause_reading()
        self._log_refusal()
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._send_431()
            return
        owed = cycle.on_response

        def after_owed_response() -> None:
            owed()
            self._send_431()

        cycle.on_response = after_owed_response

    def _send_431(self) -> None:
        """RFC 6585 §5: the request's header fields are too large; the connection ends with
        it, since the rest of the head was never read."""
        if self.transport.is_closing():
            return
        head = [STATUS_LINE[431]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_BODY)
        )
        self.transport.write(b"".join(head) + _BODY)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """Close after the 431, without losing it. The client may still be sending its head:
        closing a socket with unread data makes the kernel answer RST, and a RST can destroy
        the 431 before the client reads it. So, as nginx's ``lingering_close``: end our
        side (FIN after the 431), read and drop what still comes, and close when the client
        does or after :data:`LINGER_SECONDS`."""
        transport = self.transport
        if not transport.can_write_eof():  # TLS: no half-close
            transport.close()
            return
        transport.write_eof()
        self.flow.resume_reading()  # data_received drops it: this head is over the limit
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _log_refusal(self) -> None:
        """The refused request's line: the headers are neither complete nor trusted, so the
        client is the peer and no header value appears."""
        # uvicorn starts a scope when a message begins and puts the method in it when its
        # head ends: a scope without one is the refused request's.
        began = self.scope is not None and "method" not in self.scope
        url = self.url if began else b""
        method = self.parser.get_method().decode("latin-1") if url else "-"
        path = url[:_LOGGED_PATH].split(b"?", 1)[0].decode("latin-1") if url else "-"
        client = self.client[0] if self.client else "-"
        log.request(method, path, 431, len(_BODY), 0.0, "-", client)
