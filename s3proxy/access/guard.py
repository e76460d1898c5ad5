"""Where a site's request path meets its access rules (:class:`Guard`): the requested key is
checked before the cache is read, and every other key the site would read on the request's
behalf (a folder's index for a redirect, the SPA's index, the error document) is served only
if the same request may read it, else it counts as missing. What a protected rule grants is
answered ``Cache-Control: private`` with ``Vary`` on what granted it, by rewriting the
response head (:class:`PrivateSend`), so every kind of answer (200, 206, 304, 301, 404 pages)
carries it. Objects over a rule's ``presign_over`` answer 307 to a presigned S3 GET.
"""

from __future__ import annotations

from typing import Any

from s3proxy.access.gate import Gate
from s3proxy.access.rules import Rule
from s3proxy.access.verdict import Answer, Asking, Granted
from s3proxy.exchange import Exchange
from s3proxy.keys import Key
from s3proxy.origin import Origin
from s3proxy.outcome import Found, Outcome, PassThrough
from s3proxy.record import Network, client_ip

#: Cache-Control values -> their private form.
_PRIVATE: dict[bytes, bytes] = {}
#: Seconds a presigned URL is valid.
PRESIGN_SECONDS = 60


class PrivateSend:
    """An ASGI ``send`` whose response head is made private: ``public`` becomes ``private``
    in ``Cache-Control`` (RFC 9111 §5.2.2.7), or ``private`` is added, and ``Vary`` names
    ``vary`` (RFC 9110 §12.5.5), so no shared cache keeps the answer for someone else."""

    __slots__ = ("send", "vary")

    def __init__(self, send: Any, vary: bytes) -> None:
        self.send = send
        self.vary = vary

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = _private(message["headers"], self.vary)
        await self.send(message)


def _private(headers: list[tuple[bytes, bytes]], vary: bytes) -> list[tuple[bytes, bytes]]:
    out = headers.copy()
    for i, (name, value) in enumerate(out):
        if name == b"cache-control":
            made = _PRIVATE.get(value)
            if made is None:
                made = value.replace(b"public", b"private")
                made = made if b"private" in made else b"private, " + made
                if len(_PRIVATE) < 256:  # a handful of values in practice
                    _PRIVATE[value] = made
            out[i] = (name, made)
            break
    else:
        out.append((b"cache-control", b"private"))
    if vary:
        out.append((b"vary", vary))
    return out


def make_private(x: Exchange, vary: bytes) -> None:
    """Mark ``x``'s answer private (once; a second grant adds what it varies on)."""
    send = x.send
    if type(send) is not PrivateSend:
        x.send = PrivateSend(send, vary)
    elif vary and vary not in send.vary:
        send.vary = send.vary + b", " + vary if send.vary else vary


class Guard:
    """One site's :class:`Gate`, applied to its requests."""

    def __init__(
        self, gate: Gate, prefix: str, index_document: str, trusted: tuple[Network, ...]
    ) -> None:
        self.gate = gate
        self.prefix = prefix
        self.trusted = trusted
        self.index_suffix = len(index_document)

    def rule(self, key: str) -> Rule | None:
        """The rule that decides ``key`` (an object key), ``None`` when it is public."""
        return self.gate.rule_for("/" + key[len(self.prefix) :])

    def _asking(self, x: Exchange, key: str) -> Asking:
        scope, headers = x.scope, x.headers
        client = scope.get("client")
        address = client[0] if client else "-"
        if self.trusted:
            # Forwarded addresses only from trusted proxies: the failed-attempt throttle
            # counts per address, and anyone may send X-Forwarded-For.
            real, forwarded = headers.get(b"x-real-ip"), headers.get(b"x-forwarded-for")
            address = client_ip(real, forwarded, address, self.trusted)
        return Asking(
            "/" + key[len(self.prefix) :],
            scope["query_string"],
            headers.get(b"authorization"),
            headers.get(b"cookie"),
            address,
            scope.get("scheme", "http"),
            headers.get(b"host", b""),
            scope["raw_path"],
        )

    async def admit(self, x: Exchange, key: Key, rule: Rule) -> bool:
        """Whether ``x`` may go on to ``key``, which ``rule`` decides; if not, the answer
        (401, 403, 302 to a login, 429) has been sent."""
        x.presign_over = rule.presign_over
        if rule.public:
            return True
        gate, path, query = self.gate, "/" + key.key[len(self.prefix) :], x.scope["query_string"]
        verdict = gate.checks[rule.index].quick(x.headers, path, query, x.now)
        if verdict is None:
            verdict = await gate.decide(rule, self._asking(x, key.key), x.now)
        if type(verdict) is Granted:
            make_private(x, verdict.vary)
            if x.capture is not None:  # the fast path may replay it to whom this rule grants
                x.capture.granted((rule, path, verdict.vary))
            return True
        assert isinstance(verdict, Answer)
        await self.refuse(x, verdict)
        return False

    async def refuse(self, x: Exchange, answer: Answer) -> None:
        # Never stored by anyone: it depends on credentials, and may set a cookie.
        headers = [*answer.headers, (b"cache-control", b"no-store")]
        if answer.status in (301, 302, 307):
            headers.append((b"content-length", b"0"))
            return await x.respond_empty(answer.status, headers)
        return await x.respond_text(answer.status, answer.message, headers)

    def may_read(self, x: Exchange, key: str) -> bool:
        """Whether ``x`` may be answered with ``key`` in place of what it asked for (an SPA
        index, an error document, a folder's index): public, or granted without waiting."""
        rule = self.rule(key)
        if rule is None or rule.public:
            return True
        path = "/" + key[len(self.prefix) :]
        verdict = self.gate.quick(rule, x.headers, path, x.scope["query_string"], x.now)
        if type(verdict) is not Granted:
            return False
        make_private(x, verdict.vary)
        if x.capture is not None:  # another key's grant: not one the fast path replays
            x.capture.granted(None)
        return True

    async def page(self, x: Exchange) -> None:
        """The login flow's pages under ``/_proxy/auth/``."""
        path = x.scope["raw_path"].decode("latin-1")
        answer = await self.gate.page(path, self._asking(x, ""))
        await self.refuse(x, answer)

    async def offload(self, x: Exchange, origin: Origin, outcome: Outcome, key: str) -> bool:
        """Answer a GET of object ``key`` over the rule's ``presign_over`` with a 307 to a
        short-lived presigned S3 URL (the download leaves the proxy); whether it did. A
        pass-through's unclaimed S3 body is closed first."""
        limit = x.presign_over
        if not isinstance(outcome, Found) or limit is None or x.method != "GET":
            return False
        if outcome.meta.size <= limit:
            return False
        if isinstance(outcome, PassThrough):
            obj = outcome.fill.claim()
            if obj is not None:
                obj.close()
        url = await origin.client.presign_get(origin.bucket, key, PRESIGN_SECONDS)
        headers = [(b"location", url.encode("latin-1")), (b"cache-control", b"no-store")]
        await x.respond_empty(307, [*headers, (b"content-length", b"0")])
        return True
