"""What an operator sees at startup: one console line saying what is served from where, and
the bucket check that says in plain words why S3 will not serve the site.

:func:`classify` is pure: S3's answer to one GetObject of the index (its HTTP status and
error code, or the failure's name when no answer came) -> a :class:`Verdict` naming the part
that is wrong (the endpoint, the credentials or the bucket) and why. :func:`check_bucket` makes
that request through :class:`~s3proxy.origin.Origin`; the readiness probe classifies the same
answer, so ``/_proxy/ready`` fails for as long as the startup check would.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sys
from dataclasses import dataclass

from s3proxy import __version__
from s3proxy import logging as log
from s3proxy.config import Config, SiteConfig
from s3proxy.meta import ProbeAnswer
from s3proxy.origin import Origin, S3Client
from s3proxy.sitesfile import Sites, SiteSpec

_logger = log.get_logger("s3proxy.startup")


class Part(enum.IntEnum):
    """What a check found wrong, in the order a request needs them."""

    ENDPOINT = 1
    CREDENTIALS = 2
    BUCKET = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """``failed``: the part that is wrong (``None``: S3 serves the site); ``reason``: one line
    for an operator, naming the bucket or endpoint but never a secret."""

    failed: Part | None
    reason: str

    @property
    def ok(self) -> bool:
        return self.failed is None


# S3's error codes, and the names of the failures when no answer came, in plain words. The
# codes are S3's (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
_CREDENTIALS = {
    "NoCredentialsError": "no credentials: none given (--key/--secret) and none found in the "
    "AWS chain (environment, profile, container or instance role)",
    "PartialCredentialsError": "incomplete credentials: an access key id without its secret "
    "(or the reverse)",
    "InvalidAccessKeyId": "credentials rejected: S3 does not know this access key id",
    "SignatureDoesNotMatch": "credentials rejected: the secret key does not belong to this "
    "access key id",
    "ExpiredToken": "credentials rejected: the session token has expired",
    "InvalidToken": "credentials rejected: the session token is invalid",
    "TokenRefreshRequired": "credentials rejected: the session token has expired",
    "RequestTimeTooSkewed": "clock skew: this machine's clock differs from S3's by more than "
    "15 minutes; set it right (NTP) and restart",
}
_UNREACHABLE = {
    "EndpointConnectionError",
    "ClientConnectorError",
    "ClientConnectionError",
    "ServerDisconnectedError",
    "ConnectionClosedError",
}
_NO_ANSWER = {"ConnectTimeoutError", "ReadTimeoutError", "TimeoutError"}
_WRONG_REGION = {"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraint"}


def classify(answer: ProbeAnswer, *, bucket: str, key: str, endpoint: str) -> Verdict:
    """What S3's ``answer`` to a GetObject of ``key`` (the site's index) says about serving
    ``bucket`` from ``endpoint``.

    A missing index (404 ``NoSuchKey``) is no failure: the bucket answers, only ``/`` will be
    a 404. A 403 is one, since the proxy cannot read its own home page (with credentials
    lacking ``s3:ListBucket``, S3 also answers 403 for a key that does not exist).
    """
    status, code = answer.status, answer.code
    where = f"s3://{bucket}/{key}"
    if status in (200, 206, 304, 416):  # 416: the index is empty, but it is there
        return Verdict(None, f"bucket {bucket} answers; {key} is readable")
    if code in _CREDENTIALS:
        return Verdict(Part.CREDENTIALS, _CREDENTIALS[code])
    if code in _UNREACHABLE:
        return Verdict(Part.ENDPOINT, f"endpoint unreachable: cannot connect to {endpoint}")
    if code in _NO_ANSWER:
        return Verdict(Part.ENDPOINT, f"endpoint unreachable: {endpoint} did not answer in time")
    if code == "SSLError":
        return Verdict(Part.ENDPOINT, f"TLS failed with {endpoint} (certificate or protocol)")
    if code == "NoSuchBucket":
        return Verdict(Part.BUCKET, f"no such bucket: {bucket} does not exist at {endpoint}")
    if code == "NoSuchKey" or status == 404:
        return Verdict(None, f"bucket {bucket} answers, but has no {key}: / will be a 404")
    if code in _WRONG_REGION or status == 301:
        return Verdict(
            Part.BUCKET, f"wrong region: bucket {bucket} is in another region (--region)"
        )
    if code == "InvalidBucketName":
        return Verdict(Part.BUCKET, f"invalid bucket name: {bucket}")
    if code == "AccessDenied" or status == 403:
        return Verdict(
            Part.BUCKET,
            f"access denied: these credentials may not read {where} (they need s3:GetObject "
            "on it; without s3:ListBucket a missing key is denied too)",
        )
    if status is not None and status >= 500:
        return Verdict(Part.ENDPOINT, f"S3 at {endpoint} is failing: {status} {code}".rstrip())
    said = f"HTTP {status} {code}".rstrip() if status is not None else code or "no answer"
    return Verdict(Part.ENDPOINT, f"unexpected answer from {endpoint}: {said}")


def index_key(site: SiteConfig) -> str:
    """The object ``/`` serves: the check reads it, as the first visitor will."""
    return site.prefix + site.index_document


async def probe(origin: Origin, key: str, within: float) -> Verdict:
    """Ask S3 for ``key`` with ``origin`` and classify the answer; waits at most ``within``
    seconds (no answer by then: the endpoint is unreachable)."""
    try:
        async with asyncio.timeout(within):
            answer = await origin.probe(key)
    except TimeoutError:
        answer = ProbeAnswer(None, "TimeoutError")
    return classify(answer, bucket=origin.bucket, key=key, endpoint=origin.endpoint_url)


async def check_bucket(config: Config) -> tuple[str, Verdict]:
    """Open an origin for ``config``, probe it, close it: (the endpoint used, the verdict).
    Waits at most ``--connect-timeout`` plus 5 s."""
    key = index_key(config.site)
    async with Origin.open(config.origin) as origin:
        return origin.endpoint_url, await probe(origin, key, config.origin.connect_timeout + 5)


async def check_sites(sites: Sites) -> list[tuple[SiteSpec, str, Verdict]]:
    """:func:`check_bucket` for each site, all at once, one client per server: (the site,
    the endpoint used, the verdict)."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name in {site.server for site in sites.sites.values()}:
            clients[name] = await stack.enter_async_context(S3Client(sites.servers[name]))

        async def check(site: SiteSpec) -> tuple[SiteSpec, str, Verdict]:
            client = clients[site.server]
            within = client.config.connect_timeout + 5
            verdict = await probe(client.bucket(site.bucket), index_key(site.settings), within)
            return site, client.endpoint_url, verdict

        return list(await asyncio.gather(*map(check, sites.sites.values())))


