"""The requests :class:`~s3proxy.protocol.StrictProtocol` answers itself (the table in its
docstring), as :class:`Refusal` values: a status and a one-line body."""

from __future__ import annotations

import re

from s3proxy import logging as log

# RFC 9110 §5.6.2: tchar, what a method is made of (§9.1).
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Refusal(Exception):
    """A request the protocol answers itself: ``status`` and a one-line ``body``."""

    def __init__(self, status: int, body: bytes, method: str = "") -> None:
        super().__init__(status, body)
        self.status, self.body, self.method = status, body, method
        #: A new one: the head that would name one is refused, so no proxy's id is trusted.
        self.request_id = log.request_id()


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
