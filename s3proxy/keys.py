"""Map a raw request path to an S3 object key. Pure: no I/O, no configuration objects.

The path is taken from the ASGI ``raw_path`` (uvicorn's ``path`` is already decoded, so
``%2e%2e`` would arrive as ``..`` and ``%2F`` as ``/``) and percent-decoded exactly once:
``%2B`` is ``+``, a literal ``+`` stays ``+`` (it means a space only in HTML forms' query
strings), ``%25`` is ``%``. The result is the key, byte for byte, as S3 stores it: no Unicode
normalisation (NFC and NFD spellings are different keys) and ``//`` kept as it is (S3 keys may
hold empty segments, as CloudFront passes them).

Security by construction: the key is ``prefix + decoded path``, and a decoded path holding a
dot segment, a NUL or another control character is refused, so no request can name an object
outside the configured prefix — even on S3-compatible stores that normalise ``..`` themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

#: S3's own limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

_HEX = frozenset(b"0123456789abcdefABCDEF")
# C0 controls and DEL: never part of a web path we serve, and dangerous in logs and headers.
_CONTROL = frozenset(range(0x20)) | {0x7F}


@dataclass(frozen=True, slots=True)
class Key:
    """The object to serve. ``index`` is true when the path named a folder (ended in ``/``)."""

    key: str
    index: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    """The path cannot name an object: answer ``status`` with a short ``reason``."""

    status: int
    reason: str


def percent_decode(raw: bytes) -> bytes | None:
    """Decode ``%XX`` escapes once; ``None`` if an escape is malformed (``%`` not followed by
    two hex digits)."""
    if b"%" not in raw:
        return raw
    out = bytearray()
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or raw[i + 1] not in _HEX or raw[i + 2] not in _HEX:
                return None
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def path_to_key(
    raw_path: bytes, *, prefix: str = "", index_document: str = "index.html"
) -> Key | Rejected:
    """Return the object key for ``raw_path`` (the request target without its query), or why
    it is refused.

    ``prefix`` is a folder of the bucket (``""`` or ending in ``/``). A path ending in ``/``
    maps to ``<path><index_document>``. Refusals: 400 for a malformed escape, invalid UTF-8, a
    control character (NUL included) or a ``.``/``..`` segment (decoded, so ``%2e%2e`` too);
    414 when the key would exceed S3's 1,024-byte limit.
    """
    if not raw_path.startswith(b"/"):
        return Rejected(400, "the request target must be an absolute path")
    decoded = percent_decode(raw_path)
    if decoded is None:
        return Rejected(400, "malformed percent-encoding in the path")
    if not _CONTROL.isdisjoint(decoded):
        return Rejected(400, "control characters are not allowed in the path")
    try:
        path = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(400, "the path is not valid UTF-8")
    if "." in path and _has_dot_segment(path):
        return Rejected(400, "dot segments are not allowed in the path")
    name = path[1:]
    index = name == "" or name.endswith("/")
    key = prefix + name + index_document if index else prefix + name
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return Rejected(414, "the path is too long")
    return Key(key, index)


def _has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` as a key prefix: no leading ``/``, one trailing ``/`` unless empty.

    Raises ``ValueError`` for dot segments or control characters, which could make keys
    outside the folder the operator meant.
    """
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    if _has_dot_segment("/" + stripped) or any(ord(c) in _CONTROL for c in stripped):
        raise ValueError(
            f"invalid prefix {prefix!r}: no '.' or '..' segments or control characters"
        )
    return stripped + "/"


def folder_index(key: str, index_document: str) -> str | None:
    """``docs`` -> ``docs/index.html``: the index a folder-like key would have, or ``None``
    for a key that already names a folder's index (ends in ``/``) or the root."""
    if not key or key.endswith("/"):
        return None
    return f"{key}/{index_document}"


def has_extension(key: str) -> bool:
    """Whether the last segment looks like a file (``app.js``), not an SPA route (``users``)."""
    return "." in key.rsplit("/", 1)[-1]


# RFC 3986 pchar minus '%' (already-encoded triplets are copied as they are).
_PCHAR = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@%"
)


def trailing_slash_location(raw_path: bytes, query: bytes) -> bytes:
    """``Location`` for the redirect of ``/a/docs`` to ``/a/docs/``: the relative reference
    ``./docs/`` (plus the query).

    Relative to the request's own path, it can only resolve to the same host: never
    ``//evil.example`` or ``/\\evil.example`` (a forged Host or X-Forwarded-Host is never
    read), and any byte outside RFC 3986's ``pchar`` is percent-encoded.
    """
    segment = raw_path.rsplit(b"/", 1)[-1]
    encoded = b"".join(bytes([c]) if c in _PCHAR else b"%%%02X" % c for c in segment)
    location = b"./" + encoded + b"/"
    return location + b"?" + query if query else location
