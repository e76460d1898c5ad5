"""The startup check and console line: S3's answer for the site's index, classified into
what an operator must fix (no such bucket, access denied, endpoint unreachable, clock skew);
checked against moto with a wrong bucket and a closed port."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from s3proxy import __version__
from s3proxy.config import Config
from s3proxy.meta import ProbeAnswer
from s3proxy.sitesfile import implicit
from s3proxy.startup import Part, Verdict, banner, check_bucket, classify
from tests.servers import Output, ProxyProcess, S3Server, cli_args, free_port

ENDPOINT = "https://s3.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("status", "code", "failed", "words"),
    [
        pytest.param(200, "", None, "index.html is readable", id="ok"),
        pytest.param(206, "", None, "index.html is readable", id="ok-ranged"),
        pytest.param(416, "InvalidRange", None, "readable", id="empty-index"),
        pytest.param(404, "NoSuchKey", None, "has no index.html", id="no-index-is-no-failure"),
        pytest.param(404, "NoSuchBucket", Part.BUCKET, "no such bucket: site", id="no-bucket"),
        pytest.param(403, "AccessDenied", Part.BUCKET, "access denied", id="access-denied"),
        pytest.param(403, "403", Part.BUCKET, "access denied", id="head-style-403"),
        pytest.param(
            403, "InvalidAccessKeyId", Part.CREDENTIALS, "access key id", id="unknown-key-id"
        ),
        pytest.param(
            403, "SignatureDoesNotMatch", Part.CREDENTIALS, "secret key", id="wrong-secret"
        ),
        pytest.param(400, "ExpiredToken", Part.CREDENTIALS, "expired", id="expired-token"),
        pytest.param(403, "RequestTimeTooSkewed", Part.CREDENTIALS, "clock skew", id="clock-skew"),
        pytest.param(None, "NoCredentialsError", Part.CREDENTIALS, "no credentials", id="none"),
        pytest.param(
            None, "EndpointConnectionError", Part.ENDPOINT, "endpoint unreachable", id="refused"
        ),
        pytest.param(
            None, "ConnectTimeoutError", Part.ENDPOINT, "did not answer in time", id="timeout"
        ),
        pytest.param(None, "TimeoutError", Part.ENDPOINT, "did not answer", id="our-timeout"),
        pytest.param(None, "SSLError", Part.ENDPOINT, "TLS", id="tls"),
        pytest.param(400, "AuthorizationHeaderMalformed", Part.BUCKET, "wrong region", id="region"),
        pytest.param(301, "PermanentRedirect", Part.BUCKET, "wrong region", id="redirect"),
        pytest.param(503, "SlowDown", Part.ENDPOINT, "is failing: 503 SlowDown", id="5xx"),
        pytest.param(418, "Teapot", Part.ENDPOINT, "unexpected answer", id="unknown"),
    ],
)
def test_classify(status: int | None, code: str, failed: Part | None, words: str) -> None:
    """Each answer names the part to fix, in words an operator can act on."""
    verdict = classify(
        ProbeAnswer(status, code), bucket="site", key="index.html", endpoint=ENDPOINT
    )
    assert verdict.failed == failed
    assert words in verdict.reason
    assert verdict.ok == (failed is None)


def test_unreachable_names_the_endpoint() -> None:
    """An operator sees which endpoint could not be reached."""
    verdict = classify(
        ProbeAnswer(None, "EndpointConnectionError"), bucket="b", key="k", endpoint=ENDPOINT
    )
    assert ENDPOINT in verdict.reason


def _config(**overrides: object) -> Config:
    return Config.build(bucket="site", cache_dir="/var/cache/s3proxy", **overrides)


@pytest.mark.parametrize(
    ("config", "workers", "line"),
    [
        pytest.param(
            _config(),
            4,
            f"s3proxy {__version__} serving bucket site from {ENDPOINT} at "
            "http://0.0.0.0:8000, 4 workers, cache /var/cache/s3proxy",
            id="plain",
        ),
        pytest.param(
            _config(prefix="www", host="::1", port=9000),
            1,
            f"s3proxy {__version__} serving bucket site (prefix www/) from {ENDPOINT} at "
            "http://[::1]:9000, 1 worker, cache /var/cache/s3proxy",
            id="prefix-ipv6-one-worker",
        ),
    ],
)
def test_banner(config: Config, workers: int, line: str) -> None:
    """The console line says what is served, from where, where, by how many, cached where."""
    assert banner(config, implicit(config), ENDPOINT, workers) == line


def test_check_against_moto(base_config: Config, put: object) -> None:
    """A bucket that exists answers; with its index, the check passes and names it."""
    put("index.html", b"<h1>hi</h1>")  # type: ignore[operator]
    endpoint, verdict = asyncio.run(check_bucket(base_config))
    assert endpoint == base_config.origin.endpoint_url
    assert verdict == Verdict(
        None, f"bucket {base_config.origin.bucket} answers; index.html is readable"
    )


def test_check_a_wrong_bucket_against_moto(base_config: Config) -> None:
    """A mistyped bucket is named as missing, not a silent start."""
    config = base_config.replace(bucket="no-such-bucket-here")
    endpoint, verdict = asyncio.run(check_bucket(config))
    assert verdict.failed is Part.BUCKET
    assert verdict.reason == f"no such bucket: no-such-bucket-here does not exist at {endpoint}"


def test_check_an_unreachable_endpoint(base_config: Config) -> None:
    """A port nobody listens on is an unreachable endpoint, said at once."""
    config = base_config.replace(endpoint_url=f"http://127.0.0.1:{free_port()}")
    endpoint, verdict = asyncio.run(check_bucket(config))
    assert verdict.failed is Part.ENDPOINT
    assert verdict.reason == f"endpoint unreachable: cannot connect to {endpoint}"


# --- through the real command --------------------------------------------------------------


def test_a_start_prints_one_console_line(
    s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """Without --console, and with logs going to files only, a start still says on the console
    what it serves, from where, at which address, with how many workers and where it caches;
    once, not once per worker."""
    put("index.html", b"home")
    port = free_port()
    cache = str(tmp_path / "cache")
    args = cli_args(s3, bucket, cache, port, "--threads", "2", "--dir", str(tmp_path / "logs"))
    proxy = ProxyProcess(args, {}, port)
    output = Output(proxy.proc.stdout)
    try:
        lines = output.until("serving bucket", timeout=60)
        proxy.wait_ready(timeout=60)
        assert lines[-1] == (
            f"s3proxy {__version__} serving bucket {bucket} from {s3.endpoint_url} at "
            f"http://127.0.0.1:{port}, 2 workers, cache {cache}"
        )
        assert httpx.get(f"{proxy.url}/").status_code == 200
        assert httpx.get(f"{proxy.url}/_proxy/ready").status_code == 200
    finally:
        os.killpg(proxy.proc.pid, signal.SIGTERM)
        proxy.proc.wait(timeout=30)
        everything = output.all()
        proxy.kill()
    assert sum("serving bucket" in line for line in everything) == 1


def test_a_wrong_bucket_is_said_and_readiness_fails(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """A mistyped bucket: the console says so, the process keeps serving, /_proxy/ready is 503
    with the same words, and the log file has them too."""
    port = free_port()
    logs = tmp_path / "logs"
    args = cli_args(s3, "no-such-bucket-here", str(tmp_path / "c"), port, "--dir", str(logs))
    proxy = ProxyProcess([*args, "--threads", "1"], {}, port)
    output = Output(proxy.proc.stdout)
    reason = f"no such bucket: no-such-bucket-here does not exist at {s3.endpoint_url}"
    try:
        lines = output.until("no such bucket", timeout=60)
        proxy.wait_ready(timeout=60)
        assert reason in lines[-1]
        ready = httpx.get(f"{proxy.url}/_proxy/ready")
        assert ready.status_code == 503
        assert ready.json()["problems"] == [f"s3: {reason}"]
    finally:
        proxy.kill()
    assert reason in "".join(p.read_text() for p in logs.iterdir())


def test_strict_startup_exits_1_on_an_unreachable_endpoint(tmp_path: Path) -> None:
    """With --strict-startup, an endpoint nobody answers on ends the start with exit code 1
    and the reason on the console."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{free_port()}"
    args = [
        "--bucket", "site", "--key", "k", "--secret", "s", "--region", "us-east-1",
        "--endpoint-url", endpoint, "--cache-dir", str(tmp_path / "c"), "--dir", "",
        "--port", str(port), "--strict-startup",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "s3proxy", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert f"endpoint unreachable: cannot connect to {endpoint}" in done.stderr
    assert "serving" not in done.stdout  # no banner for a start that ends here


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_default_workers_follow_the_affinity_mask(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Under `taskset -c 0` the command starts one worker by default, whatever the host's
    CPU count (os.cpu_count(), 2 on the build machines)."""
    port = free_port()
    args = cli_args(s3, bucket, str(tmp_path / "c"), port)
    env = {k: v for k, v in os.environ.items() if k not in ("THREADS", "S3PROXY_THREADS")}
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "s3proxy", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        lines = Output(proc.stdout).until("serving bucket", timeout=60)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert ", 1 worker, " in lines[-1]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "s3proxy", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_command_exit_codes(
    s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """`s3proxy check` with the serving options prints the checklist: exit 0 when every line
    is ✓ (a good bucket), 1 when one is ✗ (a wrong bucket), 1 for a bad setting."""
    put("index.html", b"home")
    good = _check(*cli_args(s3, bucket, str(tmp_path / "c"), free_port()))
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines()[-1] == "all checks passed"
    assert f"✓ bucket {bucket}: bucket {bucket} answers; index.html is readable" in good.stdout
    bad = _check(*cli_args(s3, "no-such-bucket-here", str(tmp_path / "c"), free_port()))
    assert bad.returncode == 1
    assert "✗ bucket no-such-bucket-here: no such bucket" in bad.stdout
    invalid = _check(*cli_args(s3, bucket, str(tmp_path / "c"), free_port()), "--ttl", "-5")
    assert invalid.returncode == 1
    assert invalid.stdout.startswith("✗ configuration: ")
