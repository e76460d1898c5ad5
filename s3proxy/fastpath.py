"""The fast path: fresh cache hits answered by the HTTP protocol itself, before any ASGI scope,
task or message exists (``--fast-path``; :class:`~s3proxy.protocol.StrictProtocol` calls
:meth:`FastPath.answer` when a request head is complete).

Its answers are the slow path's by construction, not by a second implementation:

- **The slow path fills the memo.** A request of the shape below without a valid answer goes
  through the ASGI app unchanged, with a :class:`Capture` in its scope: the
  :class:`~s3proxy.exchange.Exchange` tells it what it read and rendered, the protocol's own
  ``send`` (below every middleware and ``[[headers]]`` rule) what was written. If that was the
  answer of one fresh hit (a 200, 206, 304, 412 or 416 the plan made from the entry and the
  key's fields), it becomes an :class:`Answer`: the head as written with the per-request
  fields (``Age``, ``x-request-id``) as slots, the body, the account for the log line.
- **One hook invalidates.** An answer is used only while the cache hands out the very entry it
  was made from (``cache.get(key) is entry``), and that entry is fresh. Every change of the
  cache replaces or drops the entry: a fill, a revalidation, a clear, a purge or an eviction in
  any worker (the shared generation), a body or variant loaded into memory. A reload or a
  registration builds new sites; the memo is emptied when the router's generation changes.
- **The same functions** route (:meth:`Hosting.route <s3proxy.hosting.Hosting.route>`), make
  the request id (:func:`~s3proxy.exchange.request_id_for`), find the client (uvicorn's
  ``ProxyHeadersMiddleware`` itself, run on the request) and write the log line and the
  metrics record (:func:`~s3proxy.exchange.account`, from the ``Said`` of the answer).

The shape: GET or HEAD; no body (``Content-Length``, ``Transfer-Encoding``), ``Expect`` or
``Upgrade``; nothing owed on the connection (no earlier response pending, writes not paused).
An answer an access rule granted is replayed only after that rule's own quick check grants
the request alike (:meth:`Gate.quick <s3proxy.access.gate.Gate.quick>`, as ``Guard.admit``
makes it first). Anything else is the slow path's, unchanged.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from s3proxy import logging as log
from s3proxy.access.guard import PrivateSend
from s3proxy.access.rules import Rule
from s3proxy.access.verdict import Granted
from s3proxy.cache import Cache, Entry
from s3proxy.exchange import CAPTURE, Exchange, Said, account, pick_headers, request_id_for
from s3proxy.heads import Head, forwarded_client, template
from s3proxy.outcome import Hit, Outcome
from s3proxy.plan import Body, Headers, Plan

if TYPE_CHECKING:
    from s3proxy.hosting import Hosting, Served
    from s3proxy.site import Site

_logger = log.get_logger("s3proxy.fastpath")
#: Answers kept per process; the memo is emptied when full (random paths must not grow it).
#: An answer takes ~1.9 KB besides its body (tracemalloc: a 100-byte range's, with its key,
#: head, request-line parts and exchange account), so at most ~16 MB.
MEMO_SIZE = 8_192
#: Request fields that send a request down the slow path, whatever else it is.
_DECLINE = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
#: Request fields the site reads that cannot change an answer the memo may hold: routing
#: (the site is in the key), the log line's, the request id (a slot), and the credentials
#: only access rules read (an answer a rule granted is never kept). Every other field the
#: site reads (they all come through :func:`~s3proxy.exchange.pick_headers`) is in the key.
_UNKEYED = frozenset(
    b"host referer user-agent x-request-id x-real-ip x-forwarded-for authorization cookie".split()
)
_CLOSE = b"connection: close\r\n\r\n"  # as uvicorn writes it, and the blank line
_JOINED = 16 * 1024  # a larger body is written beside its head, not copied after it

#: (site, method, request target, the fields the site reads but :data:`_UNKEYED`, in order):
#: what an answer depends on beyond the cache entry and the per-request fields.
MemoKey = tuple[Any, bytes, bytes, tuple[tuple[bytes, bytes], ...]]
#: An access grant: the rule, the key path it checked, the Vary it answered with.
Grant = tuple[Rule, str, bytes]


@dataclass(slots=True, eq=False)
class Answer:
    """An answer the slow path wrote for a fresh hit, ready to be written again while ``entry``
    is the cache's: ``head`` (a :class:`~s3proxy.heads.Head`), ``body``, and
    what the request's line and record said of it (``said``)."""

    entry: Entry
    cache: Cache
    code: int  # the status
    head: Head
    body: bytes  # b"" for HEAD, 304, 412
    said: Said
    query: bytes  # the request's (an access rule's check reads it)
    grant: Grant | None = None  # replayed only to a request this grant's rule grants alike
    age: tuple[int, bytes] = (-1, b"")  # the last Age field written, by its seconds

    def __post_init__(self) -> None:
        self.head.parts[0] = STATUS_LINE[self.code]

    def own_bytes(self) -> int:
        """The body's bytes, unless the entry holds them too (in memory, or as a variant)."""
        body, entry = self.body, self.entry
        if not body or body is entry.body:
            return 0
        if entry.variants is not None and any(body is v for v in entry.variants.values()):
            return 0
        return len(body)


