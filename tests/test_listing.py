"""Folder listings (``listing = true``): the pure pieces (Accept, links, escaping, pages), and
through a real uvicorn server and moto: on and off, HTML and JSON, index wins, the prefix
bound, access rules, pagination and truncation, caching for the TTL, purges, S3 failures."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urljoin

import httpx
import pytest
from botocore.retries.standard import ExponentialBackoff

from s3proxy import listing, registry
from s3proxy.config import Config
from s3proxy.listing import File, FolderPage, Listing, build, folders_above, href, prefers_json
from s3proxy.origin import RETRY_ATTEMPTS
from s3proxy.sitesfile import parse
from tests.access_helpers import basic, htpasswd_line
from tests.conftest import proxy_config, seeded_bucket
from tests.servers import Fault, ProxyServer, S3Server, free_port
from tests.test_website import raw_get

# -- pure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "json"),
    [
        pytest.param(None, False, id="none"),
        pytest.param(b"application/json", True, id="json"),
        pytest.param(b"*/*", False, id="anything-is-html"),
        pytest.param(
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False, id="browser"
        ),
        pytest.param(b"application/json, text/html;q=0.9", True, id="json-first"),
        pytest.param(b"text/html;q=0.5, application/*", True, id="type-wildcard"),
        pytest.param(b"application/json;q=0.5, text/html", False, id="html-weighs-more"),
        pytest.param(b"application/json;q=0, */*", False, id="json-refused"),
        pytest.param(b"application/json;q=x", False, id="bad-weight"),
    ],
)
def test_prefers_json(accept: bytes | None, json: bool) -> None:
    """JSON only when Accept weighs it above HTML (the most specific range decides)."""
    assert prefers_json(accept) is json


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("a.html", "./a.html", id="plain"),
        pytest.param("sub/", "./sub/", id="folder"),
        pytest.param("a b#c?d%e.txt", "./a%20b%23c%3Fd%25e.txt", id="reserved"),
        pytest.param("é.txt", "./%C3%A9.txt", id="unicode"),
        pytest.param("javascript:alert(1)", "./javascript%3Aalert%281%29", id="scheme-like"),
        pytest.param("/", ".//", id="empty-segment-folder"),
        pytest.param("../", None, id="dot-dot"),
        pytest.param(".", None, id="dot"),
        pytest.param("a\nb", None, id="control"),
    ],
)
def test_href(name: str, expected: str | None) -> None:
    """Links are relative, percent-encoded byte by byte; unservable names get none."""
    assert href(name) == expected


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        pytest.param("a/b/c.html", "", ["a/b/", "a/", ""], id="nested"),
        pytest.param("c.html", "", [""], id="root"),
        pytest.param("v2/a/x", "v2/", ["v2/a/", "v2/"], id="prefix"),
        pytest.param("v2/index.html", "v2/", ["v2/"], id="prefix-root"),
    ],
)
def test_folders_above(key: str, prefix: str, expected: list[str]) -> None:
    """A purged key drops its folder's listing and those above it, up to the site's root."""
    assert folders_above(key, prefix) == expected


def test_page_from_response_and_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page keeps names below the folder and drops the folder's own marker object; a build
    past MAX_ENTRIES is cut and says so; every name in the HTML is escaped."""
    when = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
    page = FolderPage.from_response(
        {
            "CommonPrefixes": [{"Prefix": "d/<b>/"}],
            "Contents": [
                {"Key": "d/", "Size": 0, "LastModified": when},
                {"Key": "d/<i>&'\".txt", "Size": 2048, "LastModified": when},
            ],
            "IsTruncated": True,
            "NextContinuationToken": "t",
        },
        "d/",
    )
    assert page == FolderPage(("<b>/",), (File("<i>&'\".txt", 2048, when.timestamp()),), "t")
    shown = build("/d/", [page], lambda name: True, truncated=False)
    page_html = shown.to_html().decode()
    assert "<b>" not in page_html and "<i>" not in page_html
    assert "&lt;b&gt;/" in page_html and "&lt;i&gt;&amp;&#x27;&quot;.txt" in page_html
    assert 'href="./%3Cb%3E/"' in page_html and "2.0 KiB" in page_html
    assert "2026-12-02 04:00" in page_html
    monkeypatch.setattr(listing, "MAX_ENTRIES", 8)
    many = FolderPage(tuple(f"f{i}/" for i in range(6)), (File("x", 1, None),) * 6, None)
    cut = build("/", [many], lambda name: name != "f0/", truncated=False)
    assert cut == Listing("/", many.folders[1:], many.files[:3], truncated=True)


def test_a_setting_of_the_file_and_of_registrations() -> None:
    """``listing`` is a site key of the sites file and of a registration's JSON body, off
    by default, checked as a boolean."""
    base = Config.build(bucket="b")
    sites = parse({"sites": {"a": {"hosts": ["a.test"], "listing": True}}}, "s.toml", base)
    assert sites.sites["a"].settings.listing is True
    added = registry.add(sites, "r", {"hosts": ["r.test"], "listing": True}, base)
    assert added.sites["r"].settings.listing is True
    assert (
        registry.add(sites, "o", {"hosts": ["o.test"]}, base).sites["o"].settings.listing is False
    )
    with pytest.raises(registry.Refused, match="listing"):
        registry.add(sites, "bad", {"hosts": ["b.test"], "listing": "often"}, base)


