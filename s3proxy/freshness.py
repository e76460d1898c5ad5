"""Pure: how long a stored copy of an object stays fresh (RFC 9111 §4.2.1).

By default every object is fresh for ``--ttl`` seconds, as the original proxy did. With
``--honor-cache-control`` the object's own ``Cache-Control`` (as stored in S3's object
metadata) decides, as CloudFront and nginx's ``proxy_cache`` do: ``s-maxage`` (meant for
shared caches like us), else ``max-age``, else ``Expires``, else ``--ttl``. ``no-cache``,
``no-store`` and ``private`` make the copy stale at once: it is still kept, but every
request asks S3 first (a 304 costs a round trip, not the body).
"""

from __future__ import annotations

from s3proxy.conditional import parse_http_date
from s3proxy.meta import ObjectMeta

#: Directives that forbid serving a stored copy without asking the origin first.
_REVALIDATE_ALWAYS = ("no-cache", "no-store", "private")
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
        seconds = delta_seconds(arguments[0])
        # §4.2.1: a directive given twice, or with an invalid value: consider it stale.
        return 0 if seconds is None or len(arguments) > 1 else seconds
    if meta.expires is not None:
        expires = parse_http_date(meta.expires, now=now)
        if expires is None:
            return 0  # §5.3: an invalid Expires (such as "0") means already expired
        return max(expires - now, 0.0)
    return default
