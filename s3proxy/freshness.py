"""Pure: how long a stored copy of an object stays fresh (RFC 9111 §4.2.1).

By default every object is fresh for ``--ttl`` seconds, as the original proxy did. With
``--honor-cache-control`` the object's own ``Cache-Control`` (as stored in S3's object
metadata) decides, as CloudFront and nginx's ``proxy_cache`` do: ``s-maxage`` (meant for
shared caches like us), else ``max-age``, else ``Expires``, else ``--ttl``. ``no-cache``,
``no-store`` and ``private`` make the copy stale at once: it is still kept, but every
request asks S3 first (a 304 costs a round trip, not the body).

Past its lifetime a copy may still be served for a while (RFC 5861): within the
``stale-while-revalidate`` window at once, while a revalidation runs in the background; within
the ``stale-if-error`` window when S3 fails. ``--stale-while-revalidate`` and
``--stale-if-error`` set both windows; with ``--honor-cache-control`` the object's own
directives of those names set its windows instead, and whatever forbids serving it stale
(RFC 9111 §4.2.4) closes both (:func:`stale_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass

from s3proxy.conditional import parse_http_date
from s3proxy.meta import ObjectMeta

#: Directives that forbid serving a stored copy without asking the origin first.
_REVALIDATE_ALWAYS = ("no-cache", "no-store", "private")
#: Directives under which a stale copy must not be served without asking the origin
#: (RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8): they close both stale windows.
_NEVER_STALE = (*_REVALIDATE_ALWAYS, "must-revalidate", "proxy-revalidate")
#: RFC 9111 §1.2.2: a delta-seconds too large to represent counts as 2^31.
MAX_DELTA = 2**31


def parse_cache_control(value: str | None) -> dict[str, list[str | None]]:
    """Directives by lower-case name, each with its arguments in order of appearance
    (``None`` for a directive without ``=``; quotes removed, RFC 9111 §5.2)."""
    directives: dict[str, list[str | None]] = {}
    for part in (value or "").split(","):
        name, sep, argument = part.strip().partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg = argument.strip() if sep else None
        if arg is not None and len(arg) >= 2 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        directives.setdefault(name, []).append(arg)
    return directives


def delta_seconds(argument: str | None) -> int | None:
    """A ``delta-seconds`` argument (1*DIGIT), or ``None`` if it is not one."""
    if argument is None or not argument.isascii() or not argument.isdigit():
        return None
    return min(int(argument), MAX_DELTA)


def lifetime(meta: ObjectMeta, default: int, now: float, *, honor: bool) -> float:
    """Seconds from ``now`` (when S3 answered) that a copy of the object described by
    ``meta`` is fresh; ``default`` is ``--ttl``. ``honor`` selects the object's own
    ``Cache-Control`` and ``Expires`` over ``default`` (see the module docstring)."""
    if not honor:
        return default
    directives = parse_cache_control(meta.cache_control)
    if any(name in directives for name in _REVALIDATE_ALWAYS):
        return 0
    for name in ("s-maxage", "max-age"):  # §5.2.2.10: s-maxage overrides max-age for us
        arguments = directives.get(name)
        if arguments is None:
            continue
        return _single_delta(arguments)
    if meta.expires is not None:
        expires = parse_http_date(meta.expires, now=now)
        if expires is None:
            return 0  # §5.3: an invalid Expires (such as "0") means already expired
        return max(expires - now, 0.0)
    return default


@dataclass(frozen=True, slots=True)
class StaleWindows:
    """Seconds past its expiry that a copy may be served: at once while it is revalidated in
    the background (``while_revalidate``), or while S3 fails (``if_error``)."""

    while_revalidate: int
    if_error: int


def stale_windows(
    meta: ObjectMeta, *, while_revalidate: int, if_error: int, honor: bool
) -> StaleWindows:
    """The stale windows of a copy of the object described by ``meta``. ``while_revalidate``
    and ``if_error`` are the options; ``honor`` (``--honor-cache-control``) lets the object's
    own ``stale-while-revalidate`` / ``stale-if-error`` (RFC 5861 §3, §4) replace them.

    Under ``honor``, ``no-cache``, ``no-store``, ``private``, ``must-revalidate`` and
    ``proxy-revalidate`` close both windows, and ``s-maxage`` closes the windows the object
    does not open itself: it implies ``proxy-revalidate`` for a shared cache (§5.2.2.10). An
    invalid or repeated argument closes its window (as §4.2.1 treats ``max-age``)."""
    if not honor:
        return StaleWindows(while_revalidate, if_error)
    directives = parse_cache_control(meta.cache_control)
    if any(name in directives for name in _NEVER_STALE):
        return StaleWindows(0, 0)
    if "s-maxage" in directives:
        while_revalidate = if_error = 0
    return StaleWindows(
        _window(directives.get("stale-while-revalidate"), while_revalidate),
        _window(directives.get("stale-if-error"), if_error),
    )


def _window(arguments: list[str | None] | None, default: int) -> int:
    return default if arguments is None else _single_delta(arguments)


def _single_delta(arguments: list[str | None]) -> int:
    """A directive's seconds; §4.2.1: given twice, or with an invalid value, it counts as 0
    (for ``max-age``: consider the copy stale)."""
    seconds = delta_seconds(arguments[0])
    return 0 if seconds is None or len(arguments) > 1 else seconds
