"""Access rules in a site's request path, through a real server: Basic auth and signed links
guard their paths in every spelling and for every kind of request, fallbacks never serve a
protected object, protected answers are private, large objects go to S3 by a presigned URL."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from s3proxy import sitesfile
from s3proxy.access import signed
from s3proxy.cli import main
from s3proxy.config import Config
from s3proxy.sitesfile import SitesFileError
from tests.access_helpers import SITE, basic, htpasswd_line, sites_file, start_guarded
from tests.servers import ProxyServer, S3Server
from tests.test_website import raw_get

LINK_SECRET = "a-link-secret-of-more-than-16-bytes"


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    path = tmp_path / "htpasswd"
    path.write_bytes(htpasswd_line("ann", "right"))
    return path


@pytest.fixture
def site(
    put: Callable[..., None],
    start_proxy: Callable[..., ProxyServer],
    htpasswd: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> ProxyServer:
    monkeypatch.setenv("LINK_SECRET", LINK_SECRET)
    put("index.html", b"home")
    put("internal/a.html", b"secret a", ContentType="text/html")
    put("internal/index.html", b"internal index")
    put("internal/public/p.html", b"public inside")
    put("downloads/big.bin", b"x" * 4096)
    put("downloads/small.txt", b"small")
    return start_guarded(
        start_proxy,
        [
            {"paths": ["/internal/public/*"], "allow": "public"},
            {"paths": ["/internal/*"], "allow": "basic", "htpasswd": str(htpasswd)},
            {
                "paths": ["/downloads/*"],
                "allow": "signed",
                "secret": {"env": "LINK_SECRET"},
                "presign_over": "1k",
            },
        ],
    )


def test_basic_challenges_then_serves_privately(site: ProxyServer) -> None:
    """No credentials: 401 with a Basic challenge; right ones: the object, private, varying
    on Authorization; wrong ones: 401 again. Public paths stay public."""
    denied = httpx.get(f"{site.url}/internal/a.html")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == 'Basic realm="restricted", charset="UTF-8"'
    assert "secret" not in denied.text
    for _ in range(2):  # the second is a cache hit: still checked
        ok = httpx.get(f"{site.url}/internal/a.html", headers=basic("ann", "right"))
        assert ok.status_code == 200 and ok.content == b"secret a"
        assert ok.headers["cache-control"].startswith("private")
        assert "public" not in ok.headers["cache-control"]
        assert "Authorization" in ok.headers.get_list("vary")
    wrong = httpx.get(f"{site.url}/internal/a.html", headers=basic("ann", "wrong"))
    assert wrong.status_code == 401
    public = httpx.get(f"{site.url}/internal/public/p.html")
    assert public.status_code == 200 and "private" not in public.headers.get("cache-control", "")
    assert httpx.get(f"{site.url}/index.html").content == b"home"


@pytest.mark.parametrize(
    "target",
    [
        b"/internal/a.html",
        b"/internal%2Fa.html",
        b"/%69nternal/a.html",
        b"//internal/a.html",
        b"/internal//a.html",
        b"/Internal/a.html",
        b"/INTERNAL/PUBLIC/../a.html",
        b"/internal/",
        b"/internal/?x=1",
    ],
)
def test_no_spelling_of_a_protected_path_gets_through(site: ProxyServer, target: bytes) -> None:
    """Encoded slashes and letters, doubled slashes, case variants, dot segments and folder
    indexes are refused without credentials (dot segments by the key mapping itself)."""
    status, head = raw_get(site, target)
    assert status in (400, 401), head
    assert b"secret" not in head


@pytest.mark.parametrize(
    "headers",
    [
        {"range": "bytes=0-3"},
        {"if-none-match": "*"},
        {"if-modified-since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"if-range": '"x"', "range": "bytes=0-1"},
    ],
)
def test_ranges_and_conditionals_are_checked_too(
    site: ProxyServer, headers: dict[str, str]
) -> None:
    """A Range or a precondition never reaches the object (nor its validators) first."""
    httpx.get(f"{site.url}/internal/a.html", headers=basic("ann", "right"))  # now cached
    answer = httpx.get(f"{site.url}/internal/a.html", headers=headers)
    assert answer.status_code == 401 and "etag" not in answer.headers
    head = httpx.head(f"{site.url}/internal/a.html")
    assert head.status_code == 401 and "etag" not in head.headers


def test_failed_attempts_are_throttled_per_address(site: ProxyServer) -> None:
    """Past ten wrong passwords in a minute, an address gets 429 with Retry-After, even with
    the right one."""
    url = f"{site.url}/internal/a.html"
    for _ in range(10):
        assert httpx.get(url, headers=basic("ann", "wrong")).status_code == 401
    throttled = httpx.get(url, headers=basic("ann", "right"))
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
    # Another client behind the local reverse proxy (uvicorn believes X-Forwarded-For from
    # 127.0.0.1 only) is not held back.
    other = httpx.get(url, headers={**basic("ann", "right"), "x-forwarded-for": "10.9.9.9"})
    assert other.status_code == 200


def test_htpasswd_changes_are_read(site: ProxyServer, htpasswd: Path) -> None:
    """A user added to the file can log in, a user removed cannot, without a restart."""
    url = f"{site.url}/internal/a.html"
    assert httpx.get(url, headers=basic("ann", "right")).status_code == 200
    htpasswd.write_bytes(htpasswd_line("bob", "bobs") + b"# ann is gone\n")
    deadline = time.monotonic() + 10  # looked at once a second
    while httpx.get(url, headers=basic("bob", "bobs")).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(url, headers=basic("ann", "right")).status_code == 401


def test_fallbacks_never_serve_a_protected_object(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer], htpasswd: Path
) -> None:
    """The SPA index, the error document and a folder's index are served in place of a
    missing public path only if the request may read them: else a plain 404."""
    put("index.html", b"protected spa index")
    put("404.html", b"protected error page")
    put("private/index.html", b"protected folder index")
    put("pub/ok.txt", b"ok")
    proxy = start_guarded(
        start_proxy,
        [
            {"paths": ["/pub/*"], "allow": "public"},
            {"paths": ["/*"], "allow": "basic", "htpasswd": str(htpasswd)},
        ],
        spa=True,
        error_document="404.html",
        redirect_folders=True,
    )
    for path in ("/pub/route", "/pub/missing.txt"):
        answer = httpx.get(f"{proxy.url}{path}")
        assert answer.status_code == 404 and b"protected" not in answer.content
    assert httpx.get(f"{proxy.url}/pub/ok.txt").content == b"ok"
    # A fallback checks without waiting: a credential not yet verified counts as none.
    unverified = httpx.get(f"{proxy.url}/pub/route", headers=basic("ann", "right"))
    assert unverified.status_code == 404
    assert httpx.get(f"{proxy.url}/", headers=basic("ann", "right")).status_code == 200
    spa = httpx.get(f"{proxy.url}/pub/route", headers=basic("ann", "right"))
    assert spa.status_code == 200 and spa.content == b"protected spa index"
    assert spa.headers["cache-control"].startswith("private")


def test_folder_redirect_needs_access_to_the_folder(site: ProxyServer) -> None:
    """``/internal`` (no slash) does not reveal by a redirect that internal/index.html exists."""
    status, _ = raw_get(site, b"/internal")
    assert status == 404


def _link(path: str, expires_in: int = 60, prefix: bool = False) -> str:
    secret = LINK_SECRET.encode()
    return signed.link(secret, SITE, path, expires_in, time.time(), prefix=prefix)


def test_signed_links(site: ProxyServer, s3: S3Server, bucket: str) -> None:
    """A valid link serves the object privately; expired, altered and foreign links get 403
    with a reason; the link's parameters reach neither S3 nor the cache key."""
    denied = httpx.get(f"{site.url}/downloads/small.txt")
    assert denied.status_code == 403 and "signed link" in denied.text
    ok = httpx.get(site.url + _link("/downloads/small.txt"))
    assert ok.status_code == 200 and ok.content == b"small"
    assert ok.headers["cache-control"].startswith("private")
    again = httpx.get(site.url + _link("/downloads/small.txt", 120))  # another signature
    assert again.status_code == 200
    assert s3.gets(bucket, "downloads/small.txt") == 1  # one cache entry for both links
    assert all("s3p_" not in str(headers) for _, _, headers in s3.requests)
    expired = httpx.get(site.url + _link("/downloads/small.txt", -1))
    assert expired.status_code == 403 and "expired" in expired.text
    foreign = httpx.get(site.url + _link("/downloads/big.bin").replace("big.bin", "small.txt"))
    assert foreign.status_code == 403 and "another path" in foreign.text