def announce(config: Config, sites: Sites, workers: int) -> Verdict:
    """Once per start, before serving: check each site's bucket, print the console line on
    stdout (whatever the log settings) and, when S3 will not serve a site, say why on stderr
    and in the log (``bucket_check_failed``). Returns the first failed verdict, if any."""
    checked = asyncio.run(check_sites(sites))
    failed = [(site, verdict) for site, _, verdict in checked if not verdict.ok]
    strict = config.process.strict_startup
    if not (failed and strict):  # a start about to exit 1 does not say it is serving
        print(banner(config, sites, checked[0][1], workers), flush=True)
    for site, verdict in failed:
        assert verdict.failed is not None
        _logger.error(
            "bucket_check_failed",
            site=site.name,
            part=verdict.failed.name.lower(),
            problem=verdict.reason,
        )
        reason = verdict.reason if sites.source is None else f"site {site.name}: {verdict.reason}"
        if strict:
            print(f"s3proxy: error: {reason}", file=sys.stderr, flush=True)
        else:
            print(
                f"s3proxy: {reason}; serving anyway: /_proxy/ready answers 503 until "
                "S3 does (--strict-startup exits instead)",
                file=sys.stderr,
                flush=True,
            )
    return failed[0][1] if failed else checked[0][2]


def banner(config: Config, sites: Sites, endpoint: str, workers: int) -> str:
    """The one console line of a start: version, what is served from where, at which
    address, by how many workers, cached where."""
    listen = config.process
    host = f"[{listen.host}]" if ":" in listen.host else listen.host
    plural = "s" if workers != 1 else ""
    if sites.source is not None:
        count = len(sites.sites)
        what = f"{count} site{'s' if count != 1 else ''} of {sites.source}"
    else:
        prefix = f" (prefix {config.site.prefix})" if config.site.prefix else ""
        what = f"bucket {config.origin.bucket}{prefix} from {endpoint}"
    return (
        f"s3proxy {__version__} serving {what} "
        f"at http://{host}:{listen.port}, {workers} worker{plural}, cache {config.cache.cache_dir}"
    )
