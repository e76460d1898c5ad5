"""CORS per site (the Fetch standard's CORS protocol, §3.2): the ``cors`` setting as a checked
value (:class:`CorsPolicy`, :func:`parse`) and its answers (:class:`Cors`), decided once per
site and origin, so a request pays one dict lookup. Pure but for :func:`options`, which
sends the answer to an ``OPTIONS``.

- A **preflight** (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
  answered here whatever the path: 204 with the allow headers, or 403 naming what is not
  allowed (origin, method, headers), as S3 answers a CORS request its rules refuse; any
  status outside 200-299 fails a preflight (Fetch §4.8). It reads no object and checks no
  access rule (browsers send it without credentials), so it tells nothing of what exists.
- Every other answer of the site (200, 206, 304, 404, redirects, 401...) carries
  ``Access-Control-Allow-Origin`` (plus Expose-Headers and Allow-Credentials as set) when its
  ``Origin`` is allowed, and ``Vary: Origin`` always (RFC 9110 §12.5.5: the answer depends on
  it, for a request without ``Origin`` too). With ``allow_origins = ["*"]`` (no credentials)
  every answer says ``*`` whatever the Origin, so nothing varies and no ``Vary`` is sent
  (which would split a shared cache's copy per origin for nothing).

Origins are ``http(s)://host[:port]``, compared lowercase, or ``*``, or a one-label wildcard
``https://*.example.com`` (``a.example.com``, not ``example.com`` nor ``a.b.example.com``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from s3proxy.exchange import Exchange

Headers = list[tuple[bytes, bytes]]

#: What the proxy answers: the only methods a preflight may be allowed.
METHODS = ("GET", "HEAD", "OPTIONS")
ALLOW = b"GET, HEAD, OPTIONS"
#: An OPTIONS that is no CORS preflight (the original's answer; no Content-Length on a 204,
#: RFC 9110 §8.6).
_OPTIONS = [(b"allow", ALLOW), (b"access-control-allow-methods", ALLOW)]
#: Request headers a browser may send without asking (Fetch §2.2.2's CORS-safelisted names).
SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
#: Browsers cap the preflight cache (Chromium at 2 h, Firefox at 24 h).
MAX_AGE = 86400
#: Origins a site remembers its answer for; emptied when full (random Origins from a scanner
#: must not grow memory).
MEMO_SIZE = 1024
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"  # as the sites file's hosts
_ORIGIN = re.compile(
    rf"^https?://(?:(?:\*\.)?{_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::[0-9]{{1,5}})?$"
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
_PREFLIGHT_VARY = (
    b"vary",
    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
)
_NONE: Headers = []


class CorsPolicy(NamedTuple):
    """A site's ``cors`` table. (A tuple, not a dataclass: the config's ``asdict`` and JSON
    keep it whole, and it is checked again.)"""

    #: ``None``: the site's ``allowed_origins`` (``--allowed-origins``, the shorthand).
    allow_origins: tuple[str, ...] | None = None
    allow_methods: tuple[str, ...] = METHODS
    #: ``("*",)``: whatever a preflight asks (echoed, so it also holds with credentials).
    allow_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600
    allow_credentials: bool = False


def origin(text: str) -> str:
    """``text`` as an allowed origin: lowercase, without a trailing ``/``. Raises
    ``ValueError``."""
    normal = text.rstrip("/").lower()
    if normal != "*" and not _ORIGIN.match(normal):
        raise ValueError(f'"{text}" is not an origin like https://host[:port] or https://*.host')
    if normal.startswith(("http://*.", "https://*.")) and normal.count(".") < 2:
        raise ValueError(f'"{text}": a wildcard takes one label under a name of two or more')
    return normal


def parse(value: Any) -> CorsPolicy:
    """A ``cors`` table (a mapping, or its JSON text) as a checked :class:`CorsPolicy`.
    Raises ``ValueError`` with one line naming the key."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if isinstance(value, list | tuple) and len(value) == len(CorsPolicy._fields):
        # a policy that went through the config's JSON
        value = CorsPolicy(*value)._asdict()
    if not isinstance(value, Mapping):
        raise ValueError(f"a table of {', '.join(CorsPolicy._fields)}")
    for key in value:
        if key not in CorsPolicy._fields:
            raise ValueError(f"{key}: unknown key (known: {', '.join(CorsPolicy._fields)})")
    defaults = CorsPolicy()
    origins = value.get("allow_origins")
    methods = _names(value, "allow_methods", defaults.allow_methods, str.upper)
    if "*" in methods:
        methods = METHODS
    for method in methods:
        if method not in METHODS:
            raise ValueError(f'allow_methods: "{method}": the proxy answers GET, HEAD and OPTIONS')
    max_age = value.get("max_age", defaults.max_age)
    if not isinstance(max_age, int) or isinstance(max_age, bool) or not 0 <= max_age <= MAX_AGE:
        raise ValueError(f"max_age: {max_age!r} is not seconds between 0 and {MAX_AGE}")
    credentials = value.get("allow_credentials", False)
    if not isinstance(credentials, bool):
        raise ValueError("allow_credentials: must be true or false")
    expose = _names(value, "expose_headers", (), str.lower)
    if credentials and "*" in expose:
        # Fetch §3.2.3: with credentials "*" is a header's name, not every header.
        raise ValueError('expose_headers: "*" exposes nothing with allow_credentials: name them')
    return CorsPolicy(
        None if origins is None else _origins(origins),
        tuple(dict.fromkeys(methods)),
        _names(value, "allow_headers", defaults.allow_headers, str.lower),
        expose,
        max_age,
        credentials,
    )


