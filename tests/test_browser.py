"""The demo site in a real browser: headless Chromium, driven over the DevTools Protocol, loads
the pages through s3proxy, then comes back and revalidates what it cached."""

from __future__ import annotations

import asyncio
import base64
import re
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from s3proxy.demo import SITE_DIR, content_type_for, site_files
from tests.cdp import CHROMIUM, CdpSession, Chromium, Event
from tests.servers import ProxyServer

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SCREENSHOT = ARTIFACTS / "browser-home.png"

# What every page of the demo site loads besides itself.
SUBRESOURCES = ("/css/site.css", "/js/app.js", "/img/logo.png")
# The link that points at no object: s3proxy answers 404 with the site's 404.html.
MISSING = "/missing-page"
# What Chromium logs for a document that arrives with a 404 status, and nothing else.
NOT_FOUND_LOG = "Failed to load resource: the server responded with a status of 404 (Not Found)"


@dataclass
class Request:
    """One request as the browser reported it (Network events with the same requestId)."""

    id: str
    position: int  # index of its requestWillBeSent in the session's events
    method: str
    url: str
    type: str  # Document, Stylesheet, Script, Image, Fetch, Other
    status: int | None = None  # Network.responseReceived: 200 for a revalidated cached copy
    wire_status: int | None = None  # responseReceivedExtraInfo: None if nothing hit the wire
    from_disk_cache: bool = False
    from_memory_cache: bool = False  # Network.requestServedFromCache
    sent_headers: dict[str, str] | None = None  # as sent on the wire (ExtraInfo)
    response_headers: dict[str, str] | None = None
    finished: bool = False
    failed: str | None = None  # Network.loadingFailed errorText

    @property
    def settled(self) -> bool:
        # A HEAD fetch whose (empty) body the page never reads stays open until Chromium
        # cancels it, so its response is as far as it gets (see _allowed_failure).
        return (
            self.finished
            or self.failed is not None
            or (self.method == "HEAD" and self.status is not None)
        )

    def summary(self, base: str) -> str:
        path = self.url.removeprefix(base)
        via = "memory" if self.from_memory_cache else "disk" if self.from_disk_cache else "net"
        validator = (self.sent_headers or {}).get("if-none-match")
        extra = " ".join(x for x in (self.failed, validator and f"If-None-Match {validator}") if x)
        return f"{self.method} {path} {self.status}/{self.wire_status} {via} {extra}".rstrip()


def requests_of(events: list[Event]) -> dict[str, Request]:
    """Every request in ``events``, by requestId (redirects do not occur on this site)."""
    found: dict[str, Request] = {}
    # ExtraInfo events may arrive before requestWillBeSent: keep them until it does.
    early: dict[str, list[Event]] = {}
    for position, event in enumerate(events):
        method, params = event["method"], event["params"]
        if not method.startswith("Network.") or "requestId" not in params:
            continue
        request_id = params["requestId"]
        if method == "Network.requestWillBeSent":
            found[request_id] = Request(
                request_id,
                position,
                params["request"]["method"],
                params["request"]["url"],
                params.get("type", "Other"),
            )
            for waiting in early.pop(request_id, []):
                _apply(found[request_id], waiting)
        elif request_id in found:
            _apply(found[request_id], event)
        else:
            early.setdefault(request_id, []).append(event)
    return found


def _apply(request: Request, event: Event) -> None:
    method, params = event["method"], event["params"]
    if method == "Network.responseReceived":
        response = params["response"]
        request.status = response["status"]
        request.from_disk_cache = bool(response.get("fromDiskCache"))
        request.response_headers = {k.lower(): v for k, v in response["headers"].items()}
    elif method == "Network.responseReceivedExtraInfo":
        request.wire_status = params["statusCode"]
    elif method == "Network.requestWillBeSentExtraInfo":
        request.sent_headers = {k.lower(): v for k, v in params["headers"].items()}
    elif method == "Network.requestServedFromCache":
        request.from_memory_cache = True
    elif method == "Network.loadingFinished":
        request.finished = True
    elif method == "Network.loadingFailed":
        request.failed = params["errorText"]


def _allowed_failure(request: Request) -> bool:
    """The one failure that is the browser's doing: app.js HEADs its page and never reads the
    (empty) body, and Chromium reports the unread body's cancellation as ERR_ABORTED after a
    complete 200. It does the same against Python's http.server, and not when the script reads
    the body."""
    return (
        request.method == "HEAD"
        and request.type == "Fetch"
        and request.status == 200
        and request.failed == "net::ERR_ABORTED"
    )


def console_errors(events: list[Event]) -> list[dict[str, Any]]:
    """Errors the page or the browser reported: console.error, uncaught exceptions, and
    error-level log entries (failed loads, CSP, mixed content)."""
    errors: list[dict[str, Any]] = []
    for event in events:
        method, params = event["method"], event["params"]
        if method == "Runtime.consoleAPICalled" and params["type"] == "error":
            errors.append({"console": [a.get("value") for a in params["args"]]})
        elif method == "Runtime.exceptionThrown":
            errors.append({"exception": params["exceptionDetails"]})
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append({"log": entry["source"], "text": entry["text"], "url": entry.get("url")})
    return errors


