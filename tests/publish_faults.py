"""A small HTTP proxy in front of moto that breaks uploads on purpose, for the publish tests.

Each client connection carries one request (the proxy answers with ``Connection: close``,
which botocore's pool accepts). A :class:`Rule` picks requests by a regular expression on the
request line and, for its next ``times`` matches, resets the connection after ``reset_after``
bytes of the body, answers an S3 error (``503 SlowDown``, ``403 InvalidAccessKeyId``), or
holds the request for ``delay`` seconds.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def error_body(code: str) -> bytes:
    """S3's XML error document for ``code``."""
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>injected {code}</Message></Error>"
    ).encode()


@dataclass
class Rule:
    """What to do to the next ``times`` requests whose request line matches ``pattern``."""

    pattern: str
    reset_after: int | None = None
    slow_down: bool = False
    #: Answer this status with this S3 error code instead of forwarding.
    error: tuple[int, str] | None = None
    delay: float = 0.0
    times: int = 1


@dataclass
class FaultProxy:
    """Forwards to ``upstream`` (host, port); ``lines`` logs every request line it saw."""

    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, pattern: str) -> int:
        """How many requests had a request line matching ``pattern``."""
        return sum(1 for line in self.lines if re.search(pattern, line))

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _rule_for(self, line: str) -> Rule | None:
        with self._lock:
            self.lines.append(line)
            for rule in self.rules:
                if re.search(rule.pattern, line):
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                    return rule
        return None

    def _serve(self, client: socket.socket) -> None:
        # A client that went away (a publish killed while a rule delayed its request) resets
        # the connection: nothing to serve, and no error for whichever test runs by then.
        with client, contextlib.suppress(ConnectionError):
            self._exchange(client)

    def _exchange(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        head = _read_head(reader)
        if head is None:
            return
        line = head[0].decode("latin-1")
        headers = [h for h in head[1:] if not h.lower().startswith((b"connection", b"expect"))]
        sizes = [h[15:] for h in headers if h.lower().startswith(b"content-length:")]
        length = int(sizes[0]) if sizes else 0
        if any(h.lower().startswith(b"expect") for h in head[1:]):
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        rule = self._rule_for(line)
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        if rule is not None and rule.reset_after is not None:
            reader.read(min(rule.reset_after, length))
            # SO_LINGER 0: close with a TCP reset, as a broken network does.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        body = reader.read(length) if length else b""
        if len(body) < length:
            return  # the client went away mid-body: S3 never sees half a request
        error = (503, "SlowDown") if rule is not None and rule.slow_down else None
        error = rule.error if rule is not None and rule.error else error
        if error is not None:
            status, code = error
            document = error_body(code)
            client.sendall(
                f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(document)}\r\nConnection: close\r\n\r\n".encode()
                + document
            )
            return
        with socket.create_connection(self.upstream) as up:
            up.sendall(b"\r\n".join([head[0], *headers, b"Connection: close", b"", b""]) + body)
            while chunk := up.recv(1 << 16):
                client.sendall(chunk)


def _read_head(reader: object) -> list[bytes] | None:
    lines: list[bytes] = []
    while True:
        raw = reader.readline()  # type: ignore[attr-defined]
        if not raw:
            return None
        raw = raw.rstrip(b"\r\n")
        if not raw:
            return lines
        lines.append(raw)
