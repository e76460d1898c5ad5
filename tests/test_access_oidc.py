"""OpenID Connect login against a real provider (npm's oidc-provider on node, see
tests/oidc_server.py): a headless Chromium logs in through its login form once; scripted HTTP
covers the rest (the wrong group, an expired or altered session, logout, bearer tokens)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from s3proxy.access.jose import sealing_key
from s3proxy.access.session import SESSION_COOKIE, Identity, Sessions
from s3proxy.config import Config
from tests import test_browser as browser_tests
from tests.access_helpers import SITE, sites_file
from tests.cdp import CdpSession, Chromium
from tests.oidc_server import CLIENT_ID, CLIENT_SECRET, OidcProvider, ProviderMissing, running
from tests.servers import ProxyServer, free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PORT = free_port()
PROXY = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    try:
        with running(
            f"{PROXY}/_proxy/auth/callback", f"{PROXY}/", tmp_path_factory.mktemp("oidc")
        ) as started:
            yield started
    except ProviderMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture
def proxy(
    provider: OidcProvider,
    put: Callable[..., None],
    base_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ProxyServer]:
    monkeypatch.setenv("DOCS_OIDC_SECRET", CLIENT_SECRET)
    put("staff/page.html", b"<title>staff</title><p>staff page</p>", ContentType="text/html")
    put("index.html", b"home")
    rule = {
        "paths": ["/staff/*"],
        "allow": "oidc",
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": {"env": "DOCS_OIDC_SECRET"},
        "groups": ["staff"],
        "scopes": ["openid", "email", "groups"],
    }
    # The provider knows one callback, so the proxy of every test listens on one port.
    path = sites_file([rule], tmp_path)
    server = ProxyServer(base_config.replace(port=PORT, sites_file=str(path))).start()
    try:
        yield server
    finally:
        server.stop()


def _login(client: httpx.Client, start: str, user: str) -> httpx.Response:
    """Follow the proxy to the provider, submit its login form as ``user``, come back."""
    form = client.get(start, follow_redirects=True)
    assert form.status_code == 200 and 'name="login"' in form.text, form.text[:500]
    action = re.search(r'action="([^"]+)"', form.text)
    assert action is not None
    submit = str(form.url.join(action.group(1)))
    fields = {"prompt": "login", "login": user, "password": "any"}
    return client.post(submit, data=fields, follow_redirects=True)


def test_login_through_the_provider_and_groups(proxy: ProxyServer) -> None:
    """alice (staff) gets the page privately after logging in, back where she started; bob
    (guests) is refused with 403; the anonymous visitor is sent to the provider."""
    anonymous = httpx.get(f"{PROXY}/staff/page.html?v=1")
    assert anonymous.status_code == 302
    login = urlsplit(anonymous.headers["location"])
    params = parse_qs(login.query)
    assert params["code_challenge_method"] == ["S256"] and params["client_id"] == [CLIENT_ID]
    assert {"state", "nonce", "code_challenge"} <= params.keys()
    started = anonymous.headers["set-cookie"]
    assert "HttpOnly" in started and "SameSite=Lax" in started and "Path=/_proxy/auth/" in started
    with httpx.Client() as alice:
        page = _login(alice, f"{PROXY}/staff/page.html?v=1", "alice")
        assert page.status_code == 200 and b"staff page" in page.content
        assert str(page.url) == f"{PROXY}/staff/page.html?v=1"
        assert page.headers["cache-control"].startswith("private")
        assert "Cookie" in page.headers.get_list("vary")
        session = next(c for c in alice.cookies.jar if c.name == SESSION_COOKIE)
        assert session.has_nonstandard_attr("HttpOnly") and not session.secure
        again = alice.get(f"{PROXY}/staff/page.html")  # a hit, with the session
        assert again.status_code == 200
        # An altered cookie is no session: back to the provider.
        value = session.value
        altered = value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")
        tampered = httpx.get(f"{PROXY}/staff/page.html", cookies={SESSION_COOKIE: altered})
        assert tampered.status_code == 302
        # Logout forgets the session here and ends it at the provider.
        out = alice.get(f"{PROXY}/_proxy/auth/logout")
        assert out.status_code == 302 and "/session/end" in out.headers["location"]
        assert alice.get(f"{PROXY}/staff/page.html").status_code == 302
    with httpx.Client() as bob:
        refused = _login(bob, f"{PROXY}/staff/page.html", "bob")
        assert refused.status_code == 403


def test_expired_session_and_foreign_state(proxy: ProxyServer, provider: OidcProvider) -> None:
    """A session past its expiry sends the browser to log in again; a callback whose state
    is not the login in progress is refused."""
    sessions = Sessions(sealing_key(CLIENT_SECRET.encode(), f"s3proxy session {SITE}"))
    now = int(time.time())
    url = f"{PROXY}/staff/page.html"
    fresh = sessions.make(Identity(provider.issuer, "alice", "", ("staff",), now + 60))
    assert httpx.get(url, cookies={SESSION_COOKIE: fresh}).status_code == 200
    stale = sessions.make(Identity(provider.issuer, "alice", "", ("staff",), now - 1))
    assert httpx.get(url, cookies={SESSION_COOKIE: stale}).status_code == 302
    foreign = sessions.make(Identity("http://elsewhere", "alice", "", ("staff",), now + 60))
    assert httpx.get(url, cookies={SESSION_COOKIE: foreign}).status_code == 403
    with httpx.Client() as client:
        client.get(url)  # a login in progress
        forged = client.get(f"{PROXY}/_proxy/auth/callback?code=x&state=not-it")
        assert forged.status_code == 400
    assert httpx.get(f"{PROXY}/_proxy/auth/callback?code=x&state=y").status_code == 400


def _provider_id_token(provider: OidcProvider, user: str) -> str:
    """An ID token the provider issues for ``user``: the code flow done by hand as the client."""
    verifier = base64.urlsafe_b64encode(b"v" * 48).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "client_id": CLIENT_ID,
        "response_type": "code",
        "scope": "openid email groups",
        "redirect_uri": f"{PROXY}/_proxy/auth/callback",
        "state": "s",
        "nonce": "n",
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
    }
    with httpx.Client() as client:
        form = client.get(f"{provider.issuer}/auth", params=params, follow_redirects=True)
        action = re.search(r'action="([^"]+)"', form.text)
        assert action is not None
        answer = client.post(
            str(form.url.join(action.group(1))),
            data={"prompt": "login", "login": user, "password": "any"},
        )
        while not answer.headers["location"].startswith(PROXY):
            answer = client.get(str(answer.url.join(answer.headers["location"])))
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        tokens = client.post(
            f"{provider.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": params["redirect_uri"],
                "code_verifier": verifier,
            },
            auth=(CLIENT_ID, CLIENT_SECRET),
        ).json()
    token: str = tokens["id_token"]
    return token


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        pytest.param({"sub": "alice", "groups": ["staff"]}, 200, id="valid"),
        pytest.param({"sub": "bob", "groups": ["guests"]}, 403, id="wrong-group"),
        pytest.param({"sub": "alice", "groups": ["staff"], "aud": "other"}, 401, id="audience"),
        pytest.param({"sub": "alice", "groups": ["staff"], "iss": "http://x"}, 401, id="issuer"),
        pytest.param({"sub": "alice", "groups": ["staff"], "exp": 1}, 401, id="expired"),
    ],
)
def test_bearer_tokens(
    proxy: ProxyServer, provider: OidcProvider, claims: dict[str, Any], status: int
) -> None:
    """A bearer JWT is checked against the issuer's published keys: signature, issuer,
    audience, expiry; then the rule's groups."""
    token = provider.mint(claims)
    answer = httpx.get(f"{PROXY}/staff/page.html", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == status
    if status == 200:
        assert "Authorization" in answer.headers.get_list("vary")
    if status == 401:
        assert answer.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


def test_bearer_tokens_from_the_provider_and_forged_ones(
    proxy: ProxyServer, provider: OidcProvider
) -> None:
    """An ID token the provider issued is accepted; one signed by another key, or altered,
    is not."""
    real = _provider_id_token(provider, "alice")
    url = f"{PROXY}/staff/page.html"
    assert httpx.get(url, headers={"authorization": f"Bearer {real}"}).status_code == 200
    stranger = RSAKey.generate_key(2048, parameters={"kid": "test-key"}, private=True)
    now = int(time.time())
    claims = {"iss": provider.issuer, "aud": CLIENT_ID, "exp": now + 60, "groups": ["staff"]}
    forged = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, stranger)
    assert httpx.get(url, headers={"authorization": f"Bearer {forged}"}).status_code == 401
    head, body, signature = real.split(".")
    altered = f"{head}.{body[:-2]}AA.{signature}"
    assert httpx.get(url, headers={"authorization": f"Bearer {altered}"}).status_code == 401


