"""S3 website hosting's redirects behind the proxy: an object's
``x-amz-website-redirect-location``, a site's ``redirect_all`` and ``routing_rules``, as pure
decisions and through a real uvicorn server and moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3proxy.config import Config
from s3proxy.sitesfile import SitesFileError, load
from s3proxy.website import object_redirect, parse_rules, route
from tests.servers import ProxyServer, S3Server


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("/new.html", b"/new.html", id="path"),
        pytest.param("/a b/é", b"/a%20b/%C3%A9", id="path-escaped"),
        pytest.param("https://example.com/x?y=1#z", b"https://example.com/x?y=1#z", id="https"),
        pytest.param("HTTP://example.com", b"HTTP://example.com", id="http-any-case"),
        pytest.param("//evil.example/x", None, id="protocol-relative"),
        pytest.param("/\\evil.example", None, id="backslash"),
        pytest.param("javascript:alert(1)", None, id="script"),
        pytest.param("ftp://example.com/", None, id="other-scheme"),
        pytest.param("https:///nohost", None, id="no-host"),
        pytest.param("new.html", None, id="relative"),
        pytest.param("/a\r\nset-cookie: x", None, id="header-injection"),
        pytest.param("", None, id="empty"),
    ],
)
def test_object_redirect(value: str, expected: bytes | None) -> None:
    """Only what S3 accepts (a same-site path or an http(s) URL) is honoured."""
    assert object_redirect(value) == expected


@pytest.mark.parametrize("body", [b"", b"<p>moved</p>"], ids=["empty", "with-body"])
def test_object_redirect_location_answers_301(
    put: Callable[..., None], proxy: ProxyServer, s3: S3Server, bucket: str, body: bytes
) -> None:
    """The object answers 301 to its location, on the miss and on the hit (no S3 call)."""
    put("old.html", body, WebsiteRedirectLocation="/new.html")
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(2):
            r = client.get("/old.html")
            assert r.status_code == 301 and r.headers["location"] == "/new.html"
            assert r.content == b""
        head = client.head("/old.html")
        assert head.status_code == 301 and head.headers["location"] == "/new.html"
    assert s3.gets(bucket, "old.html") == 1


def test_object_redirect_to_url_and_from_index(
    put: Callable[..., None], proxy: ProxyServer
) -> None:
    """A folder's index document redirects too; an http(s) URL is kept as it is."""
    put("docs/index.html", b"x", WebsiteRedirectLocation="https://docs.example.com/v2/")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/docs/")
        assert r.status_code == 301 and r.headers["location"] == "https://docs.example.com/v2/"


def test_object_redirect_not_honoured(put: Callable[..., None], proxy: ProxyServer) -> None:
    """A location S3 would refuse (another host by //) is ignored: the object is served."""
    put("page.html", b"page", WebsiteRedirectLocation="//evil.example/")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/page.html")
        assert r.status_code == 200 and r.content == b"page"


def test_plain_objects_unaffected(put: Callable[..., None], proxy: ProxyServer) -> None:
    """Objects without the header are served as before, on the miss and on the hit."""
    put("plain.html", b"plain")
    for _ in range(2):
        r = httpx.get(f"{proxy.url}/plain.html")
        assert r.status_code == 200 and r.content == b"plain" and "location" not in r.headers


# -- redirect_all and routing_rules -----------------------------------------------------------

DOCS = {"Condition": {"KeyPrefixEquals": "docs/"}, "Redirect": {"ReplaceKeyPrefixWith": "new/"}}
GONE = {"Condition": {"HttpErrorCodeReturnedEquals": "404"}, "Redirect": {"HostName": "h.example"}}


def rule(condition: dict[str, Any] | None = None, **redirect: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"Redirect": redirect}
    if condition is not None:
        out["Condition"] = condition
    return out


