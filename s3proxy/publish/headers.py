"""Pure: the headers an object is stored with, from its key and the ``--cache-control`` rules.

- Content-Type from the extension (the standard library's table, not the machine's
  ``/etc/mime.types``, so every machine publishes the same types).
- A pre-compressed file (``app.js.gz``, ``style.css.br``) of a type worth compressing keeps
  its key and is stored with the inner file's type and ``Content-Encoding: gzip``/``br``
  (RFC 9110 §8.4), so a browser that asks for ``app.js.gz`` runs JavaScript. An archive
  (``site.tar.gz``) is stored as it is, so it downloads as the archive.
- ``--cache-control GLOB=VALUE`` rules in the order given, the first match wins. A glob with
  a ``/`` is matched against the whole path under the prefix, else against the file name.
"""

from __future__ import annotations

import fnmatch
import mimetypes
from dataclasses import dataclass

from s3proxy.encoding import MIN_SIZE, compressible

_TYPES = mimetypes.MimeTypes(filenames=())
# Web types the standard library's table lacks in some Python versions; JavaScript as
# text/javascript (RFC 9239 §6), which newer Pythons also use.
for _ext, _type in {
    ".js": "text/javascript",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".avif": "image/avif",
    ".webmanifest": "application/manifest+json",
    ".mjs": "text/javascript",
}.items():
    _TYPES.add_type(_type, _ext)
DEFAULT_TYPE = "application/octet-stream"
#: The type of a compressed file stored as it is (no Content-Encoding).
_ARCHIVES = {
    "gzip": "application/gzip",
    "br": "application/x-brotli",
    "xz": "application/x-xz",
    "bzip2": "application/x-bzip2",
}


@dataclass(frozen=True, slots=True)
class CacheRule:
    """``GLOB=VALUE``: objects whose path matches ``glob`` get ``Cache-Control: value``."""

    glob: str
    value: str

    @classmethod
    def parse(cls, text: str) -> CacheRule:
        """Raises ValueError with a message for the user when ``text`` is not ``GLOB=VALUE``."""
        glob, sep, value = text.partition("=")
        if not sep or not glob.strip() or not value.strip():
            raise ValueError(f"{text!r} is not GLOB=VALUE (e.g. '*.html=max-age=60')")
        return cls(glob.strip(), value.strip())

    def matches(self, path: str) -> bool:
        name = path if "/" in self.glob else path.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(name, self.glob)


def object_headers(path: str, rules: tuple[CacheRule, ...] = ()) -> dict[str, str]:
    """botocore's parameters (``ContentType``, ``ContentEncoding``, ``CacheControl``) for the
    file at ``path`` (relative to the tree, ``/``-separated)."""
    content_type, encoding = _TYPES.guess_type(path, strict=False)
    headers: dict[str, str] = {}
    if encoding in ("gzip", "br") and content_type and compressible(content_type, MIN_SIZE, None):
        headers["ContentType"] = content_type
        headers["ContentEncoding"] = encoding
    elif encoding is not None:  # an archive: its own type, no coding for a browser to undo
        headers["ContentType"] = _ARCHIVES.get(encoding, DEFAULT_TYPE)
    else:
        headers["ContentType"] = content_type or DEFAULT_TYPE
    for rule in rules:
        if rule.matches(path):
            headers["CacheControl"] = rule.value
            break
    return headers
