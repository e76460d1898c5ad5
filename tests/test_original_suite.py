"""The original C++ proxy's own black-box checks (its ``test/integration`` and ``test/lua``
suites), run against the ``s3proxy`` command in a subprocess configured the way its Docker
image was: only by the original's environment variables.

The only additions are where S3 is: ``AWS_ENDPOINT_URL`` (the standard AWS variable) and
``S3PROXY_PATH_STYLE`` point at moto, and ``S3PROXY_DIR`` puts the log files in a temp dir.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path

import httpx
import pytest

from tests.servers import KEY_ID, REGION, SECRET, S3Server, free_port
from tests.sink_servers import wait_for

AUTH_KEY = "abc123"
ALLOWED_ORIGIN = "http://127.0.0.1:8080"
CLEAR = "/_proxy/_private/_cache/clear"
VALIDATORS = ("etag", "expires", "last-modified", "cache-control", "content-length")
INDEX_SIZE = 2950  # the original's load tests served a 2,950-byte index.html


def index_html() -> bytes:
    """A 2,950-byte HTML page."""
    head = b"<!DOCTYPE html>\n<html><head><title>s3proxy</title></head><body>\n"
    tail = b"</body></html>\n"
    filler = b"<p>The quick brown fox jumps over the lazy dog.</p>\n"
    body = (filler * (INDEX_SIZE // len(filler) + 1))[: INDEX_SIZE - len(head) - len(tail)]
    page = head + body + tail
    assert len(page) == INDEX_SIZE
    return page


INDEX = index_html()

# Public addresses the original's load test sent as x-forwarded-for.
PUBLIC_IPS = (
    "184.105.163.155",
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "208.67.222.222",
    "140.82.112.3",
    "151.101.1.69",
    "13.107.42.14",
    "17.253.144.10",
    "31.13.71.36",
    "104.16.132.229",
    "185.199.108.153",
    "199.232.69.194",
    "23.235.33.1",
    "52.95.110.1",
    "91.198.174.192",
)


def s3proxy_command() -> list[str]:
    """The installed ``s3proxy`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("s3proxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "s3proxy"]


def base_environment(home: Path) -> dict[str, str]:
    """A clean environment: nothing from the caller's AWS or s3proxy settings leaks in."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


@dataclass
class ProxyProcess:
    """An ``s3proxy`` process listening on ``127.0.0.1:<port>``; its output goes to a file."""

    process: subprocess.Popen[bytes]
    port: int
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGTERM, then wait (uvicorn drains connections); SIGKILL only if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(argv: list[str], env: dict[str, str], port: int, workdir: Path) -> ProxyProcess:
    """Start ``argv`` and wait (at most 60 s: a loaded machine starts slowly) until ``port``
    accepts connections."""
    output = workdir / "s3proxy.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, cwd=workdir, stdout=sink, stderr=sink)
    proxy = ProxyProcess(process, port, output)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"s3proxy exited with {process.returncode}:\n{output.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy
        except OSError:
            if time.monotonic() > deadline:
                proxy.stop()
                raise RuntimeError(f"s3proxy did not listen:\n{output.read_text()}") from None
            time.sleep(0.05)


@pytest.fixture
def site(put: Callable[..., None]) -> None:
    put("index.html", INDEX, ContentType="text/html")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def proxy(
    s3: S3Server, bucket: str, site: None, tmp_path: Path, log_dir: Path
) -> Iterator[ProxyProcess]:
    """``s3proxy`` configured only by the original's variables (plus where S3 is)."""
    port = free_port()
    env = base_environment(tmp_path) | {
        "S3_BUCKET": bucket,
        "AWS_REGION": REGION,
        "AWS_KEY": KEY_ID,
        "AWS_SECRET": SECRET,
        "AUTH_KEY": AUTH_KEY,
        "PORT": str(port),
        "THREADS": "1",
        "CACHE_DIR": str(tmp_path / "data"),
        "ALLOWED_ORIGINS": json.dumps([ALLOWED_ORIGIN]),
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "S3PROXY_PATH_STYLE": "true",
        "S3PROXY_DIR": f"{log_dir}/",
    }
    server = spawn(s3proxy_command(), env, port, tmp_path)
    yield server
    server.stop()


@pytest.fixture
def http(proxy: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        yield client


def assert_validators(response: httpx.Response) -> None:
    missing = [h for h in VALIDATORS if h not in response.headers]
    assert not missing, f"missing {missing} in {dict(response.headers)}"


def test_get_root(http: httpx.Client) -> None:
    """1. GET / answers 200 with etag, expires, last-modified, cache-control, content-length."""
    response = http.get(
        "/", headers={"x-forwarded-for": "184.105.163.155", "accept-encoding": "identity"}
    )
    assert response.status_code == 200
    assert_validators(response)
    assert response.content == INDEX
    assert response.headers["content-length"] == str(INDEX_SIZE)
    assert response.headers["content-type"].startswith("text/html")
    # Like the original, a client that accepts gzip gets it, with the compressed length.
    gzipped = http.get("/", headers={"accept-encoding": "gzip"})
    assert gzipped.headers["content-encoding"] == "gzip"
    assert gzipped.content == INDEX
    assert int(gzipped.headers["content-length"]) < INDEX_SIZE


def test_options_allowed_origin(http: httpx.Client) -> None:
    """2. OPTIONS / from an allowed origin answers 204 with allow-origin and allow-methods."""
    response = http.options("/", headers={"origin": ALLOWED_ORIGIN})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "GET" in response.headers["access-control-allow-methods"]


def test_get_index_html(http: httpx.Client) -> None:
    """3. GET /index.html answers 200 with the page."""
    response = http.get("/index.html")
    assert response.status_code == 200
    assert response.content == INDEX


def test_head_root(http: httpx.Client) -> None:
    """4. HEAD / answers 200 with the same five headers as GET, and no body."""
    get = http.get("/")
    head = http.head("/")
    assert head.status_code == 200
    assert_validators(head)
    assert head.content == b""
    for name in ("etag", "last-modified", "cache-control", "content-length"):
        assert head.headers[name] == get.headers[name]


@pytest.mark.parametrize("header", ["if-none-match", "If-None-Match"])
def test_if_none_match(http: httpx.Client, header: str) -> None:
    """5. GET / with the page's ETag in If-None-Match (either spelling) answers 304."""
    etag = http.get("/").headers["etag"]
    response = http.get("/", headers={header: etag})
    assert response.status_code == 304
    assert response.content == b""


def test_if_modified_since(http: httpx.Client) -> None:
    """6. GET / with its Last-Modified in If-Modified-Since answers 304."""
    last_modified = http.get("/").headers["last-modified"]
    response = http.get("/", headers={"if-modified-since": last_modified})
    assert response.status_code == 304


def test_missing_resource(http: httpx.Client) -> None:
    """7. A path with no object behind it answers 404."""
    assert http.get("/some/random/resource/that/does/not/exist.pdf").status_code == 404


def test_query_string_ignored(http: httpx.Client) -> None:
    """8. The query string is ignored: /index.html?query=blah answers 200 with the headers."""
    response = http.get("/index.html?query=blah")
    assert response.status_code == 200
    assert_validators(response)
    assert response.content == INDEX


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_other_methods_not_allowed(http: httpx.Client, method: str) -> None:
    """9. Methods other than GET, HEAD and OPTIONS answer 405."""
    response = http.request(method, "/index.html?query=blah", content=b"x")
    assert response.status_code == 405


def test_options_other_origin(http: httpx.Client) -> None:
    """10. OPTIONS from an origin not allowed: 204 with allow-methods, no allow-origin."""
    response = http.options("/", headers={"origin": "https://184.105.163.15"})
    assert response.status_code == 204
    assert "access-control-allow-origin" not in response.headers
    assert "GET" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_clear_endpoint(http: httpx.Client, method: str) -> None:
    """11. The clear endpoint: 403 without a token, 400 when not Bearer, 403 for a wrong one.

    The right token answers 200 with a JSON summary, every time. The original answered 304
    here; we deliberately answer 200 (a 304 means "not modified" to every client and cache
    in between)."""
    assert http.request(method, CLEAR).status_code == 403
    assert http.request(method, CLEAR, headers={"authorization": "blah"}).status_code == 400
    wrong = {"authorization": "Bearer blah"}
    assert http.request(method, CLEAR, headers=wrong).status_code == 403
    right = {"authorization": f"Bearer {AUTH_KEY}"}
    for _ in range(2):
        response = http.request(method, CLEAR, headers=right)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json(), dict)
    assert http.get("/").content == INDEX  # cleared, then fetched again


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_clear_endpoint_other_methods(http: httpx.Client, method: str) -> None:
    """11. POST, PUT and PATCH on the clear endpoint answer 405, even with the right token."""
    right = {"authorization": f"Bearer {AUTH_KEY}"}
    assert http.request(method, CLEAR, headers=right).status_code == 405


def request_lines(log_dir: Path) -> list[dict[str, object]]:
    lines = []
    for path in sorted(log_dir.glob("s3proxy-*.log")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "request":
                lines.append(record)
    return lines


def test_forwarded_for_load(http: httpx.Client, log_dir: Path) -> None:
    """12. 1000 keep-alive GETs of / from many forwarded addresses all answer 200, and the log
    file records each request with the forwarded address as client_ip."""
    ips = list(itertools.islice(itertools.cycle(PUBLIC_IPS), 1000))
    statuses = [http.get("/", headers={"x-forwarded-for": ip}).status_code for ip in ips]
    assert statuses == [200] * 1000

    deadline = time.monotonic() + 5
    while True:
        logged = [r for r in request_lines(log_dir) if r.get("path") == "/"]
        if len(logged) >= 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [r["client_ip"] for r in logged] == ips
    assert {r["status"] for r in logged} == {200}


def test_no_secret_in_the_logs(http: httpx.Client, log_dir: Path) -> None:
    """The startup line shows the settings with the AWS secret and the auth key redacted, and
    a clear with the bearer token leaves no trace of it either (not even in the request line)."""
    http.get("/_proxy/_private/_cache/clear", headers={"authorization": f"Bearer {AUTH_KEY}"})
    http.get("/")

    def logged() -> str:
        return "".join(path.read_text() for path in sorted(log_dir.glob("s3proxy-*.log")))

    wait_for(lambda: '"starting"' in logged() and '"cache_cleared"' in logged(), what="logs")
    text = logged()
    assert SECRET not in text and AUTH_KEY not in text
    starting = next(json.loads(line) for line in text.splitlines() if '"starting"' in line)
    assert starting["secret"] == starting["auth_key"] == "[redacted]"
    assert starting["bucket"]  # the rest of the settings is there


def test_concurrent_gets(proxy: ProxyProcess, s3: S3Server, bucket: str) -> None:
    """13. 16 rounds of 128 concurrent GETs of /index.html all get 200 and the whole page.

    128 threads, each with its own keep-alive connection, start each round together. The
    first round's 128 misses reach S3 as one GET (the original had no such merging)."""
    before = s3.gets(bucket, "index.html")  # the startup check's one-byte GET of the index
    clients, rounds = 128, 16
    start = threading.Barrier(clients)

    def client() -> list[tuple[int, bytes]]:
        connection = HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        results = []
        try:
            for _ in range(rounds):
                start.wait(timeout=60)
                connection.request("GET", "/index.html")
                response = connection.getresponse()
                results.append((response.status, response.read()))
        finally:
            connection.close()
        return results

    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client) for _ in range(clients)]
        results = [result for future in futures for result in future.result()]
    assert len(results) == clients * rounds
    assert all(status == 200 for status, _ in results)
    assert all(body == INDEX for _, body in results)
    assert s3.gets(bucket, "index.html") == before + 1


def test_cli_flags_instead_of_env(s3: S3Server, bucket: str, site: None, tmp_path: Path) -> None:
    """The same server started with the original's flags (and ours for the endpoint)."""
    port = free_port()
    argv = s3proxy_command() + [
        *("--bucket", bucket, "--region", REGION, "--key", KEY_ID, "--secret", SECRET),
        *("--port", str(port), "--auth-key", AUTH_KEY, "--threads", "1"),
        *("--cache-dir", str(tmp_path / "data"), "--dir", str(tmp_path / "logs")),
        *("--endpoint-url", s3.endpoint_url, "--path-style"),
    ]
    server = spawn(argv, base_environment(tmp_path), port, tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            response = http.get("/", headers={"x-forwarded-for": "184.105.163.155"})
        assert response.status_code == 200
        assert_validators(response)
        assert response.content == INDEX
    finally:
        server.stop()
