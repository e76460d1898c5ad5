"""The embedded default: the sample site, and the S3 emulator that ``s3proxy --demo`` seeds."""

import contextlib
import errno
import html.parser
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from s3proxy.demo import (
    DEMO_BUCKET,
    SITE_DIR,
    DemoOrigin,
    content_type_for,
    run_demo_origin,
    site_files,
)

REPO = Path(__file__).resolve().parent.parent

# The one link allowed to point at no object: it shows the proxy's 404 page.
MISSING_PAGE = "/missing-page"

EXPECTED_KEYS = {
    "index.html",
    "404.html",
    "css/site.css",
    "js/app.js",
    "img/logo.png",
    "docs/index.html",
    "docs/guide.html",
    "downloads/sample.txt",
    "files/hello world+plus.txt",
}

# Elements that never have an end tag (HTML Living Standard, "void elements").
VOID_ELEMENTS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input",
    "link", "meta", "source", "track", "wbr",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's AWS settings and proxies play no part unless a test sets them."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in {"http_proxy", "https_proxy", "all_proxy"}:
            monkeypatch.delenv(name)


@pytest.fixture
def origin() -> Iterator[DemoOrigin]:
    with run_demo_origin() as running:
        yield running


@contextlib.contextmanager
def s3_client(origin: DemoOrigin) -> Iterator[Any]:
    client = boto3.client(
        "s3",
        endpoint_url=origin.endpoint_url,
        region_name=origin.region,
        aws_access_key_id=origin.key_id,
        aws_secret_access_key=origin.secret,
    )
    with contextlib.closing(client):
        yield client


def bucket_keys(origin: DemoOrigin) -> set[str]:
    with s3_client(origin) as client:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=origin.bucket)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


# --- the site on disk -----------------------------------------------------------------------


@dataclass
class Page:
    """What the checks need from one HTML file."""

    key: str
    doctype: str = ""
    urls: list[str] = field(default_factory=list)  # every href and src, in order
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    nesting_errors: list[str] = field(default_factory=list)


