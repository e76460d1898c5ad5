"""CORS per site (``cors`` in the sites file, ``--cors``, ``--allowed-origins``): the policy's
checks and decisions as pure functions, and preflights and every kind of answer through one
real uvicorn server (sites by Host) and moto, shared by the module's tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from s3proxy.cli import main
from s3proxy.config import Config
from s3proxy.cors import Cors, CorsPolicy, parse
from s3proxy.sitesfile import SitesFileError, load
from tests.conftest import proxy_config, seeded_bucket
from tests.servers import ProxyServer, S3Server, free_port

APP = "https://app.example"
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
AUTH = {"authorization": "Bearer test-token"}


# -- the policy, pure --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param({"allow_origin": ["*"]}, "allow_origin: unknown key", id="unknown-key"),
        pytest.param({"allow_origins": "*"}, "allow_origins: must be a list", id="not-a-list"),
        pytest.param({"allow_origins": ["ftp://x"]}, '"ftp://x" is not an origin', id="ftp"),
        pytest.param({"allow_origins": ["null"]}, '"null" is not an origin', id="null"),
        pytest.param({"allow_origins": ["https://a/b"]}, "is not an origin", id="path"),
        pytest.param({"allow_origins": ["https://*.com"]}, "one label under", id="wild-tld"),
        pytest.param({"allow_methods": ["POST"]}, '"POST": the proxy answers', id="post"),
        pytest.param({"allow_headers": ["a b"]}, '"a b" is not a header', id="header"),
        pytest.param({"max_age": 86401}, "max_age: 86401 is not seconds", id="max-age"),
        pytest.param({"max_age": True}, "max_age: True is not seconds", id="max-age-bool"),
        pytest.param({"allow_credentials": "yes"}, "must be true or false", id="credentials"),
        pytest.param(
            {"allow_credentials": True, "expose_headers": ["*"]}, '"*" exposes', id="expose-*"
        ),
        pytest.param([1], "a table of allow_origins", id="not-a-table"),
        pytest.param("{", "not JSON", id="not-json"),
    ],
)
def test_policy_refusals(table: Any, message: str) -> None:
    """A bad ``cors`` table is refused with one line naming its key."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse(table)


def test_policy_normalised_and_kept_through_the_workers_json() -> None:
    """Origins and names are normalised, ``*`` methods are the three the proxy answers, and
    the policy survives the Config's JSON to the workers."""
    config = Config.build(
        bucket="b",
        cors=json.dumps(
            {"allow_origins": ["HTTPS://App.Example/"], "allow_methods": ["*"], "max_age": 5}
        ),
    )
    policy = config.site.cors
    assert policy.allow_origins == (APP,)
    assert policy.allow_methods == ("GET", "HEAD", "OPTIONS")
    assert Config.from_json(config.to_json()).site.cors == policy
    assert Config.build(bucket="b").site.cors == CorsPolicy()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        pytest.param(APP, True, id="exact"),
        pytest.param("HTTPS://APP.EXAMPLE", True, id="any-case"),
        pytest.param("http://app.example", False, id="other-scheme"),
        pytest.param("https://app.example:8443", False, id="other-port"),
        pytest.param("https://a.apps.example", True, id="wildcard"),
        pytest.param("https://apps.example", False, id="wildcard-not-parent"),
        pytest.param("https://a.b.apps.example", False, id="wildcard-one-label"),
        pytest.param("https://a.apps.example:8443", False, id="wildcard-port"),
        pytest.param("null", False, id="null"),
        pytest.param("https://my_host.internal", True, id="underscore"),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    """Exact origins in any case, and one-label wildcards with the same scheme and port."""
    cors = Cors(parse({}), (APP, "https://*.apps.example", "https://my_host.internal"))
    assert cors.allows(origin.encode()) is allowed
    assert bool(cors.simple(origin.encode())) is allowed


# -- through the server ------------------------------------------------------------------------