#: Headless Chromium with a fresh profile (test_browser's fixture).
chromium = browser_tests.chromium


def test_a_browser_logs_in_through_the_login_form(proxy: ProxyServer, chromium: Chromium) -> None:
    """Chromium is sent to the provider's login form, signs in as alice and lands on the page
    it asked for; the form is kept as tests/artifacts/oidc-login.png."""
    text = asyncio.run(_browser_login(chromium.page_websocket_url()))
    assert "staff page" in text


async def _browser_login(ws_url: str) -> str:
    async with CdpSession.open(ws_url) as session:
        await session.send("Page.enable")

        async def evaluate(expression: str) -> Any:
            result = await session.send(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}
            )
            return result["result"].get("value")

        async def wait(expression: str, within: float = 20) -> None:
            deadline = time.monotonic() + within
            while not await evaluate(expression):
                assert time.monotonic() < deadline, expression
                await asyncio.sleep(0.1)

        await session.send("Page.navigate", {"url": f"{PROXY}/staff/page.html"})
        await wait("!!document.querySelector('input[name=login]')")
        await evaluate("document.querySelector('input[name=login]').focus()")
        await session.send("Input.insertText", {"text": "alice"})
        await evaluate("document.querySelector('input[name=password]').focus()")
        await session.send("Input.insertText", {"text": "a password"})
        shot = await session.send("Page.captureScreenshot", {"format": "png"})
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "oidc-login.png").write_bytes(base64.b64decode(shot["data"]))
        await evaluate("document.querySelector('button[type=submit]').click()")
        await wait(f"location.href === '{PROXY}/staff/page.html'")
        await wait("document.body && document.body.innerText.includes('staff page')")
        text: str = await evaluate("document.body.innerText")
        return text