# -- through the proxy ------------------------------------------------------------------------

HOSTILE = "<img src=x onerror=alert(1)>.html"
ODD = "b c#?%é.txt"
OBJECTS = {
    "docs/a.html": b"<p>a</p>",
    f"docs/{ODD}": b"odd",
    f"docs/{HOSTILE}": b"hostile",
    "docs/<script>alert(1)</script>": b"script",
    "docs/sub/x.txt": b"x",
    "docs/sub/y.txt": b"y",
    "withindex/index.html": b"the index",
    "withindex/other.txt": b"other",
    "private/secret.txt": b"secret",
    "root.txt": b"root",
}


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    """One bucket for the module's tests, holding :data:`OBJECTS`."""
    return seeded_bucket(s3, "listing", OBJECTS)


@pytest.fixture(scope="module")
def proxy(
    s3: S3Server, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyServer]:
    """One server for the module, its sites chosen by Host: ``on.test`` (the default, listing
    on, ``/private/*`` behind Basic), ``off.test``, ``docs.test`` (prefix ``docs/``) and
    ``empty.test`` (a prefix with nothing under it), ``stale.test`` (``ttl = 0``)."""
    folder = tmp_path_factory.mktemp("listing")
    (folder / "htpasswd").write_bytes(htpasswd_line("ann", "pw"))
    sites = folder / "sites.toml"
    sites.write_text(
        f'[sites.on]\nhosts = ["on.test"]\nbucket = "{bucket}"\ndefault = true\nlisting = true\n'
        '[[sites.on.access]]\npaths = ["/private/*"]\nallow = "basic"\n'
        f'htpasswd = "{folder / "htpasswd"}"\n'
        f'[sites.off]\nhosts = ["off.test"]\nbucket = "{bucket}"\n'
        f'[sites.docs]\nhosts = ["docs.test"]\nbucket = "{bucket}"\nprefix = "docs/"\n'
        "listing = true\n"
        f'[sites.empty]\nhosts = ["empty.test"]\nbucket = "{bucket}"\nprefix = "none/"\n'
        "listing = true\n"
        f'[sites.stale]\nhosts = ["stale.test"]\nbucket = "{bucket}"\nlisting = true\nttl = 0\n'
    )
    config = proxy_config(
        s3, folder / "cache", port=free_port(), auth_key="test-token", sites_file=str(sites)
    )
    server = ProxyServer(config).start()
    yield server
    server.stop()


@pytest.fixture
def http(proxy: ProxyServer) -> Iterator[httpx.Client]:
    """A client of the proxy after a clear of its whole cache (each test starts cold)."""
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get(CLEAR, headers=TOKEN).status_code == 200
        yield client


CLEAR = "/_proxy/_private/_cache/clear"
TOKEN = {"authorization": "Bearer test-token"}
JSON = {"accept": "application/json"}


def lists(s3: S3Server, bucket: str) -> int:
    """How many ListObjectsV2 requests reached S3 (GETs of the bucket itself)."""
    return sum(1 for m, p, _ in s3.requests if m == "GET" and p.rstrip("/") == f"/{bucket}")


def names(answer: httpx.Response) -> list[str]:
    return [entry["name"] for entry in answer.json()["entries"]]


def test_off_by_default(http: httpx.Client) -> None:
    """Without ``listing = true`` a folder without an index is a 404, as before."""
    answer = http.get("/docs/", headers={"host": "off.test"})
    assert answer.status_code == 404


