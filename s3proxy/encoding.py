"""Content-coding negotiation (RFC 9110 §12.5.3) and the compressed variants of objects.

Pure apart from the CPU spent compressing: callers run :func:`compress` in a thread and keep
its result, so each variant is computed once per object version.
"""

from __future__ import annotations

import gzip

import brotli

#: Codings we produce, in order of preference when the client weighs them equally.
CODINGS = ("br", "gzip")
#: Smaller bodies gain less than the headers and CPU cost; nginx's gzip_min_length is 20,
#: CloudFront compresses from 1,000 bytes.
MIN_SIZE = 1024
#: Larger bodies are sent as they are: compressing them once would still stall a thread.
MAX_SIZE = 8 * 1024 * 1024

_COMPRESSIBLE_PREFIXES = ("text/",)
_COMPRESSIBLE_TYPES = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/manifest+json",
        "application/ld+json",
        "application/wasm",
        "image/svg+xml",
        "image/x-icon",
        "font/ttf",
        "font/otf",
    }
)


def compressible(content_type: str, size: int, content_encoding: str | None) -> bool:
    """Whether a variant is worth making: a textual type of a useful size, stored without a
    Content-Encoding of its own (those are sent as they are, never re-encoded)."""
    if content_encoding or not MIN_SIZE <= size <= MAX_SIZE:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith(_COMPRESSIBLE_PREFIXES) or media in _COMPRESSIBLE_TYPES


def negotiate(accept_encoding: str | None) -> str | None:
    """The coding to send for an ``Accept-Encoding`` value, or ``None`` for identity.

    Highest q wins, ``br`` before ``gzip`` on a tie; ``q=0`` refuses a coding, ``*`` stands
    for codings not named. No header means identity (RFC 9110 §12.5.3 allows any, but
    identity is what every client understands).
    """
    if not accept_encoding:
        return None
    weights: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        weights[name] = _quality(params)
    best, best_q = None, 0.0
    for coding in CODINGS:
        q = weights.get(coding, weights.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "q":
            try:
                return min(max(float(value), 0.0), 1.0)
            except ValueError:
                return 0.0
    return 1.0


def variant_etag(etag: str | None, coding: str) -> str | None:
    """A distinct entity tag for a coding: ``"abc"`` -> ``"abc-br"`` (a different
    representation must not share the strong validator of the identity one)."""
    if not etag or not etag.endswith('"'):
        return etag
    return f'{etag[:-1]}-{coding}"'


def compress(body: bytes, coding: str) -> bytes:
    """Compress once, well: the result is cached, so spend the CPU (brotli 9, gzip 9)."""
    if coding == "br":
        result: bytes = brotli.compress(body, quality=9)
        return result
    return gzip.compress(body, compresslevel=9, mtime=0)