class _PageParser(html.parser.HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.open: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.page.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.page.tags.append((tag, values))
        self.page.urls += [values[name] for name in ("href", "src") if name in values]
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.page.nesting_errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()


def parse_page(key: str, path: Path) -> Page:
    page = Page(key)
    parser = _PageParser(page)
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    page.nesting_errors += [f"<{tag}> never closed" for tag in parser.open]
    return page


def html_pages() -> list[Page]:
    return [parse_page(key, path) for key, path in site_files() if key.endswith(".html")]


def key_for(url: str) -> str:
    """The object key a root-relative URL names: decoded once, ``/`` meaning ``index.html``."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return path.removeprefix("/") + ("index.html" if path.endswith("/") else "")


def test_site_has_the_promised_files() -> None:
    """site_files() lists exactly the sample site, by '/'-separated key, sorted."""
    files = site_files()
    keys = [key for key, _ in files]
    assert set(keys) == EXPECTED_KEYS
    assert keys == sorted(keys)
    assert all(path == SITE_DIR.joinpath(*key.split("/")) for key, path in files)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("index.html", "text/html; charset=utf-8", id="html"),
        pytest.param("site.css", "text/css; charset=utf-8", id="css"),
        pytest.param("app.js", "text/javascript; charset=utf-8", id="js-rfc9239"),
        pytest.param("hello world+plus.txt", "text/plain; charset=utf-8", id="txt-odd-name"),
        pytest.param("LOGO.PNG", "image/png", id="png-upper-case"),
        pytest.param("data.json", "application/json", id="json-no-charset"),
        pytest.param("archive.tar.gz", "application/octet-stream", id="compressed"),
        pytest.param("README", "application/octet-stream", id="no-extension"),
        pytest.param("blob.unknownext", "application/octet-stream", id="unknown-extension"),
    ],
)
def test_content_type_for(name: str, expected: str) -> None:
    """Types come from the extension; text types say utf-8; the rest is octet-stream."""
    assert content_type_for(Path("some/dir") / name) == expected


def test_pages_are_html5_with_charset_favicon_css_and_logo() -> None:
    """Every page is an HTML5 document that loads the CSS, the logo and the favicon from /."""
    for page in html_pages():
        assert page.doctype.lower() == "doctype html", page.key
        assert page.nesting_errors == [], page.key
        tags = page.tags
        assert ("meta", {"charset": "utf-8"}) in tags, page.key
        favicon = {"rel": "icon", "type": "image/png", "href": "/img/logo.png"}
        assert ("link", favicon) in tags, page.key
        assert ("link", {"rel": "stylesheet", "href": "/css/site.css"}) in tags, page.key
        assert any(tag == "img" and a.get("src") == "/img/logo.png" for tag, a in tags), page.key


def test_every_link_is_root_relative_and_names_a_site_file() -> None:
    """Links resolve to objects in the site, except the one deliberate link to a missing page."""
    keys = {key for key, _ in site_files()}
    dangling = set()
    for page in html_pages():
        for url in page.urls:
            assert url.startswith("/") and not url.startswith("//"), (page.key, url)
            if key_for(url) not in keys:
                dangling.add(url)
    assert dangling == {MISSING_PAGE}


def test_index_links_to_everything() -> None:
    """index.html reaches every other file of the site directly."""
    keys = {key for key, _ in site_files()}
    index = next(page for page in html_pages() if page.key == "index.html")
    assert {key_for(url) for url in index.urls} | {"index.html"} >= keys
    assert "/files/hello%20world%2Bplus.txt" in index.urls  # the name that needs encoding


def test_site_is_self_contained() -> None:
    """No page, stylesheet or script refers to another host; CSS url()s name site files."""
    keys = {key for key, _ in site_files()}
    for key, path in site_files():
        if content_type_for(path).startswith("text/"):
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"\b(?:https?|wss?|ftp):", text, re.I), key
            for url in re.findall(r"url\(\s*['\"]?([^'\")]+)", text):
                assert url.startswith("/") and key_for(url) in keys, (key, url)


def test_logo_is_a_small_valid_png() -> None:
    """img/logo.png has the PNG signature, a sound IHDR, and pixel data that decompresses."""
    data = (SITE_DIR / "img" / "logo.png").read_bytes()
    assert len(data) < 4096
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks = []
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind, body = data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        offset += 12 + length
    assert chunks[0][0] == b"IHDR" and len(chunks[0][1]) == 13
    assert chunks[-1] == (b"IEND", b"")
    width, height, depth, color, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (depth, color, compression, filtering, interlace) == (8, 6, 0, 0, 0)  # 8-bit RGBA
    assert 16 <= width == height <= 256
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + width * 4)


# --- the emulator ---------------------------------------------------------------------------


def test_origin_holds_every_site_file_byte_for_byte(origin: DemoOrigin) -> None:
    """The bucket holds exactly the site files, identical, each with its content type."""
    assert origin.bucket == DEMO_BUCKET
    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", origin.endpoint_url)
    assert bucket_keys(origin) == {key for key, _ in site_files()}
    with s3_client(origin) as client:
        for key, path in site_files():
            response = client.get_object(Bucket=origin.bucket, Key=key)
            with contextlib.closing(response["Body"]) as body:
                assert body.read() == path.read_bytes(), key
            assert response["ContentType"] == content_type_for(path), key


def test_bucket_is_private(origin: DemoOrigin) -> None:
    """An unsigned request is refused: only a signing client, like the proxy, can read it."""
    url = f"{origin.endpoint_url}/{origin.bucket}/index.html"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(url, timeout=10).close()
    refused.value.close()
    assert refused.value.code == 403


def test_missing_key_is_404(origin: DemoOrigin) -> None:
    """A key the site lacks is a plain 404, which the proxy turns into its error page."""
    with s3_client(origin) as client:
        with pytest.raises(client.exceptions.NoSuchKey):
            client.get_object(Bucket=origin.bucket, Key=key_for(MISSING_PAGE))


def test_leftovers_from_an_earlier_origin_are_deleted() -> None:
    """moto's state outlives one origin in a process; the next one starts from the site only."""
    with run_demo_origin() as first, s3_client(first) as client:
        client.put_object(Bucket=first.bucket, Key="stale.txt", Body=b"left over")
    with run_demo_origin() as second:
        assert bucket_keys(second) == {key for key, _ in site_files()}


def test_server_stops_on_exit() -> None:
    """Leaving the with block stops the emulator: its port refuses connections."""
    with run_demo_origin() as origin:
        port = urllib.parse.urlsplit(origin.endpoint_url).port
        assert port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_port_in_use_raises_instead_of_hanging() -> None:
    """A port already taken is an OSError at once (moto alone would wait forever)."""
    outcome: list[DemoOrigin | Exception] = []

    def enter(port: int) -> None:
        try:
            with run_demo_origin(port=port) as origin:
                outcome.append(origin)
        except Exception as exc:
            outcome.append(exc)

    with socket.create_server(("127.0.0.1", 0)) as busy:
        thread = threading.Thread(target=enter, args=(busy.getsockname()[1],), daemon=True)
        thread.start()
        thread.join(timeout=30)
    assert outcome, "run_demo_origin() still waiting after 30 s"
    error = outcome[0]
    assert isinstance(error, OSError), error
    assert error.errno == errno.EADDRINUSE


def test_without_moto_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing optional dependency is a RuntimeError naming the extra, not an ImportError."""
    monkeypatch.setitem(sys.modules, "moto.server", None)
    with pytest.raises(RuntimeError, match=re.escape("pip install 's3proxy[demo]'")):
        with run_demo_origin():
            pass


def test_aws_environment_does_not_reach_the_seeding_client(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Real endpoints, credentials, profiles and proxies in the environment are ignored."""
    config = tmp_path / "config"
    config.write_text(
        "[default]\nregion = eu-west-1\nendpoint_url = http://192.0.2.1:9\n"
        "s3 =\n    addressing_style = virtual\n    use_accelerate_endpoint = true\n"
        "[profile elsewhere]\nregion = eu-west-1\nendpoint_url = http://192.0.2.1:9\n"
        "s3 =\n    addressing_style = virtual\n    use_accelerate_endpoint = true\n"
    )
    hostile = {
        "AWS_CONFIG_FILE": str(config),
        "AWS_PROFILE": "elsewhere",
        "AWS_ENDPOINT_URL": "http://192.0.2.1:9",
        "AWS_ENDPOINT_URL_S3": "http://192.0.2.1:9",
        "AWS_ACCESS_KEY_ID": "AKIAREALLOOKINGKEY00",
        "AWS_SECRET_ACCESS_KEY": "not-for-the-demo",
        "AWS_SESSION_TOKEN": "not-for-the-demo",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_USE_FIPS_ENDPOINT": "true",
        "AWS_USE_DUALSTACK_ENDPOINT": "true",
        "HTTP_PROXY": "http://192.0.2.1:9",
        "http_proxy": "http://192.0.2.1:9",
    }
    with contextlib.ExitStack() as stack:
        with monkeypatch.context() as env:
            for name, value in hostile.items():
                env.setenv(name, value)
            origin = stack.enter_context(run_demo_origin())
        assert bucket_keys(origin) == {key for key, _ in site_files()}


def test_a_missing_aws_profile_fails_at_startup_not_per_page() -> None:
    """If moto would answer every missing key with 500, the demo refuses to start.

    A fresh interpreter, because moto caches what it read from the environment.
    """
    script = """
import urllib.error, urllib.request
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from s3proxy.demo import run_demo_origin

with run_demo_origin() as o:
    # Signed by hand: any botocore session would read the missing profile itself.
    request = AWSRequest("GET", f"{o.endpoint_url}/{o.bucket}/missing-page")
    S3SigV4Auth(Credentials(o.key_id, o.secret), "s3", o.region).add_auth(request)
    try:
        urllib.request.urlopen(urllib.request.Request(request.url, headers=dict(request.headers)))
    except urllib.error.HTTPError as error:
        print(error.code)
"""
    env = {"PATH": "/usr/bin:/bin", "AWS_PROFILE": "no-such-profile-for-the-demo"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 0:  # a moto that no longer reads the profile: the 404 must work
        assert done.stdout.strip() == "404", done.stderr
    else:
        last_line = done.stderr.strip().splitlines()[-1]
        assert last_line.startswith("RuntimeError: the demo S3 emulator answers a missing key"), (
            done.stderr
        )
        assert "unset AWS_PROFILE" in last_line


def test_the_demo_command_serves_the_sample_site() -> None:
    """`s3proxy --demo` (the README's first command runs it) serves the sample site from its
    embedded emulator, with the site's own 404 page."""
    import httpx

    from tests.servers import ProxyProcess, free_port

    port = free_port()
    args = ["--demo", "--port", str(port), "--threads", "1", "--dir", "", "--host", "127.0.0.1"]
    proxy = ProxyProcess(args, {}, port).wait_ready(timeout=60)
    try:
        home = httpx.get(f"{proxy.url}/")
        assert home.status_code == 200 and b"s3proxy" in home.content
        assert httpx.get(f"{proxy.url}/docs/").status_code == 200
        missing = httpx.get(f"{proxy.url}/missing-page")
        assert missing.status_code == 404
        assert missing.content == (SITE_DIR / "404.html").read_bytes()
    finally:
        proxy.kill()


@pytest.mark.skipif(not shutil.which("curl"), reason="needs curl (.ci/run installs it)")
def test_the_demo_prints_a_random_token_and_curl_lines_that_work() -> None:
    """The demo sets a random management token, prints it with curl lines for a page, a purge
    and the stats, and each line, pasted into a shell, works with that token; a second demo
    gets another token."""
    import json
    import shlex

    from tests.servers import Output, ProxyProcess, free_port

    tokens = []
    for _ in range(2):
        port = free_port()
        args = ["--demo", "--port", str(port), "--dir", "", "--host", "127.0.0.1"]
        proxy = ProxyProcess(args, {"S3PROXY_THREADS": "1"}, port)
        try:
            output = Output(proxy.proc.stdout).until("_cache/stats", timeout=60)
            proxy.wait_ready(timeout=60)
            token = next(line for line in output if "management token" in line).split()[-1]
            curls = [shlex.split(line) for line in output if line.strip().startswith("curl ")]
            assert len(curls) == 3
            page, purge, stats = (
                subprocess.run(c, capture_output=True, text=True, timeout=30, check=True)
                for c in curls
            )
            assert page.stdout.startswith("HTTP/1.1 200")
            assert json.loads(purge.stdout) == {
                "cleared": True,
                "key": "docs/guide.html",
                "dropped": ["docs/guide.html"],
            }
            assert json.loads(stats.stdout)["requests"]["miss"] >= 1
            assert f"Bearer {token}" in shlex.join(curls[2])
            wrong = [c.replace(token, "wrong") for c in curls[2]]
            refused = subprocess.run(
                wrong + ["-o", "/dev/null", "-w", "%{http_code}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert refused.stdout == "403"
            tokens.append(token)
        finally:
            proxy.kill()
    assert len(set(tokens)) == 2 and all(len(t) >= 20 for t in tokens)


def test_venv_setup_runs_pip_only_when_pyproject_changed(tmp_path: Path) -> None:
    """scripts/demo and scripts/test install once; later starts run no pip (so they take
    seconds and work offline) until pyproject.toml changes. The venv's interpreter is a
    stand-in that records how it is called, so no package is really installed."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "_venv.sh").write_text((REPO / "scripts" / "_venv.sh").read_text())
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n'
        f'if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi\n'
    )
    python.chmod(0o755)

    def start(extras: str) -> list[str]:
        (tmp_path / "calls").write_text("")
        script = f"S3PROXY_EXTRAS={extras}; source scripts/_venv.sh"
        subprocess.run(["bash", "-c", script], cwd=tmp_path, check=True, timeout=60)
        calls = (tmp_path / "calls").read_text().splitlines()
        return [call for call in calls if call.startswith("-m pip install")]

    assert start("demo")[-1].endswith("-e .[demo]")
    assert start("demo") == []
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    assert start("demo") != []
    assert start("dev")[-1].endswith("-e .[dev]")
    assert start("dev") == [] and start("demo") == []  # dev's extras include demo's
