"""What ``scripts/bench``, ``scripts/bench-miss`` and ``scripts/soak`` share: moto as a child
process, process groups ended in ``finally``, free loopback ports, waiting for a server,
loopback HTTP (and :class:`RawClient`, the least an HTTP client can do).

Each script imports it from its own directory (``sys.path[0]`` is the script's directory
when it runs). Every server listens on 127.0.0.1; no proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
REGION, KEY_ID, SECRET = "us-east-1", "x", "y"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class ScriptError(Exception):
    """The run cannot go on: a server did not start, a response was wrong..."""


class Processes:
    """Subprocesses, each in its own session (its group id is its pid), output to
    ``logs/NAME.out``; :meth:`stop_all` ends every group it started."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.out", "ab") as out:
            try:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, **kwargs,
                )  # fmt: skip
            except OSError as exc:
                raise ScriptError(f"cannot start {name} ({cmd[0]}): {exc}") from None
        self.started.append(proc)
        return proc

    def output(self, name: str) -> str:
        """The last 2,000 characters ``name`` wrote."""
        return (self.logs / f"{name}.out").read_text(errors="replace")[-2000:]

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the group, SIGKILL it after 10 s."""
        self._stop([proc])

    def stop_all(self) -> None:
        """SIGTERM every group, wait up to 10 s in all, then SIGKILL what is left."""
        self._stop(list(self.started))

    def _stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            if proc in self.started:
                self.started.remove(proc)


def signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to ``proc``'s process group, if ``proc`` still runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the pid
        except ProcessLookupError:
            pass


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so every ``finally`` runs, as it does for Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def open_url(url: str | urllib.request.Request, timeout: float = 10.0) -> Any:
    """``urlopen`` without a proxy from the environment: everything here is loopback."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(url, timeout=timeout)


def fetch(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> bytes:
    """The body of a GET of ``url``; HTTP errors raise ``urllib.error.HTTPError``."""
    with open_url(urllib.request.Request(url, headers=headers or {}), timeout) as response:
        body: bytes = response.read()
        return body


def wait_until_up(
    url: str, name: str, procs: Processes, proc: subprocess.Popen[bytes], timeout: float = 30
) -> None:
    """Return once ``url`` answers with any HTTP status; raise if ``proc`` dies or time runs
    out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScriptError(f"{name} exited with {proc.returncode}:\n{procs.output(name)}")
        try:
            with open_url(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise ScriptError(f"{name} did not answer at {url} within {timeout:.0f} s")


def serve_moto(port: int, wrap: Callable[[WsgiApp], WsgiApp] | None = None) -> None:
    """Run moto's WSGI app (as ``moto_server`` does) on ``127.0.0.1:port`` until killed,
    threaded, without a log line per request; ``wrap`` may put a WSGI wrapper around it."""
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app: WsgiApp = DomainDispatcherApplication(create_backend_app)
    make_server(LOOPBACK, port, wrap(app) if wrap else app, threaded=True).serve_forever()


def start_moto(
    procs: Processes, script: str, probe: str = "/", env: dict[str, str] | None = None
) -> str:
    """Start ``script _moto PORT`` (whose ``main`` calls :func:`serve_moto`): a process of its
    own, so moto never shares a GIL with the script's clients. Returns its endpoint once
    ``probe`` answers."""
    port = free_port()
    proc = procs.start("moto", [sys.executable, script, "_moto", str(port)], env=env)
    endpoint = f"http://{LOOPBACK}:{port}"
    wait_until_up(endpoint + probe, "moto", procs, proc)
    return endpoint


def s3_client(endpoint: str, **config: Any) -> Any:
    """A boto3 S3 client for the moto at ``endpoint``; ``config``: botocore Config settings."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET, config=Config(**config),
    )  # fmt: skip


def s3proxy_env() -> dict[str, str]:
    """Only what an s3proxy process needs: no S3PROXY_* or sink settings from this shell."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


class RawClient:
    """One kept-alive HTTP/1.1 connection that GETs and reads a body of ``Content-Length``
    bytes, and nothing more."""

    def __init__(self, url: str) -> None:
        self.host, _, port = url.removeprefix("http://").partition(":")
        self.port = int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        """``path``'s status and body."""
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(v)
            for k, _, v in (x.partition(b":") for x in lines)
            if k.lower() == b"content-length"
        )
        return int(lines[0].split()[1]), await reader.readexactly(length)

    async def aclose(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