@dataclass(slots=True, eq=False)
class Capture:
    """What the slow path did for one request the fast path could not answer (see the module
    docstring): made an :class:`Answer` once its response is written, if it was the answer of
    one fresh hit that depends on nothing but what the memo's key holds."""

    fast: FastPath
    key: MemoKey
    site: Site
    reads: int = 0
    entry: Entry | None = None
    plan: Plan | None = None
    x: Exchange | None = None
    status: int = 0
    headers: Headers = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    grants: list[Grant | None] = field(default_factory=list)

    # -- told by the Exchange --------------------------------------------------------------

    def noted(self, outcome: Outcome) -> None:
        """A read of the request: only one fresh hit of an object with a body can be memo'd
        (an SPA index or error page depends on a second key; a zero-byte object on a probe
        of its folder; an object redirect is no answer of the object)."""
        self.reads += 1
        if type(outcome) is Hit:
            meta = outcome.entry.meta
            if meta is not None and meta.size and meta.website_redirect_location is None:
                self.entry = outcome.entry

    def rendered(self, plan: Plan, x: Exchange) -> None:
        self.plan, self.x = plan, x

    def granted(self, grant: Grant | None) -> None:
        """An access rule granted the request (``None``: a key other than the one asked)."""
        self.grants.append(grant)

    # -- told by the protocol's send -------------------------------------------------------

    def watch(self, protocol: Any) -> None:
        """Ride along with the request ``protocol`` just handed to the app."""
        protocol.scope[CAPTURE] = self
        cycle = protocol.cycle
        cycle.send = self.wrap(cycle.send)

    def wrap(self, send: Any) -> Any:
        """``send`` (the protocol's own), noting what it wrote once it wrote it; the last
        body message makes the answer, before anything else on the loop runs (so the next
        request on the connection finds it)."""
        limit = self.site.readthrough.cache.memory_object_size

        async def capturing(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                self.status, self.headers = message["status"], message["headers"]
                return
            body = message.get("body", b"")
            if body:
                self.parts.append(body)
                self.size += len(body)
                if self.size > limit:  # a large body: not memo'd
                    self.status, self.parts = 0, []
            if not message.get("more_body", False):
                self.finished()

        return capturing

    def finished(self) -> None:
        """The response is written: keep it if it answered one fresh hit, as a function of
        the entry and the key alone (no access rule granted it: that depends on who asks; no
        multipart body: its boundary is random)."""
        x, entry, plan, status = self.x, self.entry, self.plan, self.status
        grants = self.grants
        if x is not None and type(x.send) is PrivateSend and (len(grants) != 1 or not grants[0]):
            self.fast.decline(self.key)  # granted otherwise than by the key's one rule
            return
        if x is None or entry is None or plan is None or self.reads != 1 or x.cache != "hit":
            return
        if not status or status != x.status or status != plan.status:
            return
        if plan.body is Body.RANGES and len(plan.ranges) > 1:
            return
        age = next((h for h in plan.headers if h[0] == b"age"), None)
        chunked = x.method != "HEAD" and status not in (204, 304)  # without a length
        head = template(self.headers, age, x.common[0], chunked)
        if head is not None:
            body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
            cache, site = self.site.readthrough.cache, self.site
            said = x.said(site.name, len(body))  # the exchange counts it after this
            answer = Answer(entry, cache, status, head, body, said, x.scope["query_string"])
            answer.grant = grants[0] if grants else None
            self.fast.keep(self.key, answer)


async def _keep_scope(scope: Any, receive: Any, send: Any) -> None:
    """The app of the ProxyHeadersMiddleware copy the fast path runs: it only sets the scope."""


class FastPath:
    """The memo of one app's answers, and :meth:`answer`. Made at startup with the app's one
    site (``site``) or its router (``hosting``, with a sites file); :meth:`close` at shutdown."""

    def __init__(self, site: Site | None, hosting: Hosting | None) -> None:
        self.site, self.hosting = site, hosting
        self.memo: dict[MemoKey, Answer] = {}
        #: Keys granted otherwise than by their one rule: never kept, so not captured either.
        self.declined: set[MemoKey] = set()
        #: Requests answered here (tests read it: the fast path did serve).
        self.answered = 0
        self._served: Served | None = None
        self._bytes = 0  # bodies the memo's answers hold
        self._proxy: Any = None  # uvicorn's ProxyHeadersMiddleware, run on an empty app
        self._dates: Any = None  # uvicorn's default headers, and (next) as written
        self._date_bytes, self._failed = b"", False  # (and whether a failure was logged)

    def close(self) -> None:
        self.site = self.hosting = None
        self.memo.clear()

    def bind(self, proxy: ProxyHeadersMiddleware | None) -> None:
        if proxy is not None and self._proxy is None:
            self._proxy = copy.copy(proxy)
            self._proxy.app = _keep_scope

    def keep(self, key: MemoKey, answer: Answer) -> None:
        """Remember ``answer``. The memo holds at most :data:`MEMO_SIZE` answers, and bodies
        of at most a quarter of the memory tier's budget besides those the cache holds (a
        variant read from disk for an entry whose body is not in memory; bodies the cache
        dropped since): past either, it starts again empty."""
        memo, size, budget = self.memo, answer.own_bytes(), answer.cache.memory.budget // 4
        if size > budget:
            return
        if len(memo) >= MEMO_SIZE or self._bytes + size > budget:
            self._clear()
        old = memo.get(key)
        if old is not None:
            self._bytes -= old.own_bytes()
        memo[key] = answer
        self._bytes += size

    def decline(self, key: MemoKey) -> None:
        """Send ``key``'s requests down the slow path without a capture from now on."""
        if len(self.declined) >= MEMO_SIZE:
            self.declined.clear()
        self.declined.add(key)

    def _clear(self) -> None:
        self.memo.clear()
        self.declined.clear()
        self._bytes = 0

    def answer(self, protocol: Any) -> Capture | bool:
        """Answer the request whose head ``protocol`` (a :class:`StrictProtocol`) just
        parsed: ``True`` if it is answered (or dropped: the connection is closing, as the
        slow path drops what follows a ``Connection: close``); else a :class:`Capture` for
        the slow path to fill, or ``False``: not a request the fast path answers. A failure
        of its own before it wrote anything sends the request down the slow path (logged
        once); after, it propagates (the connection ends)."""
        answered = self.answered
        try:
            return self._answer(protocol)
        except Exception:
            if self.answered != answered:
                raise
            if not self._failed:
                self._failed = True
                _logger.exception("fast_path_failed")
            return False

    def _answer(self, protocol: Any) -> Capture | bool:
        started = time.perf_counter()
        if protocol.transport.is_closing():
            return True
        cycle = protocol.cycle
        if (cycle is not None and not cycle.response_complete) or protocol.pipeline:
            return False  # a response is owed first (RFC 9112 §9.3.2)
        flow = protocol.flow
        if flow.write_paused or flow.read_paused:  # (StrictProtocol.answered resumes none)
            return False
        method = protocol.parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return False
        headers = protocol.headers
        picked = pick_headers(headers)  # as Exchange.begin picks them (repeats joined)
        if not _DECLINE.isdisjoint(picked):
            return False
        keyed: tuple[tuple[bytes, bytes], ...] = ()
        if not _UNKEYED.issuperset(picked):
            keyed = tuple([item for item in picked.items() if item[0] not in _UNKEYED])
        client = protocol.client
        if self._proxy is not None and b"x-forwarded-for" in picked:
            client = forwarded_client(self._proxy, client, headers)
        site = self.site if self.hosting is None else self._route(headers, client)
        if site is None:
            return False
        key: MemoKey = (site, method, protocol.url, keyed)
        answer = self.memo.get(key)
        if answer is None:
            return False if key in self.declined else Capture(self, key, site)
        entry = answer.entry
        now = time.time()
        if answer.cache.get(entry.key) is not entry or not now < entry.expires_at:
            return Capture(self, key, site)
        if (grant := answer.grant) is not None:  # the rule's check, as Guard.admit makes it
            rule, path, vary = grant
            assert site.guard is not None
            verdict = site.guard.gate.quick(rule, picked, path, answer.query, now)
            if type(verdict) is not Granted or verdict.vary != vary:
                return False  # the slow path decides (and answers 401, 403, ...)
        self._send(protocol, site, client, picked, answer, now, started)
        return True

    def _route(self, headers: list[tuple[bytes, bytes]], client: Any) -> Site | None:
        hosting = self.hosting
        if hosting is None:
            return self.site
        served = hosting.served
        if served is not self._served:  # a reload or registration: new sites, new answers
            self._clear()
            self._served = served
        hosted = hosting.route(headers, client)
        return None if hosted is None else hosted.site

    def _send(
        self,
        protocol: Any,
        site: Site,
        client: Any,
        picked: dict[bytes, bytes],
        answer: Answer,
        now: float,
        started: float,
    ) -> None:
        """Write ``answer`` as uvicorn writes a response; account for it as the site does."""
        version, keep_alive = protocol.version()
        peer = client[0] if client else None
        rid = request_id_for(picked, peer, site.trusted)
        parts, age_at, rid_at = answer.head
        head = parts.copy()
        head[1] = self._date(protocol.server_state.default_headers)
        if age_at:  # formatted once a second (2.9k instructions a time)
            age = max(0, int(now - answer.entry.stored_at))
            if answer.age[0] != age:
                answer.age = (age, b"age: %d\r\n" % age)
            head[age_at] = answer.age[1]
        if rid_at:
            head[rid_at] = rid
        if not keep_alive:
            head[-1] = head[-1][:-2] + _CLOSE  # before the blank line
        transport, body = protocol.transport, answer.body
        if len(body) > _JOINED:
            transport.writelines((b"".join(head), body))
        else:
            head.append(body)
            transport.write(b"".join(head))
        self.answered += 1
        protocol.answered(keep_alive)
        site.counts["hit"] += 1  # as Site._account counts
        elapsed = time.perf_counter() - started
        account(answer.said, picked, peer, site.trusted, rid, version, elapsed, site.recorder)

    def _date(self, defaults: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (``date``, renewed every second) as it writes them."""
        if defaults is not self._dates:
            self._dates = defaults
            self._date_bytes = b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in defaults)
        return self._date_bytes


def find(app: Any) -> FastPath | None:
    """The fast path of the s3proxy app under uvicorn's ``app`` (through its
    ProxyHeadersMiddleware, bound to it), or ``None``: off, or another middleware between
    them that the fast path would skip."""
    proxy = None
    while isinstance(app, ProxyHeadersMiddleware):
        proxy, app = app, app.app
    fast = getattr(app, "fastpath", None)
    if not isinstance(fast, FastPath):
        return None
    fast.bind(proxy)
    return fast
