"""Folder listings (a site's ``listing = true``), the pure part: ListObjectsV2 pages as values,
the listing they make, and its two renderings. No I/O (:mod:`s3proxy.folders` reads S3 and
the cache and answers).

A listing is made once per folder and TTL, for everyone: it shows what the access rule that
admits the folder also admits (:func:`build` is given that test), so the same bytes can be
stored and served to every reader of the folder. Both renderings are stored, each as a cache
entry under the folder's key plus a marker holding a control character (:func:`cache_keys`):
no request maps to such a key (:func:`s3proxy.keys.path_to_key` refuses control characters),
and a purge of the folder's prefix covers it.

Every name is escaped in the HTML (a key named ``<script>`` is text) and every link is a
relative reference ``./<name>`` percent-encoded byte by byte (RFC 3986 §2.1), so a key with a
space, ``#``, ``?``, ``%``, ``:`` or any Unicode links to itself and nothing else. A name the
proxy would refuse as a path (``.``, ``..``, a control character) is shown without a link.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

#: Keys asked of S3 per ListObjectsV2 page (S3's own maximum).
PAGE_SIZE = 1000
#: Entries a listing shows at most; a folder with more says so in the page.
MAX_ENTRIES = 10_000
#: What follows a folder's key in its listings' cache keys (see the module docstring).
MARK = "\x1flisting."
HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
#: Headers of every listing answer: it depends on Accept (RFC 9110 §12.5.5); its HTML runs
#: nothing and loads nothing, whatever a name holds (defence in depth beside the escaping).
HEADERS = (
    (b"vary", b"Accept"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
)
_CONTROL = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
# RFC 3986 §2.3's unreserved characters, but a name of dots alone (a dot segment).
_UNRESERVED = re.compile(r"(?!\.*\Z)[A-Za-z0-9._~-]*\Z")


@dataclass(frozen=True, slots=True)
class File:
    """An object of the folder: its name below the folder, size and Last-Modified (epoch s)."""

    name: str
    size: int
    last_modified: float | None


@dataclass(frozen=True, slots=True)
class FolderPage:
    """One ListObjectsV2 page: subfolder names (``sub/``), objects, the next page's token."""

    folders: tuple[str, ...]
    files: tuple[File, ...]
    next_token: str | None

    @classmethod
    def from_response(cls, response: dict[str, Any], prefix: str) -> FolderPage:
        """The page of a ListObjectsV2 response (botocore's dict) of ``prefix``; the
        folder's own marker object (the key ``prefix`` itself) is not one of its files."""
        cut = len(prefix)
        folders = tuple(p["Prefix"][cut:] for p in response.get("CommonPrefixes") or ())
        files = tuple(
            File(o["Key"][cut:], int(o.get("Size") or 0), _epoch(o.get("LastModified")))
            for o in response.get("Contents") or ()
            if o["Key"] != prefix
        )
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return cls(folders, files, token)


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass(frozen=True, slots=True)
class Listing:
    """What a folder listing shows. ``path`` is the folder below the site (``/docs/``);
    ``truncated``: the folder has more than :data:`MAX_ENTRIES` entries."""

    path: str
    folders: tuple[str, ...]
    files: tuple[File, ...]
    truncated: bool = False

    @property
    def empty(self) -> bool:
        return not self.folders and not self.files

    def to_json(self) -> bytes:
        """The JSON answer: ``{"path", "truncated", "entries": [...]}``, each entry
        ``{"name", "type": "directory" | "file", "href"}`` plus a file's ``size`` (bytes) and
        ``last_modified`` (RFC 3339, UTC). Folders first, each group in S3's order."""
        entries: list[dict[str, Any]] = [
            {"name": name[:-1], "type": "directory", "href": href(name)} for name in self.folders
        ]
        entries += (
            {
                "name": f.name,
                "type": "file",
                "href": href(f.name),
                "size": f.size,
                "last_modified": _rfc3339(f.last_modified),
            }
            for f in self.files
        )
        document = {"path": self.path, "truncated": self.truncated, "entries": entries}
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()

    def to_html(self) -> bytes:
        """The HTML page: a table of names, sizes and dates, every name escaped."""
        title = html.escape(f"Index of {self.path}")
        rows = [] if self.path == "/" else ['<tr><td><a href="../">../</a></td><td></td><td></td>']
        rows += (_row(name, None, None) for name in self.folders)
        rows += (_row(f.name, _size(f.size), _date(f.last_modified)) for f in self.files)
        note = (
            f"<p>Only the first {MAX_ENTRIES:,} entries are shown: this folder has more.</p>"
            if self.truncated
            else ""
        )
        page = _PAGE.format(title=title, rows="\n".join(rows), note=note)
        return page.encode()


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif}}td{{padding:0 1em 0 0}}.n{{text-align:right}}</style>
</head><body><h1>{title}</h1>
<table><thead><tr><th>Name</th><th class="n">Size</th><th>Last modified (UTC)</th></tr></thead>
<tbody>
{rows}
</tbody></table>{note}
</body></html>
"""


def _row(name: str, size: str | None, date: str | None) -> str:
    link = href(name)
    text = html.escape(name)
    cell = f'<a href="{html.escape(link)}">{text}</a>' if link is not None else text
    return f'<tr><td>{cell}</td><td class="n">{size or ""}</td><td>{date or ""}</td></tr>'


def href(name: str) -> str | None:
    """The relative link to ``name`` (``sub/`` for a subfolder), every byte outside RFC
    3986's unreserved set percent-encoded; ``None`` if the proxy would refuse its path."""
    folder = name.endswith("/")
    segment = name[:-1] if folder else name
    if _UNRESERVED.match(segment) is None:  # else nothing to encode (most names; 10x faster)
        if segment in (".", "..") or "/" in segment or not _CONTROL.isdisjoint(segment):
            return None
        segment = quote(segment, safe="")
    return "./" + segment + "/" if folder else "./" + segment


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, 0
    while value >= 1024 and unit < 3:
        value, unit = value / 1024, unit + 1
    return f"{value:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[unit]}"