@pytest.mark.parametrize(
    ("rules", "key", "status", "expected"),
    [
        pytest.param(
            [DOCS], "docs/a b.html", None, (301, b"/new/a%20b.html", None, None), id="prefix"
        ),
        pytest.param([DOCS], "doc.html", None, None, id="no-match"),
        pytest.param([DOCS], "docs/a", 404, None, id="prefix-rule-is-before-lookup"),
        pytest.param([GONE], "x", None, None, id="error-rule-waits-for-error"),
        pytest.param([GONE], "x", 404, (301, b"/x", None, "h.example"), id="error-rule"),
        pytest.param([GONE], "x", 500, None, id="other-error"),
        pytest.param(
            [rule({"KeyPrefixEquals": "a/"}, ReplaceKeyWith="/b.html", HttpRedirectCode="302")],
            "a/x",
            None,
            (302, b"/b.html", None, None),
            id="replace-key",
        ),
        pytest.param(
            [rule({"KeyPrefixEquals": "a"}, ReplaceKeyPrefixWith="/evil.example/")],
            "a",
            None,
            (301, b"/evil.example/", None, None),
            id="one-leading-slash",
        ),
        pytest.param(
            [rule(None, Protocol="https"), DOCS],
            "docs/x",
            None,
            (301, b"/docs/x", "https", None),
            id="no-condition-first-wins",
        ),
        pytest.param(
            [rule({"KeyPrefixEquals": "q"}, ReplaceKeyWith="a?b#c")],
            "q",
            None,
            (301, b"/a%3Fb%23c", None, None),
            id="key-escaped",
        ),
    ],
)
def test_route(
    rules: list[Any], key: str, status: int | None, expected: tuple[Any, ...] | None
) -> None:
    """The first matching rule, S3's way: prefix rules before the lookup, error rules after."""
    to = route(parse_rules(rules), key, status)
    assert (None if to is None else (to.code, to.path, to.scheme, to.host)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("[", "not JSON", id="json"),
        pytest.param({"a": 1}, "a list of", id="not-list"),
        pytest.param([DOCS] * 51, "at most 50", id="too-many"),
        pytest.param([{"Redirect": {}}], "rule 1: Redirect: a table", id="empty-redirect"),
        pytest.param(
            [DOCS, {"Condition": {"KeyPrefixEquals": "a"}}], "rule 2: Redirect", id="no-redirect"
        ),
        pytest.param([rule(None, Host="x")], "rule 1: Redirect: Host: unknown key", id="unknown"),
        pytest.param([rule(None, HttpRedirectCode="404")], "HttpRedirectCode: 404", id="code"),
        pytest.param([rule(None, Protocol="ftp")], 'Protocol: "ftp"', id="protocol"),
        pytest.param([rule(None, HostName="a/b")], 'HostName: "a/b"', id="host"),
        pytest.param(
            [rule(None, ReplaceKeyWith="a", ReplaceKeyPrefixWith="b")], "exclude", id="both"
        ),
        pytest.param(
            [rule({"HttpErrorCodeReturnedEquals": "200"}, HostName="a")], "not 4xx/5xx", id="err"
        ),
        pytest.param([rule(None, ReplaceKeyWith="a\nb")], "one line", id="newline"),
    ],
)
def test_parse_rules_refusals(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_rules(value)
    assert "\n" not in str(raised.value)


def test_rules_survive_the_workers_json() -> None:
    """The config goes to each worker as JSON: the rules come back the same."""
    config = Config.build(bucket="b", routing_rules=json.dumps({"RoutingRules": [DOCS, GONE]}))
    assert Config.from_json(config.to_json()).site.routing_rules == config.site.routing_rules
    assert len(config.site.routing_rules) == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        pytest.param('redirect_all = "https://x.example/path"', "redirect_all: ", id="all"),
        pytest.param(
            "[[sites.a.routing_rules]]\nRedirect = { HttpRedirectCode = 200 }",
            "routing_rules: rule 1: Redirect: HttpRedirectCode: 200",
            id="rules",
        ),
    ],
)
def test_sites_file_refusals(tmp_path: Path, table: str, message: str) -> None:
    """One line naming the file, the site and the key."""
    path = tmp_path / "sites.toml"
    path.write_text(f'[sites.a]\nhosts = ["a.example"]\n{table}\n')
    with pytest.raises(SitesFileError) as raised:
        load(str(path), Config.build(bucket="b"))
    assert str(raised.value).startswith(f"{path}: site a: {message}")
    assert "\n" not in str(raised.value)


def test_redirect_all(start_proxy: Callable[..., ProxyServer]) -> None:
    """Every request goes to the other site, path and query kept; nothing asks S3."""
    proxy = start_proxy(redirect_all="https://www.example.com")
    for method in ("GET", "HEAD", "GET"):
        r = httpx.request(method, f"{proxy.url}/a/b%20c.html?x=1")
        assert r.status_code == 301
        assert r.headers["location"] == "https://www.example.com/a/b%20c.html?x=1"


def test_routing_rules(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer], s3: S3Server, bucket: str
) -> None:
    """A prefix rule redirects before S3 is asked; an error rule once the key is missing;
    objects are served as before, on the miss and the hit."""
    missing = rule(
        {"HttpErrorCodeReturnedEquals": "404"},
        Protocol="https",
        HostName="fallback.example",
        ReplaceKeyPrefixWith="report/",
        HttpRedirectCode="302",
    )
    proxy = start_proxy(routing_rules=json.dumps([DOCS, missing]))
    put("page.html", b"page")
    with httpx.Client(base_url=proxy.url) as client:
        for _ in range(2):
            r = client.get("/docs/a.html?v=2")
            assert r.status_code == 301 and r.headers["location"] == "/new/a.html?v=2"
            r = client.get("/gone.html")
            assert r.status_code == 302
            assert r.headers["location"] == "https://fallback.example/report/gone.html"
            r = client.get("/page.html")
            assert r.status_code == 200 and r.content == b"page"
    assert s3.gets(bucket, "docs/a.html") == 0
    assert s3.gets(bucket, "page.html") == 1


def test_404_rule_after_folder_redirect_before_error_document(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer]
) -> None:
    """/docs still goes to /docs/ (it is no error); a missing key takes the rule, not the
    error document."""
    proxy = start_proxy(error_document="404.html", routing_rules=json.dumps([GONE]))
    put("docs/index.html", b"docs")
    put("404.html", b"not here")
    r = httpx.get(f"{proxy.url}/docs")
    assert r.status_code == 301 and r.headers["location"] == "./docs/"
    r = httpx.get(f"{proxy.url}/nothing")
    assert r.status_code == 301 and r.headers["location"].endswith("://h.example/nothing")
