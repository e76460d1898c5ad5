"""What :mod:`s3proxy.fastpath` does as uvicorn does: a response head as uvicorn writes it, kept
as bytes with slots for the fields each request renders anew (``Age``, ``x-request-id``), and
the client uvicorn's ``ProxyHeadersMiddleware`` makes of a request. Pure."""

from __future__ import annotations

from typing import Any

from s3proxy.plan import Headers

__all__ = ["AGE", "RID", "forwarded_client", "template"]

#: The slots of a head.
AGE, RID = 0, 1


def template(
    headers: Headers, age: tuple[bytes, bytes] | None, rid: tuple[bytes, bytes], chunked: bool
) -> tuple[bytes | int, ...] | None:
    """The head as uvicorn wrote ``headers`` (names lower-cased, after its default headers),
    with the request's own ``age`` and ``rid`` fields as slots (found by identity: a header
    rule that replaced one made it a constant); ``None`` if uvicorn added to the head (one
    that would be ``chunked`` without Content-Length is) or the head ends the connection."""
    parts: list[bytes | int] = []
    pending: list[bytes] = []
    length = not chunked
    for item in headers:
        name = item[0].lower()
        if name == b"connection" or name == b"transfer-encoding":
            return None
        length = length or name == b"content-length"
        if item is age or item is rid:
            parts += [b"".join(pending), AGE if item is age else RID]
            pending = []
        else:
            pending += [name, b": ", item[1], b"\r\n"]
    parts.append(b"".join(pending))
    return tuple(parts) if length else None


def forwarded_client(proxy: Any, client: Any, headers: list[tuple[bytes, bytes]]) -> Any:
    """The client uvicorn's ProxyHeadersMiddleware makes of a request from ``client`` with
    ``headers`` (its X-Forwarded-For): the middleware itself, on a probe scope (its app only
    returns, so one step runs it to the end)."""
    probe = {"type": "http", "client": client, "headers": headers}
    step = proxy(probe, None, None)
    try:
        step.send(None)
    except StopIteration:
        return probe["client"]
    raise RuntimeError("ProxyHeadersMiddleware waited")  # pragma: no cover