SITES = """
[sites.app]
hosts = ["app.test"]
bucket = "{bucket}"
error_document = "404.html"
cors = {{ allow_origins = ["https://app.example", "https://*.apps.example"], \
allow_headers = ["x-token", "range"], expose_headers = ["etag", "x-request-id"], \
max_age = 60, allow_credentials = true }}
routing_rules = [{{ Condition = {{ KeyPrefixEquals = "old/" }}, \
Redirect = {{ ReplaceKeyPrefixWith = "docs/" }} }}]
[[sites.app.access]]
paths = ["/private/*"]
allow = "basic"
htpasswd = "{htpasswd}"

[sites.open]
hosts = ["open.test"]
bucket = "{bucket}"
cors = {{ allow_origins = ["*"] }}

[sites.short]
hosts = ["short.test"]
bucket = "{bucket}"
redirect_all = "https://www.example.com"
allowed_origins = ["https://app.example"]

[sites.plain]
hosts = ["plain.test"]
bucket = "{bucket}"
default = true
"""
PAGE = b"<p>" + b"page " * 400 + b"</p>"  # compressible: Vary: Accept-Encoding


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    objects = {
        "page.html": PAGE,
        "data.bin": bytes(range(256)),
        "404.html": b"<p>not here</p>",
        "docs/index.html": b"<p>docs</p>",
        "private/secret.html": b"secret",
    }
    return seeded_bucket(s3, "cors", objects)


@pytest.fixture(scope="module")
def proxy(
    s3: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("cors")
    htpasswd = tmp / "htpasswd"
    htpasswd.write_text("")
    sites = tmp / "sites.toml"
    sites.write_text(SITES.format(bucket=bucket, htpasswd=htpasswd))
    config = proxy_config(
        s3, tmp / "cache", port=free_port(), auth_key="test-token", sites_file=str(sites)
    )
    server = ProxyServer(config).start()
    yield server
    server.stop()


def ask(
    proxy: ProxyServer, host: str, path: str, method: str = "GET", **headers: str
) -> httpx.Response:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return httpx.request(method, proxy.url + path, headers={"host": host, **headers}, timeout=30)


def fields(response: httpx.Response, name: str) -> list[str]:
    """Every value of header ``name``, one per field as sent."""
    return response.headers.get_list(name)


def preflight(proxy: ProxyServer, host: str, path: str, **headers: str) -> httpx.Response:
    return ask(proxy, host, path, "OPTIONS", **{"access_control_request_method": "GET", **headers})


def test_preflight_allowed(proxy: ProxyServer, s3: S3Server) -> None:
    """An allowed preflight is a 204 with the site's allow headers, Max-Age and Credentials,
    varying on the three headers it reads; it asks nothing of S3."""
    asked = len(s3.requests)
    r = preflight(
        proxy, "app.test", "/page.html", origin=APP, access_control_request_headers="X-Token"
    )
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert r.headers["access-control-allow-headers"] == "x-token, range"
    assert r.headers["access-control-max-age"] == "60"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert fields(r, "vary") == [PREFLIGHT_VARY]
    assert "content-length" not in r.headers  # RFC 9110 §8.6
    assert "x-request-id" in r.headers
    assert len(s3.requests) == asked


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({"origin": "https://evil.example"}, "origin", id="origin"),
        pytest.param({"origin": "https://a.b.apps.example"}, "origin", id="wildcard-two-labels"),
        pytest.param({"origin": APP, "access_control_request_method": "PUT"}, "method", id="put"),
        pytest.param(
            {"origin": APP, "access_control_request_headers": "x-token, x-evil"},
            "headers",
            id="header",
        ),
        pytest.param(
            {"origin": "https://evil.example", "access_control_request_method": "DELETE"},
            "origin, method",
            id="origin-and-method",
        ),
    ],
)
def test_preflight_refused(proxy: ProxyServer, headers: dict[str, str], reason: str) -> None:
    """A preflight with an origin, method or header the site does not allow is a 403 that
    names what, with no allow header."""
    r = preflight(proxy, "app.test", "/page.html", **headers)
    assert r.status_code == 403
    assert r.text == f"Disallowed CORS {reason}\n"
    assert not [name for name in r.headers if name.startswith("access-control-")]
    assert fields(r, "vary") == [PREFLIGHT_VARY]


def test_preflight_tells_nothing_of_objects(proxy: ProxyServer) -> None:
    """A preflight answers the same for a public object, a protected one, a missing one and
    a protected missing one (no S3 call, no access check)."""
    answers = [
        preflight(proxy, "app.test", path, origin=APP, access_control_request_headers="range")
        for path in ("/page.html", "/private/secret.html", "/nothing", "/private/nothing")
    ]
    seen = {
        json.dumps(
            sorted((k, v) for k, v in r.headers.items() if k not in ("x-request-id", "date"))
        )
        for r in answers
    }
    assert [r.status_code for r in answers] == [204] * 4 and len(seen) == 1