def _date(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def _rfc3339(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def build(
    path: str, pages: Sequence[FolderPage], shown: Callable[[str], bool], truncated: bool
) -> Listing:
    """The listing of the folder at ``path`` from its pages: the entries ``shown`` admits
    (given a subfolder's ``sub/`` or a file's name), at most :data:`MAX_ENTRIES`."""
    folders = [name for page in pages for name in page.folders if shown(name)]
    files = [f for page in pages for f in page.files if shown(f.name)]
    if len(folders) + len(files) > MAX_ENTRIES:
        truncated = True
        folders = folders[:MAX_ENTRIES]
        files = files[: MAX_ENTRIES - len(folders)]
    return Listing(path, tuple(folders), tuple(files), truncated)


def cache_keys(folder: str) -> tuple[str, str]:
    """The cache keys of the HTML and JSON listings of ``folder`` (a key prefix)."""
    return folder + MARK + "html", folder + MARK + "json"


def folders_above(key: str, prefix: str) -> list[str]:
    """The folders (key prefixes) whose listings show ``key`` or a folder holding it, from
    its own up to the site's ``prefix``: ``a/b/c.html`` -> ``a/b/``, ``a/``, ``""``."""
    folders = []
    end = key.rfind("/")
    while end >= len(prefix):
        folders.append(key[: end + 1])
        end = key.rfind("/", 0, end)
    if not folders or folders[-1] != prefix:
        folders.append(prefix)
    return folders


def prefers_json(accept: bytes | None) -> bool:
    """Whether ``Accept`` ranks ``application/json`` above ``text/html`` (RFC 9110
    §12.5.1: the most specific matching range gives each its weight); ties are HTML."""
    if not accept:
        return False
    ranked: dict[str, float] = {}
    for item in accept.decode("latin-1").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        ranked[media.lower()] = weight
    return _weight(ranked, "application", "json") > _weight(ranked, "text", "html")


def _weight(ranked: dict[str, float], kind: str, sub: str) -> float:
    for media in (f"{kind}/{sub}", f"{kind}/*", "*/*"):
        if media in ranked:
            return ranked[media]
    return 0.0
