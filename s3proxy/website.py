"""S3 website hosting's redirects, as pure decisions (no I/O): an object's
``x-amz-website-redirect-location``.

S3 only accepts a redirect location that is a path on the same site (``/new/page``) or an
``http(s)://`` URL; anything else is not honoured here either (the object is served as it
is), so a stray value cannot send visitors to ``//evil.example`` or ``javascript:``.
"""

from __future__ import annotations

import re
from urllib.parse import quote

#: What a Location may keep as it is: RFC 3986's reserved and unreserved characters and ``%``
#: (an escape already made); everything else (spaces, quotes, non-ASCII) is escaped.
_URI_SAFE = "/:?#[]@!$&'()*+,;=%~"
_HTTP_URL = re.compile(r"^https?://[^/?#\\\s]+", re.IGNORECASE)


def object_redirect(value: str) -> bytes | None:
    """The ``Location`` for an object's ``x-amz-website-redirect-location`` ``value``, or
    ``None`` when S3 would not honour it: a path must start with one ``/`` (``//host`` and
    ``/\\host`` name another host), a URL must be ``http://`` or ``https://`` with a host."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        return None
    if value.startswith("/"):
        if value.startswith(("//", "/\\")):
            return None
    elif not _HTTP_URL.match(value):
        return None
    return quote(value, safe=_URI_SAFE).encode("ascii")
