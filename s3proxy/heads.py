"""What :mod:`s3proxy.fastpath` does as uvicorn does: a response head as uvicorn writes it, kept
as bytes with slots for the fields each request renders anew (``Age``, ``x-request-id``), and
the client uvicorn's ``ProxyHeadersMiddleware`` makes of a request. Pure."""

from __future__ import annotations

from typing import Any, NamedTuple

from s3proxy.plan import Headers

__all__ = ["Head", "forwarded_client", "template"]


class Head(NamedTuple):
    """A response head as uvicorn writes it, in ``parts`` to be joined, of which some are
    slots each request fills: ``parts[0]`` the status line, ``parts[1]`` the server's default
    fields (``date``), ``parts[age_at]`` the ``Age`` field and ``parts[rid_at]`` the request
    id's value, if the head has them (else 0). The last part ends with the blank line."""

    parts: list[bytes]
    age_at: int
    rid_at: int


def template(
    headers: Headers, age: tuple[bytes, bytes] | None, rid: tuple[bytes, bytes], chunked: bool
) -> Head | None:
    """The head of a response with ``headers`` (names lower-cased, after the default
    fields), with the request's own ``age`` and ``rid`` fields as slots (found by identity: a
    header rule that replaced one made it a constant); ``None`` if uvicorn added to the head
    (one that would be ``chunked`` without Content-Length is) or the head ends the
    connection."""
    parts: list[bytes] = [b"", b""]
    pending: list[bytes] = []
    age_at = rid_at = 0
    length = not chunked
    for item in headers:
        name = item[0].lower()
        if name == b"connection" or name == b"transfer-encoding":
            return None
        length = length or name == b"content-length"
        if item is age:
            parts.append(b"".join(pending))
            age_at, pending = len(parts), []
            parts.append(b"")
        elif item is rid:
            parts.append(b"".join([*pending, name, b": "]))
            rid_at, pending = len(parts), [b"\r\n"]
            parts.append(b"")
        else:
            pending += [name, b": ", item[1], b"\r\n"]
    parts.append(b"".join([*pending, b"\r\n"]))
    return Head(parts, age_at, rid_at) if length else None


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
