"""The requests :class:`~s3proxy.protocol.StrictProtocol` answers itself (the table in its
docstring), as :class:`Refusal` values: a status and a one-line body, the response they
make and the request line they leave."""

from __future__ import annotations

import re

from s3proxy import logging as log

LOGGED_PATH = 1024  # as much of the path as a request line shows (s3proxy.site does the same)

# RFC 9110 §5.6.2: tchar, what a method is made of (§9.1).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Refusal(Exception):
    """A request the protocol answers itself: ``status`` and a one-line ``body``."""

    def __init__(self, status: int, body: bytes, method: str = "") -> None:
        super().__init__(status, body)
        self.status, self.body, self.method = status, body, method
        #: A new one: the head that would name one is refused, so no proxy's id is trusted.
        self.request_id = log.request_id()

    def response(self, status_line: bytes, defaults: list[tuple[bytes, bytes]]) -> bytes:
        """The whole response, after ``status_line`` and the server's ``defaults`` fields:
        it ends the connection, since the rest of the request was never read."""
        head = [status_line]
        for name, value in defaults:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: text/plain; charset=utf-8\r\nx-request-id: %s\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % (self.request_id, len(self.body))
        )
        return b"".join(head) + self.body

    def log(self, method: str, url: bytes, client: str) -> None:
        """The refused request's line: ``method`` and the path of ``url`` ("-" for what the
        request line did not get as far as). The headers are neither complete nor trusted,
        so the client is the peer (``client``) and no header value appears."""
        path = url[:LOGGED_PATH].split(b"?", 1)[0].decode("latin-1") if url else "-"
        status, sent, rid = self.status, len(self.body), self.request_id.decode()
        log.request(method, path, status, sent, 0.0, "-", client, request_id=rid)


# What each refusal says. A Refusal is made for each use: raising one instance again would
# grow its traceback.
TOO_LARGE = (431, b"Request header fields too large.\n")
TOO_MANY = (431, b"Too many request header fields.\n")
BAD_HOST = (400, b"Missing, repeated or invalid Host header field.\n")
BAD_REQUEST = (400, b"Invalid HTTP request.\n")
UNKNOWN_METHOD = (501, b"Method not implemented.\n")
TIMED_OUT = (408, b"Request head not received in time.\n")
BUSY = (503, b"Too many connections.\n")


def unknown_method(data: bytes, whole_head: bool) -> Refusal:
    """501 for a method llhttp does not know; 400 if the head, when ``data`` holds its start,
    does not even begin with a token and a space (it is no HTTP request: TLS, say)."""
    if not whole_head:
        return Refusal(*UNKNOWN_METHOD)
    method, space, _ = data[:64].partition(b" ")
    if not space or _TOKEN.fullmatch(method) is None:
        return Refusal(*BAD_REQUEST)
    return Refusal(*UNKNOWN_METHOD, method=method.decode("ascii"))
