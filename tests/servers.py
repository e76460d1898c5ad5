"""Real servers for the tests: moto's S3 app under werkzeug, and s3proxy under uvicorn.

moto's in-process decorators do not work with aiobotocore, so S3 is moto's own WSGI app
(the one ``moto_server`` runs) on a loopback port. A thin WSGI wrapper counts the requests
that reach it and can inject faults (an error status, a delay, a body that breaks off, a
blackhole that accepts the request and never answers) so tests can assert what the proxy asked
of S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import uvicorn
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

from s3proxy.app import App
from s3proxy.config import Config
from s3proxy.protocol import StrictProtocol

KEY_ID, SECRET, REGION = "testing", "testing-secret", "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def s3_client(endpoint_url: str) -> Any:
    """A boto3 S3 client with the tests' credentials."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )


@dataclass
class Fault:
    """Applied to GET requests whose path ends with ``suffix``; ``times`` is how many."""

    suffix: str
    status: int | None = None
    delay: float = 0.0
    truncate_after: int | None = None
    corrupt_at: int | None = None
    chunk_delay: float = 0.0
    #: Accept the request and never answer (until :meth:`S3Server.release` or 60 s).
    blackhole: bool = False
    times: int = 1


@dataclass
class S3Server:
    """moto on ``127.0.0.1:<port>``, with a request log and fault injection."""

    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    port: int = 0
    #: Requests being handled now, and the most there ever were at once.
    in_flight: int = 0
    most_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return s3_client(self.endpoint_url)

    def gets(self, bucket: str, key: str) -> int:
        """How many GETs of ``key`` reached S3."""
        from urllib.parse import quote

        path = f"/{bucket}/{quote(key, safe='/~')}"
        return sum(1 for m, p, _ in self.requests if m == "GET" and p == path)

    def release(self) -> None:
        """End the blackholes: requests held by them get a 503 (their clients are gone)."""
        released, self._released = self._released, threading.Event()
        released.set()

    def _app(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            with self._lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return handle(environ, start_response)
            finally:
                with self._lock:
                    self.in_flight -= 1

        def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            method, path = environ["REQUEST_METHOD"], environ.get("RAW_URI", environ["PATH_INFO"])
            path = path.split("?", 1)[0]
            headers = {
                k[5:].lower().replace("_", "-"): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            }
            with self._lock:
                self.requests.append((method, path, headers))
                fault = next(
                    (f for f in self.faults if method == "GET" and path.endswith(f.suffix)), None
                )
                if fault is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.blackhole:
                self._released.wait(60)
                fault = Fault(fault.suffix, status=503)
            if fault is not None and fault.status is not None:
                start_response(f"{fault.status} Injected", [("Content-Length", "0")])
                return [b""]
            result = inner(environ, start_response)
            if fault is not None and fault.truncate_after is not None:
                return _truncate(result, fault.truncate_after)
            if fault is not None and fault.corrupt_at is not None:
                return _corrupt(result, fault.corrupt_at)
            if fault is not None and fault.chunk_delay:
                return _throttle(result, fault.chunk_delay)
            return result

        return app

    @contextlib.contextmanager
    def running(self) -> Iterator[S3Server]:
        app = self._app(DomainDispatcherApplication(create_backend_app))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.release()
            server.shutdown()
            thread.join()


def _truncate(result: Any, limit: int) -> Iterator[bytes]:
    """Yield at most ``limit`` bytes, then fail: werkzeug closes the connection mid-body."""
    sent = 0
    for chunk in result:
        if sent + len(chunk) > limit:
            yield chunk[: limit - sent]
            raise ConnectionAbortedError("injected: body broken off")
        sent += len(chunk)
        yield chunk


def _corrupt(result: Any, position: int) -> Iterator[bytes]:
    """Send every byte, with byte ``position`` flipped: right length, wrong content."""
    data = b"".join(result)
    yield data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1 :]


def _throttle(result: Any, delay: float, size: int = 64 * 1024) -> Iterator[bytes]:
    """Send the body in ``size`` pieces with ``delay`` seconds between them."""
    for chunk in result:
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]
            time.sleep(delay)


class ProxyServer:
    """s3proxy's App under a real uvicorn server (uvloop + httptools, s3proxy's protocol) in a
    thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = App(config)
        self.port = config.process.port
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=config.process.port,
                loop="uvloop",
                # What the s3proxy command serves with: the strict protocol, and the fast path
                # when the config has it on (S3PROXY_FAST_PATH, see conftest.base_config).
                http=StrictProtocol,
                log_config=None,
                access_log=False,
                server_header=False,
                lifespan="on",
            )
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._server.run()

    def start(self) -> ProxyServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("s3proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


class ProxyProcess:
    """The ``s3proxy`` command as a user runs it, in its own process group."""

    @classmethod
    def two_workers(
        cls, sites_file: str, s3: S3Server, cache_dir: str, *extra: str
    ) -> ProxyProcess:
        """The command serving ``sites_file`` from ``s3`` with two workers (and ``extra``
        flags), ready."""
        port = free_port()
        args = [
            "--config", sites_file, "--region", REGION, "--key", KEY_ID, "--secret", SECRET,
            "--endpoint-url", s3.endpoint_url, "--path-style", "true", "--port", str(port),
            "--cache-dir", cache_dir, "--dir", "", "--host", "127.0.0.1",
            "--threads", "2", "--auth-key", "test-token", *extra,
        ]  # fmt: skip
        return cls(args, {}, port).wait_ready()

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        import os
        import subprocess
        import sys

        self.port = port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "s3proxy", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> ProxyProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"s3proxy exited with {self.proc.returncode}: {output}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.kill()  # never leave a server (and its workers) running past a failed start
        raise RuntimeError("s3proxy did not start listening")

    def kill(self, sig: int | None = None) -> None:
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig or signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except Exception:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def cli_args(s3: S3Server, bucket: str, cache_dir: str, port: int, *extra: str) -> list[str]:
    """Command-line flags that point s3proxy at the test moto server."""
    return [
        "--bucket", bucket, "--region", REGION, "--key", KEY_ID, "--secret", SECRET,
        "--endpoint-url", s3.endpoint_url, "--path-style", "true", "--port", str(port),
        "--cache-dir", cache_dir, "--dir", "", "--host", "127.0.0.1", *extra,
    ]  # fmt: skip


class Output:
    """A process's output lines, read by a thread as they come, so a test waits for a line
    with a timeout instead of hanging on a read that never returns."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        try:
            for raw in stream:
                with self._changed:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass  # the test closed the pipe
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def until(self, text: str, timeout: float = 60) -> list[str]:
        """The lines up to the first one containing ``text``; AssertionError (with what was
        read) if the output ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for number, line in enumerate(self.lines):
                    if text in line:
                        return self.lines[: number + 1]
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def all(self, timeout: float = 30) -> list[str]:
        """Every line, once the process has ended and its output is read to the end."""
        self._thread.join(timeout)
        return self.lines