def _tag_text(html: str, tag: str) -> str:
    match = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", html, re.DOTALL)
    assert match is not None, f"no <{tag}>"
    return " ".join(match.group(1).split())


def expected_title(key: str) -> str:
    return _tag_text((SITE_DIR / key).read_text(encoding="utf-8"), "title")


class Browser:
    """The page under test: navigate, wait for the network to settle, read the DOM."""

    def __init__(self, session: CdpSession, base: str) -> None:
        self.session = session
        self.base = base

    async def load(self, start: Callable[[], Any], quiet: float = 0.3) -> list[Request]:
        """Run ``start`` (a navigate or reload command), wait for the load event and for every
        request since to settle, and return those requests."""
        mark = len(self.session.events)
        await start()
        await self.session.wait_for("Page.loadEventFired", after=mark, within=15)
        await self.settle(mark, quiet)
        return self.requests_since(mark)

    async def navigate(self, path: str) -> list[Request]:
        async def start() -> None:
            result = await self.session.send("Page.navigate", {"url": self.base + path})
            assert "errorText" not in result, result

        return await self.load(start)

    async def reload(self) -> list[Request]:
        return await self.load(lambda: self.session.send("Page.reload", {"ignoreCache": False}))

    async def settle(self, mark: int, quiet: float = 0.3) -> None:
        """Wait until the requests since ``mark`` have settled and ``quiet`` seconds passed
        without an event."""
        events = self.session.events

        def idle() -> bool:
            pending = [r for r in self.requests_since(mark) if not r.settled]
            return not pending and time.monotonic() - events[-1]["time"] >= quiet

        await self.session.wait_until(idle, within=15)

    def requests_since(self, mark: int) -> list[Request]:
        found = requests_of(self.session.events).values()
        return sorted((r for r in found if r.position >= mark), key=lambda r: r.position)

    async def evaluate(self, expression: str, within: float = 10) -> Any:
        result = await self.session.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            within=within,
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def text(self, selector: str) -> str | None:
        value = await self.evaluate(
            f"(document.querySelector({selector!r}) || {{textContent: null}}).textContent"
        )
        assert value is None or isinstance(value, str)
        return value

    async def wait_text(self, selector: str, unlike: str, within: float = 10) -> str:
        """The text of ``selector`` once it is no longer ``unlike`` (a script filled it)."""
        deadline = time.monotonic() + within
        while True:
            value = await self.text(selector)
            if value is not None and value != unlike:
                return value
            assert time.monotonic() < deadline, f"{selector} still {value!r}"
            await asyncio.sleep(0.05)