def _origins(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(o, str) for o in value):
        raise ValueError('allow_origins: must be a list like ["https://example.com"]')
    try:
        return tuple(origin(o) for o in value)
    except ValueError as exc:
        raise ValueError(f"allow_origins: {exc}") from None


def _names(value: Mapping[str, Any], key: str, default: tuple[str, ...], case: Any) -> Any:
    """A list of header names or methods (``*`` kept), in ``case``."""
    names = value.get(key, default)
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{key}: must be a list of names, e.g. ["x-token"]')
    for name in names:
        if name != "*" and not _TOKEN.match(name.lower()):
            raise ValueError(f'{key}: "{name}" is not a header name or method')
    return tuple(case(n) for n in names)


def check(policy: CorsPolicy, allowed_origins: tuple[str, ...]) -> None:
    """Raises ``ValueError`` if ``policy`` with the site's ``allowed_origins`` breaks a rule
    of the Fetch standard."""
    origins = allowed_origins if policy.allow_origins is None else policy.allow_origins
    if policy.allow_credentials and "*" in origins:
        # Fetch §3.2.5: a credentialed response must name its origin, never "*".
        raise ValueError('allow_credentials = true with origin "*": list the origins instead')


class Cors:
    """One site's CORS answers, made when the site is (see the module's docstring)."""

    def __init__(self, policy: CorsPolicy, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.exact = frozenset(o for o in origins if "://*." not in o)
        self.wildcards = frozenset(o for o in origins if "://*." in o)
        #: The token the site's answers vary on (``Origin``), else b"" (``*``).
        self.vary = b"" if self.any else b"Origin"
        tail: Headers = []
        if policy.expose_headers:
            tail.append((b"access-control-expose-headers", _join(policy.expose_headers)))
        if policy.allow_credentials:
            tail.append((b"access-control-allow-credentials", b"true"))
        self.tail = tail
        any_origin = [(b"access-control-allow-origin", b"*"), *tail]
        #: Origin (``None``: none sent) -> the headers of a simple answer; the misses are
        #: decided by :meth:`learn`.
        self.answers: dict[bytes | None, Headers] = {None: any_origin if self.any else _NONE}
        self.allow_methods = (b"access-control-allow-methods", _join(policy.allow_methods))
        self.allowed_methods = frozenset(policy.allow_methods)
        self.any_header = "*" in policy.allow_headers
        self.allowed_headers = frozenset(policy.allow_headers) | SAFELISTED
        listed = [h for h in policy.allow_headers if h != "*"]
        self.listed_headers = ", ".join(listed).encode() if listed else None
        self.preflight_tail: Headers = [
            self.allow_methods,
            (b"access-control-max-age", str(policy.max_age).encode()),
        ]
        if policy.allow_credentials:
            self.preflight_tail.append((b"access-control-allow-credentials", b"true"))
        self.preflight_tail.append(_PREFLIGHT_VARY)

    @classmethod
    def of(cls, policy: CorsPolicy, allowed_origins: tuple[str, ...]) -> Cors | None:
        """The site's answers, ``None`` when it allows no origin (no CORS at all)."""
        origins = allowed_origins if policy.allow_origins is None else policy.allow_origins
        return cls(policy, origins) if origins else None

    def allows(self, origin: bytes) -> bool:
        """Whether ``origin`` (a request's ``Origin``) is allowed."""
        if self.any:
            return True
        text = origin.decode("latin-1").lower()
        if text in self.exact:
            return True
        scheme, _, rest = text.partition("://")
        label, dot, parent = rest.partition(".")
        return bool(dot and label and "[" not in label) and f"{scheme}://*.{parent}" in (
            self.wildcards
        )

    def simple(self, origin: bytes | None) -> Headers:
        """The headers of a simple answer (not a preflight) to a request from ``origin``
        (``None``: it sent none). The hit path inlines this: ``answers.get``, else
        :meth:`learn`."""
        found = self.answers.get(origin)
        return found if found is not None else self.learn(origin)

    def learn(self, origin: bytes | None) -> Headers:
        """The headers of a simple answer to ``origin``, remembered (the miss of
        :attr:`answers`)."""
        assert origin is not None  # None is always in answers
        answer = self.answers[None]
        if not self.any and self.allows(origin):
            answer = [(b"access-control-allow-origin", origin), *self.tail]
        if len(self.answers) >= MEMO_SIZE:
            self.answers = {None: self.answers[None]}
        self.answers[origin] = answer
        return answer

    def preflight(self, origin: bytes, request: Mapping[bytes, bytes]) -> tuple[int, Headers, str]:
        """The answer to a preflight from ``origin`` with ``request``'s headers: 204 and its
        headers, or 403, a ``Vary`` and the reason."""
        failures = []
        if not self.allows(origin):
            failures.append("origin")
        method = request.get(b"access-control-request-method", b"").decode("latin-1")
        if method not in self.allowed_methods:
            failures.append("method")
        asked = request.get(b"access-control-request-headers")
        names = [n.strip().lower() for n in asked.decode("latin-1").split(",")] if asked else []
        if not self.any_header and not all(n in self.allowed_headers for n in names if n):
            failures.append("headers")
        if failures:
            return 403, [_PREFLIGHT_VARY], "Disallowed CORS " + ", ".join(failures)
        headers = [(b"access-control-allow-origin", b"*" if self.any else origin)]
        allow_headers = asked if self.any_header else self.listed_headers
        if allow_headers:
            headers.append((b"access-control-allow-headers", allow_headers))
        return 204, headers + self.preflight_tail, ""


async def options(x: Exchange, cors: Cors | None) -> None:
    """Answer an ``OPTIONS`` to a site with ``cors`` (``None``: none): a CORS preflight from
    the site's ``cors`` whatever the path, else 204 with the methods allowed."""
    origin = x.headers.get(b"origin")
    if cors is None:
        return await x.respond_empty(204, _OPTIONS)
    if origin is None or b"access-control-request-method" not in x.headers:
        x.common += cors.simple(origin)
        x.vary = cors.vary
        return await x.respond_empty(204, [_OPTIONS[0], cors.allow_methods])
    status, headers, refusal = cors.preflight(origin, x.headers)
    if refusal:
        return await x.respond_text(status, refusal, headers)
    return await x.respond_empty(status, headers)


def _join(names: Sequence[str]) -> bytes:
    return ", ".join(names).encode("latin-1")
