"""The embedded default: a local S3 emulator holding a small sample site.

``s3proxy --demo`` points the proxy at :func:`run_demo_origin` instead of AWS: moto's S3
emulator, in a thread of this process, bound to loopback, with the private bucket
:data:`DEMO_BUCKET` holding every file under ``demo_site/``.

This is the emulator's side of the wire, not the proxy's: it seeds the bucket with a blocking
botocore client and never touches the proxy's origin, cache or app. moto and botocore are
imported inside the functions that use them, so importing this module is cheap and moto stays
an optional dependency (``pip install 's3proxy[demo]'``).
"""

import contextlib
import functools
import logging
import mimetypes
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEMO_BUCKET = "s3proxy-demo"
DEMO_REGION = "us-east-1"
DEMO_KEY_ID = "demo"  # moto accepts any credentials
DEMO_SECRET = "demo-secret"

SITE_DIR = Path(__file__).with_name("demo_site")

# A key the sample site does not have, asked for once at startup (see _check_errors).
_ABSENT_KEY = "s3proxy-demo-startup-check/no-such-key"


@dataclass(frozen=True)
class DemoOrigin:
    """Where the running emulator is and how to sign requests to it."""

    endpoint_url: str  # http://127.0.0.1:<port>
    bucket: str
    region: str
    key_id: str
    secret: str


def instructions(url: str, token: str) -> str:
    """What the demo prints on start: where the site is, the management token and curl lines
    to paste (a page, a purge of it, the cache stats). ``url`` ends without a slash."""
    auth = f'-H "Authorization: Bearer {token}"'
    return "\n".join(
        [
            f"s3proxy demo: serving the sample site at {url}/",
            f"management token (random, for this run only): {token}",
            "try:",
            f"  curl -i {url}/docs/guide.html",
            f'  curl {auth} "{url}/_proxy/_private/_cache/clear?path=/docs/guide.html"',
            f"  curl {auth} {url}/_proxy/_private/_cache/stats",
        ]
    )


def site_files() -> list[tuple[str, Path]]:
    """Every file of the sample site as (object key, local path), sorted by key.

    Keys are paths relative to ``demo_site/`` with ``/`` separators on every OS. Raises
    RuntimeError if the site is missing (a build that left out the package data), so the demo
    fails at startup rather than serving an empty bucket.
    """
    if not SITE_DIR.is_dir():
        raise RuntimeError(f"the demo site is missing: {SITE_DIR}")
    files = [(p.relative_to(SITE_DIR).as_posix(), p) for p in SITE_DIR.rglob("*") if p.is_file()]
    return sorted(files, key=lambda item: item[0])


def content_type_for(path: Path) -> str:
    """The Content-Type to store with ``path``: by extension, ``; charset=utf-8`` on text/*.

    Unknown extensions, and compressed files (whose type would describe the content inside),
    are ``application/octet-stream``.
    """
    content_type, encoding = _mime_table().guess_type(path.name)
    if content_type is None or encoding is not None:
        return "application/octet-stream"
    if content_type.startswith("text/"):
        return f"{content_type}; charset=utf-8"
    return content_type


@functools.cache
def _mime_table() -> mimetypes.MimeTypes:
    """Python's built-in table only, so a host's /etc/mime.types cannot change the answers."""
    table = mimetypes.MimeTypes()
    # RFC 9239: text/javascript; Python 3.11's table still says application/javascript.
    table.add_type("text/javascript", ".js")
    table.add_type("text/javascript", ".mjs")
    return table


