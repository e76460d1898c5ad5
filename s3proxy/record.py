"""What every request leaves behind for the metrics sinks: one :class:`RequestRecord`.

Pure: built at the end of a request from what the site handler already knows; the sinks
(:mod:`s3proxy.sinks`) take it off the request path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: What a worker's S3 client reports of each GetObject: its outcome and the seconds to S3's
#: response headers, retries included (see :meth:`s3proxy.origin.Origin.take_timings`).
Timing = tuple[str, float]


@dataclass(slots=True)
class RequestRecord:
    """The original proxy's per-request fields, plus the cache's view of the request.

    ``timestamp`` is epoch seconds at the start of the request; ``duration_us`` the time to
    the last byte. ``location`` is filled by GeoIP enrichment, off the request path.
    """

    timestamp: float
    method: str
    resource: str
    mime_type: str
    ip: str
    size: int
    duration_us: int
    status: int
    compressed: bool = False
    cache: str = "-"
    origin_bytes: int = 0
    #: The site's name (``default`` without a sites file).
    site: str = ""
    location: dict[str, Any] | None = field(default=None)


class Recorder(Protocol):
    """Takes records; must return at once and never raise (it runs on the request path)."""

    def emit(self, record: RequestRecord) -> None: ...


def parse_networks(specs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


def client_ip(
    real_ip: bytes | None,
    forwarded_for: bytes | None,
    peer: str | None,
    trusted: tuple[Network, ...] = (),
) -> str:
    """The original's rule: ``X-Real-IP``, else the first ``X-Forwarded-For`` (without a
    port), else the peer address. With ``trusted`` networks, the headers are believed only
    when the peer is one of them (anyone else could forge them)."""
    if trusted and not is_trusted(peer, trusted):
        return peer or "-"
    if real_ip:
        return real_ip.decode("latin-1").strip()
    if forwarded_for:
        return _strip_port(forwarded_for.split(b",", 1)[0].decode("latin-1").strip())
    return peer or "-"


def is_trusted(peer: str | None, trusted: tuple[Network, ...]) -> bool:
    """Whether ``peer`` is in one of the ``--trusted-proxies`` networks (none: no one is), so
    that what it says about the request (client address, request id) may be believed."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in trusted)


#: A request id we pass on: visible ASCII, at most 128 bytes (so a header cannot smuggle a
#: newline or a megabyte into our lines and answers).
_SANE_ID = re.compile(rb"[!-~]{1,128}")


def forwarded_request_id(
    value: bytes | None, peer: str | None, trusted: tuple[Network, ...]
) -> bytes | None:
    """The ``X-Request-Id`` a trusted proxy sent, if it is a sane token; else ``None`` (the
    caller makes one). Unlike :func:`client_ip`, no ``--trusted-proxies`` trusts no one: an id
    from anyone could be chosen to collide with another request's in the logs."""
    if value is None or not trusted or not is_trusted(peer, trusted):
        return None
    return value if _SANE_ID.fullmatch(value) else None


def _strip_port(value: str) -> str:
    """``1.2.3.4:5678`` -> ``1.2.3.4``; ``[::1]:80`` -> ``::1``; a bare IPv6 stays whole."""
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value