ANSWERS = [
    pytest.param("/page.html", {}, 200, id="200"),
    pytest.param("/page.html", {"accept_encoding": "gzip"}, 200, id="200-gzip"),
    pytest.param("/data.bin", {"range": "bytes=0-9"}, 206, id="206"),
    pytest.param("/data.bin", {"if_none_match": "*"}, 304, id="304"),
    pytest.param("/data.bin", {"if_match": '"other"'}, 412, id="412"),
    pytest.param("/data.bin", {"range": "bytes=999-"}, 416, id="416"),
    pytest.param("/nothing.html", {}, 404, id="404-error-document"),
    pytest.param("/docs", {}, 301, id="folder-redirect"),
    pytest.param("/old/x.html", {}, 301, id="routing-rule"),
    pytest.param("/private/secret.html", {}, 401, id="401-access-rule"),
    pytest.param("/%2e%2e/x", {}, 400, id="400-bad-path"),
]


@pytest.mark.parametrize(("path", "headers", "status"), ANSWERS)
def test_every_answer_carries_cors(
    proxy: ProxyServer, path: str, headers: dict[str, str], status: int
) -> None:
    """Every kind of answer (twice: a miss, then a hit) carries the allowed Origin with
    Expose-Headers and Credentials, once, and one Vary naming Origin once (merged with
    Accept-Encoding where the object varies on it too)."""
    for _ in range(2):
        r = ask(proxy, "app.test", path, origin=APP, **headers)
        assert r.status_code == status
        assert fields(r, "access-control-allow-origin") == [APP]
        assert fields(r, "access-control-expose-headers") == ["etag, x-request-id"]
        assert fields(r, "access-control-allow-credentials") == ["true"]
        assert [v for v in fields(r, "vary") if "Origin" in v] != []
        named = [token.strip() for v in fields(r, "vary") for token in v.split(",")]
        assert named.count("Origin") == 1
        if "accept_encoding" in headers:
            assert r.headers["content-encoding"] == "gzip"
            assert fields(r, "vary") == ["Accept-Encoding, Origin"]


@pytest.mark.parametrize(("path", "headers", "status"), ANSWERS)
@pytest.mark.parametrize("origin", [None, "https://evil.example"], ids=["no-origin", "other"])
def test_answers_vary_without_an_allowed_origin(
    proxy: ProxyServer, path: str, headers: dict[str, str], status: int, origin: str | None
) -> None:
    """Without an allowed Origin no CORS header is sent, but Vary: Origin still is, so a cache
    downstream never gives one origin's answer to another."""
    sent = {**headers, **({"origin": origin} if origin else {})}
    r = ask(proxy, "app.test", path, **sent)
    assert r.status_code == status
    assert not [name for name in r.headers if name.startswith("access-control-")]
    named = [token.strip() for v in fields(r, "vary") for token in v.split(",")]
    assert named.count("Origin") == 1