@pytest.fixture
def chromium() -> Iterator[Chromium]:
    """Headless Chromium with a fresh profile; its whole process group killed at teardown."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)")
    # Not tmp_path: pytest keeps those, and a profile is megabytes.
    with tempfile.TemporaryDirectory(prefix="s3proxy-chromium-") as tmp:
        browser = Chromium(Path(tmp) / "profile")
        try:
            browser.wait_ready()
            yield browser
        finally:
            browser.kill()


@pytest.fixture
def demo_proxy(put: Callable[..., None], start_proxy: Callable[..., ProxyServer]) -> ProxyServer:
    """s3proxy serving the demo site from the test bucket, with its 404 page."""
    for key, path in site_files():
        put(key, path.read_bytes(), ContentType=content_type_for(path))
    return start_proxy(error_document="404.html")


def test_demo_site_in_chromium(chromium: Chromium, demo_proxy: ProxyServer) -> None:
    """Chromium loads every page of the demo through s3proxy without a failed request or a
    console error, shows the 404 page for a missing one, and revalidates with 304s."""
    started = time.monotonic()
    report = asyncio.run(_browse(chromium.page_websocket_url(), demo_proxy.url))
    print(report)  # what the browser saw, shown with -rP or on a later failure
    assert time.monotonic() - started < 30, report


async def _browse(ws_url: str, base: str) -> str:
    async with CdpSession.open(ws_url) as session:
        browser = Browser(session, base)
        for domain in ("Network", "Page", "Runtime", "Log"):
            await session.send(f"{domain}.enable")
        await session.send("Network.setCacheDisabled", {"cacheDisabled": False})
        await session.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        log: list[str] = []

        # First visit: a cold browser cache (and a cold s3proxy cache).
        first = await browser.navigate("/")
        _check_page(first, base, "/", status=200, log=log)
        # Cold: the document and each subresource came over the network, once.
        over_wire = [r.url.removeprefix(base) for r in first if r.wire_status == 200]
        assert sorted(over_wire) == sorted(["/", "/", *SUBRESOURCES]), log  # "/" twice: HEAD
        # The validators s3proxy gave each GET: the browser must send them back to revalidate.
        etags = {
            r.url.removeprefix(base): (r.response_headers or {})["etag"]
            for r in first
            if r.method == "GET" and r.wire_status == 200
        }
        assert await browser.text("title") == expected_title("index.html")
        loaded_at = await browser.wait_text("[data-loaded-at]", unlike="(needs JavaScript)")
        etag_shown = await browser.wait_text('[data-header="etag"]', unlike="\u2014")
        head = [r for r in first if r.method == "HEAD"]
        assert len(head) == 1 and head[0].response_headers is not None, log
        assert etag_shown == head[0].response_headers["etag"], (loaded_at, etag_shown)

        for path, key in (("/docs/", "docs/index.html"), ("/docs/guide.html", "docs/guide.html")):
            page = await browser.navigate(path)
            _check_page(page, base, path, status=200, log=log)
            assert await browser.text("title") == expected_title(key)
            assert await browser.wait_text("[data-loaded-at]", unlike="(needs JavaScript)")

        errors_before_404 = console_errors(session.events)
        assert errors_before_404 == [], errors_before_404
        missing = await browser.navigate(MISSING)
        _check_page(missing, base, MISSING, status=404, log=log)
        assert await browser.text("title") == expected_title("404.html")
        assert await browser.text("h1") == _tag_text(
            (SITE_DIR / "404.html").read_text(encoding="utf-8"), "h1"
        )

        # Second visit: a normal navigation to "/", then a reload, which revalidates.
        again = await browser.navigate("/")
        _check_page(again, base, "/", status=200, log=log)
        document = again[0]
        # Fresh for max-age: Chromium answers from its disk cache and asks nobody.
        assert document.from_disk_cache and document.wire_status is None, log

        reloaded = await browser.reload()
        _check_page(reloaded, base, "/", status=200, log=log)
        document = reloaded[0]
        assert document.sent_headers is not None, log
        assert document.sent_headers.get("if-none-match") == etags["/"], document.sent_headers
        assert document.status == 200 and document.wire_status == 304, log
        assert not document.from_disk_cache, log

        # A reload revalidates only the document; fetch(cache: "no-cache") makes the browser
        # revalidate each subresource against its HTTP cache, with its stored validators.
        mark = len(session.events)
        fetched = await browser.evaluate(
            "Promise.all("
            + repr(list(SUBRESOURCES))
            + ".map(u => fetch(u, {cache: 'no-cache'})"
            + ".then(async r => [r.status, (await r.arrayBuffer()).byteLength])))"
        )
        await browser.settle(mark)
        sizes = {key: path.stat().st_size for key, path in site_files()}
        assert fetched == [[200, sizes[p.lstrip("/")]] for p in SUBRESOURCES], fetched
        revalidated = browser.requests_since(mark)
        log.append("revalidate: " + "; ".join(r.summary(base) for r in revalidated))
        assert sorted(r.url.removeprefix(base) for r in revalidated) == sorted(SUBRESOURCES)
        for request in revalidated:
            assert request.sent_headers is not None, log
            sent = request.sent_headers.get("if-none-match")
            assert sent == etags[request.url.removeprefix(base)], (request, log)
            assert (request.status, request.wire_status) == (200, 304), (request, log)
            assert request.finished and request.failed is None, (request, log)

        # The JavaScript ran on the revisit too, and the page shows what s3proxy sent.
        assert await browser.wait_text("[data-loaded-at]", unlike="(needs JavaScript)")
        assert (await browser.wait_text('[data-header="etag"]', unlike="\u2014")).startswith('"')

        shot = await session.send("Page.captureScreenshot", {"format": "png"}, within=15)
        png = base64.b64decode(shot["data"])
        ARTIFACTS.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(png)
        _check_png(png, width=1280, height=900)

        # Every error logged, over both visits: only Chromium's line for the 404 document.
        errors = console_errors(session.events)
        assert errors == [{"log": "network", "text": NOT_FOUND_LOG, "url": base + MISSING}], errors
        return "\n".join(log)


def _check_page(requests: list[Request], base: str, path: str, status: int, log: list[str]) -> None:
    """The document came first with ``status``, the page's subresources all loaded with 200,
    nothing left the proxy's origin, and nothing failed but the tolerated HEAD."""
    log.append(f"{path}: " + "; ".join(r.summary(base) for r in requests))
    assert requests and requests[0].type == "Document", log
    assert requests[0].url == base + path and requests[0].status == status, log
    assert all(r.url.startswith(base + "/") for r in requests), log
    assert {r.url.removeprefix(base) for r in requests[1:] if r.method == "GET"} >= set(
        SUBRESOURCES
    ), log
    for request in requests:
        if request.failed is not None:
            assert _allowed_failure(request), (request, log)
            continue
        assert request.settled, (request, log)
        expected = status if request is requests[0] else 200
        assert request.status == expected, (request, log)
        # On the wire, 200 (or the 404), or 304 for a revalidation.
        assert request.wire_status in (None, expected, 304), (request, log)


def _check_png(data: bytes, width: int, height: int) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (width, height)
    assert data[-8:-4] == b"IEND"
    assert len(data) > 5 * 1024, len(data)
