"""The startup check and console line: S3's answer for the site's index, classified into
what an operator must fix (no such bucket, access denied, endpoint unreachable, clock skew);
checked against moto with a wrong bucket and a closed port."""

from __future__ import annotations

import asyncio

import pytest

from s3proxy import __version__
from s3proxy.config import Config
from s3proxy.origin import ProbeAnswer
from s3proxy.startup import Part, Verdict, banner, check_bucket, classify
from tests.servers import free_port

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
    assert banner(config, ENDPOINT, workers) == line


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