def test_any_origin(proxy: ProxyServer) -> None:
    """``["*"]`` answers ``*`` to every request, with an Origin or not, and varies on nothing
    for it; its preflight allows whatever headers are asked for."""
    for origin in ({}, {"origin": "https://x.example"}):
        for path, status in (("/page.html", 200), ("/nothing.html", 404)):
            r = ask(proxy, "open.test", path, **origin)
            assert r.status_code == status
            assert fields(r, "access-control-allow-origin") == ["*"]
            assert "Origin" not in r.headers.get("vary", "")
            assert "access-control-allow-credentials" not in r.headers
    r = preflight(
        proxy, "open.test", "/x", origin="https://x.example", access_control_request_headers="X-A"
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "X-A"
    assert r.headers["access-control-max-age"] == "600"


def test_allowed_origins_shorthand(proxy: ProxyServer) -> None:
    """``allowed_origins`` alone is the policy's origins with its defaults: a redirect_all
    301 carries the origin; a preflight echoes the headers asked, Max-Age 600."""
    r = ask(proxy, "short.test", "/a?b=1", origin=APP)
    assert r.status_code == 301 and r.headers["location"] == "https://www.example.com/a?b=1"
    assert r.headers["access-control-allow-origin"] == APP
    assert r.headers["vary"] == "Origin"
    r = preflight(proxy, "short.test", "/a", origin=APP, access_control_request_headers="x-b")
    assert r.status_code == 204
    assert r.headers["access-control-allow-headers"] == "x-b"
    assert r.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in r.headers


def test_no_cors(proxy: ProxyServer) -> None:
    """A site without CORS answers OPTIONS as before (204, the methods) and varies on
    nothing but Accept-Encoding."""
    r = preflight(proxy, "plain.test", "/page.html", origin=APP)
    assert r.status_code == 204
    assert r.headers["allow"] == r.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert "access-control-allow-origin" not in r.headers
    r = ask(proxy, "plain.test", "/page.html", origin=APP, accept_encoding="gzip")
    assert fields(r, "vary") == ["Accept-Encoding"]


def test_registered_site_cors(proxy: ProxyServer, bucket: str) -> None:
    """A site registered at runtime takes the same ``cors`` table, as JSON."""
    table = {
        "hosts": ["reg.test"],
        "bucket": bucket,
        "cors": {"allow_origins": [APP], "allow_methods": ["GET"], "max_age": 7},
    }
    url = f"{proxy.url}/_proxy/_private/sites/reg"
    assert httpx.put(url, json=table, headers=AUTH, timeout=30).status_code == 201
    try:
        r = preflight(proxy, "reg.test", "/page.html", origin=APP)
        assert r.status_code == 204
        assert r.headers["access-control-allow-methods"] == "GET"
        assert r.headers["access-control-max-age"] == "7"
        head = preflight(proxy, "reg.test", "/", origin=APP, access_control_request_method="HEAD")
        assert head.status_code == 403
        bad = {**table, "cors": {"allow_origins": ["*"], "allow_credentials": True}}
        refused = httpx.put(url, json=bad, headers=AUTH, timeout=30)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "INVALID_SITE"
        assert "site reg: cors: allow_credentials" in refused.json()["error"]["message"]
    finally:
        httpx.delete(url, headers=AUTH, timeout=30)


# -- the sites file and the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param(
            'cors = { allow_origins = ["*"], allow_credentials = true }',
            'site a: cors: allow_credentials = true with origin "*"',
            id="credentials-any",
        ),
        pytest.param(
            'allowed_origins = ["*"]\ncors = { allow_credentials = true }',
            'site a: cors: allow_credentials = true with origin "*"',
            id="credentials-any-shorthand",
        ),
        pytest.param(
            "cors = { max_age = 600, credentials = true }",
            "site a: cors: credentials: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            'allowed_origins = ["https://a.example"]\ncors = { allow_origins = ["https://b.x"] }',
            "site a: cors: allow_origins: allowed_origins says it too",
            id="both",
        ),
        pytest.param('cors = "yes"', "site a: cors: not JSON", id="not-a-table"),
    ],
)
def test_sites_file_refusals(tmp_path: Path, table: str, message: str) -> None:
    """A bad ``cors`` is refused at load with one line naming the file, the site and the key."""
    path = tmp_path / "sites.toml"
    path.write_text(f'[sites.a]\nhosts = ["a.example"]\nbucket = "b"\n{table}\n')
    with pytest.raises(SitesFileError) as caught:
        load(str(path), Config.build(bucket="b"))
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value


def test_cli_cors(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--cors`` (and ``S3PROXY_CORS``) take the JSON table, beside the unchanged
    ``--allowed-origins``; a bad one ends startup naming the option, exit code 2."""
    from s3proxy import server

    captured: list[Config] = []
    monkeypatch.setattr(server, "run", captured.append)
    runner = CliRunner()
    args = ["-b", "b", "--allowed-origins", f'["{APP}"]']
    ok = runner.invoke(main, args, env={"S3PROXY_CORS": '{"max_age": 9}'})
    assert ok.exit_code == 0, ok.output
    assert captured[-1].site.allowed_origins == (APP,)
    assert captured[-1].site.cors == CorsPolicy(max_age=9)
    bad = runner.invoke(main, [*args, "--cors", '{"max_age": -1}'])
    assert bad.exit_code == 2 and "--cors: max_age: -1 is not seconds" in bad.output