def test_html_escapes_names_and_links_reach_each_object(http: httpx.Client) -> None:
    """The HTML page shows every name as text and each link fetches exactly its object."""
    answer = http.get("/docs/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert "Accept" in answer.headers.get_list("vary")
    assert answer.headers["x-content-type-options"] == "nosniff"
    page = answer.text
    assert "<img" not in page and "<script>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.html" in page
    assert "&lt;script&gt;alert(1)&lt;/" in page  # a folder: the key holds a slash
    links = [part.split('"', 1)[0] for part in page.split('href="')[1:]]
    for name, body in [("a.html", b"<p>a</p>"), (ODD, b"odd"), (HOSTILE, b"hostile")]:
        link = href(name)
        assert link is not None and link in links
        got = http.get(urljoin(str(answer.url), link))
        assert (got.status_code, got.content) == (200, body), name
    assert http.get(urljoin(str(answer.url), "./sub/")).status_code == 200
    assert "../" in links


def test_json_shape(http: httpx.Client) -> None:
    """Accept: application/json gets folders first, then files with size and date."""
    answer = http.get("/docs/", headers=JSON)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["path"] == "/docs/" and document["truncated"] is False
    entries = document["entries"]
    assert entries[0] == {
        "name": "<script>alert(1)<",
        "type": "directory",
        "href": "./%3Cscript%3Ealert%281%29%3C/",
    }
    assert entries[1] == {"name": "sub", "type": "directory", "href": "./sub/"}
    files = {e["name"]: e for e in entries[2:]}
    assert set(files) == {"a.html", ODD, HOSTILE}
    odd = files[ODD]
    assert odd["type"] == "file" and odd["size"] == 3 and odd["href"] == href(ODD)
    assert datetime.strptime(odd["last_modified"], "%Y-%m-%dT%H:%M:%SZ")


def test_index_wins_and_empty_folders_are_404(http: httpx.Client) -> None:
    """A folder with its index document serves it; a folder with nothing is a 404, but a
    site's root lists even when empty."""
    assert http.get("/withindex/").text == "the index"
    assert http.get("/nothing/").status_code == 404
    assert http.get("/nothing/", headers=JSON).status_code == 404
    root = http.get("/", headers={"host": "empty.test", **JSON})
    assert root.status_code == 200 and root.json()["entries"] == []


def test_prefix_bounds_the_listing(http: httpx.Client, proxy: ProxyServer) -> None:
    """A site serving ``docs/`` lists only below it; no spelling reaches above it."""
    docs = {"host": "docs.test", **JSON}
    root = http.get("/", headers=docs)
    assert root.json()["path"] == "/"
    assert set(names(root)) == {"<script>alert(1)<", "sub", "a.html", ODD, HOSTILE}
    for path in (b"/../", b"/%2e%2e/", b"/sub/..%2F", b"/sub%2F..%2F", b"/./", b"/%2E/"):
        assert raw_get(proxy, path, host=b"docs.test")[0] == 400, path
    assert http.get("/sub%2F", headers=docs).json()["path"] == "/sub/"


def test_access_rules_guard_listings(http: httpx.Client) -> None:
    """A protected folder's listing needs its credentials; a listing of a public folder does
    not show what another rule protects."""
    assert http.get("/private/").status_code == 401
    granted = http.get("/private/", headers={**basic("ann", "pw"), **JSON})
    assert granted.status_code == 200 and names(granted) == ["secret.txt"]
    assert "private" in granted.headers["cache-control"]
    root = http.get("/", headers=JSON)
    assert "private" not in names(root) and {"docs", "withindex", "root.txt"} <= set(names(root))


def test_pages_followed_and_truncated(
    http: httpx.Client, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ListObjectsV2 page is followed; past MAX_ENTRIES the listing says it is cut."""
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    s3.requests.clear()
    answer = http.get("/docs/", headers=JSON)
    assert len(names(answer)) == 5 and answer.json()["truncated"] is False
    assert lists(s3, bucket) == 3
    monkeypatch.setattr(listing, "MAX_ENTRIES", 3)
    http.get(CLEAR, headers=TOKEN)
    cut = http.get("/docs/", headers=JSON)
    assert cut.json()["truncated"] is True and len(names(cut)) == 3
    assert "Only the first 3 entries are shown" in http.get("/docs/").text


def test_cached_for_the_ttl_and_purged(http: httpx.Client, s3: S3Server, bucket: str) -> None:
    """A repeat listing, HTML or JSON, asks S3 nothing; HEAD and If-None-Match work as for
    objects; a purge of an object below it, or of its prefix, drops it."""
    s3.requests.clear()
    first = http.get("/docs/")
    assert http.get("/docs/", headers=JSON).status_code == 200
    assert http.get("/docs/").content == first.content
    assert lists(s3, bucket) == 1
    head = http.head("/docs/")
    assert head.status_code == 200 and head.headers["etag"] == first.headers["etag"]
    again = http.get("/docs/", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and "Accept" in again.headers.get_list("vary")
    purges = [("path=/docs/sub/x.txt", 2), ("prefix=/withindex/", 2), ("prefix=/docs/", 3)]
    for purge, listed in [*purges, ("path=/root.txt", 3), ("", 4)]:
        assert http.get(f"{CLEAR}?{purge}", headers=TOKEN).status_code == 200
        assert http.get("/docs/").status_code == 200
        assert lists(s3, bucket) == listed, purge


def test_s3_failure_is_a_clear_502(
    http: httpx.Client, s3: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing ListObjectsV2 is retried as a GetObject is, then answers 502 with our short
    text, and stores nothing; an expired listing stands in for it (stale-if-error)."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    s3.faults.append(Fault(f"/{bucket}", status=500, times=10))
    s3.requests.clear()
    answer = http.get("/withindex/sub/")
    assert answer.status_code == 502 and answer.text == "Bad Gateway\n"
    assert lists(s3, bucket) == RETRY_ATTEMPTS
    s3.faults.clear()
    assert http.get("/withindex/sub/").status_code == 404  # nothing was remembered
    stale = {"host": "stale.test"}
    listed = http.get("/docs/", headers=stale)  # expired at once (ttl 0), kept 3600 s more
    assert listed.status_code == 200
    s3.faults.append(Fault(f"/{bucket}", status=500, times=10))
    again = http.get("/docs/", headers=stale)
    assert again.status_code == 200 and again.content == listed.content
    s3.faults.clear()