@contextlib.contextmanager
def run_demo_origin(host: str = "127.0.0.1", port: int = 0) -> Iterator[DemoOrigin]:
    """Run moto's S3 emulator on ``host:port``, seeded with the sample site, for a with block.

    ``port=0`` binds a free port; the yielded origin's ``endpoint_url`` has the real one. On entry
    the bucket holds exactly :func:`site_files`, each object with its :func:`content_type_for`.
    moto keeps its state per process, so origins in one process share the bucket; leftovers
    from an earlier one are deleted. The server is stopped on exit.

    Raises RuntimeError if moto is not installed or the emulator cannot answer S3 errors (see
    :func:`_check_errors`), OSError if ``host:port`` cannot be bound.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise RuntimeError("the demo needs moto: pip install 's3proxy[demo]'") from exc

    _quiet_werkzeug()
    _check_bindable(host, port)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        # The server's own address: with port=0 the port the OS picked.
        bound_host, bound_port = server.get_host_and_port()
        origin = DemoOrigin(
            endpoint_url=_endpoint_url(bound_host, bound_port),
            bucket=DEMO_BUCKET,
            region=DEMO_REGION,
            key_id=DEMO_KEY_ID,
            secret=DEMO_SECRET,
        )
        _seed(origin)
        yield origin
    finally:
        server.stop()


def _quiet_werkzeug() -> None:
    """Drop the emulator's line per S3 call; errors still show.

    Only an unset level is changed: werkzeug would set INFO itself on its first line, and a
    level someone chose is theirs.
    """
    logger = logging.getLogger("werkzeug")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _check_bindable(host: str, port: int) -> None:
    """Raise OSError now if ``host:port`` cannot be bound.

    ThreadedMotoServer binds in its own thread, and its start() waits forever for a server that
    failed to bind (moto 5.2). This probe leaves a short race with other programs, but turns the
    common case, a port already in use, into an error instead of a hang.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # werkzeug's server sets SO_REUSEADDR too, so the probe refuses what it would refuse.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        message = f"cannot bind the demo S3 emulator to {host}:{port}: {exc.strerror or exc}"
        raise OSError(exc.errno, message) from exc


def _endpoint_url(host: str, port: int) -> str:
    """The URL a client uses: wildcard binds are reached on loopback, IPv6 needs brackets."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _seed(origin: DemoOrigin) -> None:
    """Make the bucket hold exactly the sample site, then check the emulator's error path."""
    files = site_files()
    client = _client(origin)
    try:
        # us-east-1 takes no LocationConstraint, and answers 200 when its owner creates it again.
        client.create_bucket(Bucket=origin.bucket)
        _delete_leftovers(client, origin.bucket, keep={key for key, _ in files})
        for key, path in files:
            client.put_object(
                Bucket=origin.bucket,
                Key=key,
                Body=path.read_bytes(),
                ContentType=content_type_for(path),
            )
        _check_errors(client, origin.bucket)
    finally:
        client.close()


def _client(origin: DemoOrigin) -> Any:
    """A botocore S3 client for the emulator that takes nothing from the environment.

    Endpoint, region and credentials are explicit. No profile, config or credentials file is
    read: an AWS_PROFILE naming a missing profile would raise, and a file's s3 settings
    (accelerate, virtual addressing) would send requests elsewhere. HTTP_PROXY is ignored. A
    failure is not retried: the server is local.
    """
    import botocore.session
    from botocore.config import Config
    from botocore.configprovider import ConstantProvider

    session = botocore.session.Session()
    store = session.get_component("config_store")
    store.set_config_provider("profile", ConstantProvider(None))
    store.set_config_provider("config_file", ConstantProvider(os.devnull))
    store.set_config_provider("credentials_file", ConstantProvider(os.devnull))
    config = Config(
        proxies={},
        retries={"total_max_attempts": 1},
        s3={"addressing_style": "path"},
    )
    return session.create_client(
        "s3",
        endpoint_url=origin.endpoint_url,
        region_name=origin.region,
        aws_access_key_id=origin.key_id,
        aws_secret_access_key=origin.secret,
        config=config,
    )


def _delete_leftovers(client: Any, bucket: str, keep: set[str]) -> None:
    """Delete every object in ``bucket`` whose key is not in ``keep``."""
    paginator = client.get_paginator("list_objects_v2")
    stale = [
        obj["Key"]
        for page in paginator.paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
        if obj["Key"] not in keep
    ]
    for start in range(0, len(stale), 1000):  # DeleteObjects takes at most 1000 keys
        batch = [{"Key": key} for key in stale[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


def _check_errors(client: Any, bucket: str) -> None:
    """Raise RuntimeError unless a missing key gets 404, so the demo fails now, not per page.

    moto renders S3 errors with botocore sessions that read the environment, and an
    AWS_PROFILE naming a profile that does not exist turns every error, 404 included, into a
    500 (moto issue #5469). The proxy's error page depends on that 404.
    """
    from botocore.exceptions import ClientError

    try:
        client.get_object(Bucket=bucket, Key=_ABSENT_KEY)["Body"].close()
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            return
        raise RuntimeError(
            f"the demo S3 emulator answers a missing key with HTTP {status}, not 404; moto reads"
            " AWS_PROFILE and AWS_CONFIG_FILE from the environment: unset AWS_PROFILE if it names"
            " a profile that does not exist"
        ) from exc
    raise RuntimeError(f"the demo S3 emulator has an object at {_ABSENT_KEY!r}; it should not")