def test_signed_links_pass_reject_query_strings(
    put: Callable[..., None],
    start_proxy: Callable[..., ProxyServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--reject-query-strings`` does not count a signed link's own parameters."""
    monkeypatch.setenv("LINK_SECRET", LINK_SECRET)
    put("d/a.txt", b"a")
    proxy = start_guarded(
        start_proxy,
        [{"paths": ["/d/*"], "allow": "signed", "secret": {"env": "LINK_SECRET"}}],
        reject_query_strings=True,
    )
    assert httpx.get(proxy.url + _link("/d/a.txt")).status_code == 200
    assert httpx.get(proxy.url + _link("/d/a.txt") + "&x=1").status_code == 400


def test_large_objects_answer_a_presigned_redirect(site: ProxyServer, s3: S3Server) -> None:
    """Over ``presign_over``, a granted GET is sent to S3 for a minute; HEAD and small
    objects are answered here."""
    link = _link("/downloads/big.bin")
    for _ in range(2):  # a miss, then a hit
        answer = httpx.get(site.url + link)
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert location.startswith(s3.endpoint_url) and "s3p_" not in location
        assert urlsplit(location).path.endswith("/downloads/big.bin")
        assert httpx.get(location).content == b"x" * 4096
    assert httpx.head(site.url + link).status_code == 200
    assert httpx.get(site.url + _link("/downloads/small.txt")).status_code == 200
    assert httpx.get(f"{site.url}/downloads/big.bin").status_code == 403


def test_no_secret_is_logged(site: ProxyServer, tmp_path: Path) -> None:
    """Passwords, Authorization values and link signatures never reach a log line, at any
    level."""
    import logging

    from s3proxy import logging as slog

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    slog.configure(level="debug", log_dir=str(tmp_path / "logs"))
    try:
        link = _link("/downloads/small.txt")
        authorization = basic("ann", "hunter2-password")["authorization"]
        httpx.get(f"{site.url}/internal/a.html", headers={"authorization": authorization})
        httpx.get(f"{site.url}/internal/a.html", headers=basic("ann", "right"))
        httpx.get(site.url + link)
        httpx.get(site.url + link.replace("s3p_sig=", "s3p_sig=x"))
        httpx.get(f"{site.url}/index.html", headers={"referer": site.url + link})
        slog.flush()
        lines = "".join(p.read_text() for p in (tmp_path / "logs").iterdir()).splitlines()
        # The test's own client logs its requests too: only the proxy's lines count.
        text = "\n".join(line for line in lines if '"logger":"http' not in line)
    finally:
        slog.close()
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert "/internal/a.html" in text  # the requests were logged
    signature = link.split("s3p_sig=")[1].split("&")[0]
    for secret in ("hunter2", authorization.split()[1], "right", signature, LINK_SECRET):
        assert secret not in text


def test_a_bad_rule_in_the_sites_file_is_refused(base_config: Config, tmp_path: Path) -> None:
    """One line naming the file, the site, the rule and the key, before anything is served."""
    path = sites_file([{"paths": ["/a/*"], "allow": "basic"}], tmp_path)
    with pytest.raises(SitesFileError) as caught:
        sitesfile.load(str(path), base_config)
    assert str(caught.value) == f"{path}: site {SITE}: access[0]: htpasswd: missing"


def test_a_missing_secret_refuses_the_file(
    base_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule whose secret is not set, or too short, or whose htpasswd file is missing:
    the file is refused at startup (and by a reload), not at the first request."""
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    monkeypatch.setenv("SHORT_SECRET", "short")
    cases = [
        ({"secret": {"env": "NO_SUCH_SECRET"}}, "secret: env NO_SUCH_SECRET is empty or not set"),
        ({"secret": {"env": "SHORT_SECRET"}}, "secret: env SHORT_SECRET is too short"),
        ({"secret": {"file": "/nonexistent"}}, "cannot read file /nonexistent"),
    ]
    for extra, message in cases:
        path = sites_file([{"paths": ["/d/*"], "allow": "signed", **extra}], tmp_path)
        with pytest.raises(SitesFileError, match=f"site {SITE}: access\\[0\\]: .*{message}"):
            sitesfile.load(str(path), base_config)
    path = sites_file([{"paths": ["/d/*"], "allow": "basic", "htpasswd": "/nonexistent"}], tmp_path)
    with pytest.raises(SitesFileError, match="htpasswd: cannot read /nonexistent"):
        sitesfile.load(str(path), base_config)


def test_header_rules_cannot_make_a_protected_answer_shareable(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer], htpasswd: Path
) -> None:
    """A ``[[headers]]`` rule's Cache-Control does not replace an access rule's private."""
    put("internal/a.html", b"secret a")
    path = sites_file([{"paths": ["/internal/*"], "allow": "basic", "htpasswd": str(htpasswd)}])
    path.write_text(
        path.read_text()
        + f'[[sites.{SITE}.headers]]\npaths = ["/*"]\n'
        + 'set = { "Cache-Control" = "public, max-age=600", "X-Site" = "docs" }\n'
    )
    proxy = start_proxy(sites_file=str(path))
    answer = httpx.get(f"{proxy.url}/internal/a.html", headers=basic("ann", "right"))
    assert answer.status_code == 200 and answer.headers["x-site"] == "docs"
    (cache_control,) = answer.headers.get_list("cache-control")
    assert cache_control.startswith("private, max-age=") and "public" not in cache_control


def test_the_sign_command_prints_a_link_the_site_accepts(
    site: ProxyServer, bucket: str, tmp_path: Path, htpasswd: Path
) -> None:
    """``s3proxy sign URL-PATH --config FILE --site NAME --expires 1h [--prefix]`` signs with
    the rule's own secret; a path under another kind of rule is refused with exit code 2."""
    path = sites_file(
        [
            {"paths": ["/internal/*"], "allow": "basic", "htpasswd": str(htpasswd)},
            {"paths": ["/downloads/*"], "allow": "signed", "secret": {"env": "LINK_SECRET"}},
        ],
        tmp_path,
    )
    runner = CliRunner()

    def sign(*args: str) -> Any:
        argv = ["sign", *args, "--config", str(path), "--site", SITE, "--bucket", bucket]
        return runner.invoke(main, argv, prog_name="s3proxy", env={"LINK_SECRET": LINK_SECRET})

    made = sign("/downloads/small.txt", "--expires", "1h")
    assert made.exit_code == 0, made.output
    link = made.output.strip()
    assert link.startswith("/downloads/small.txt?s3p_expires=")
    assert int(link.split("s3p_expires=")[1].split("&")[0]) > time.time() + 3500
    assert httpx.get(site.url + link).content == b"small"
    folder = sign("/downloads/", "--prefix").output.strip()
    assert httpx.get(site.url + folder.replace("/downloads/?", "/downloads/big.bin?")).is_redirect
    refused = sign("/internal/a.html")
    assert refused.exit_code == 2
    assert 'not under a signed rule of site docs (its rule is allow = "basic")' in refused.output
