"""Real servers for the group tests: Debian's ``redis-server`` and ``nginx`` on loopback ports,
each in its own process, started and killed by the test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import free_port

REDIS_SERVER = shutil.which("redis-server")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port}")


class RedisServer:
    """``redis-server`` on a loopback port, without persistence: a restart after :meth:`kill`
    comes back empty, as a Redis that lost its data does."""

    def __init__(self, directory: Path, password: str | None = None, tls: bool = False) -> None:
        self.directory = directory
        self.password = password
        #: TLS only (``rediss://``), with a certificate for 127.0.0.1 from :attr:`ca`.
        self.ca = make_certificates(directory) if tls else None
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.ca else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        if self.ca is not None:
            certificate, key = self.directory / "server.crt", self.directory / "server.key"
            args = [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port)]
            args += ["--bind", "127.0.0.1", "--tls-auth-clients", "no"]
            args += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
            args += ["--tls-ca-cert-file", str(self.ca)]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port, self.proc, "redis-server")
        return self

    def shutdown_saving(self) -> None:
        """``SHUTDOWN SAVE``: Redis writes its data to disk and exits; :meth:`start` loads it
        again (a restart that keeps the stream, the version and the epoch)."""
        assert self.proc is not None
        with socket.create_connection(("127.0.0.1", self.port), 5) as conn:
            conn.sendall(b"SHUTDOWN SAVE\r\n")
            conn.recv(100)  # the connection closes when Redis exits
        self.proc.wait(timeout=30)
        self.proc = None

    def client(self) -> redis.Redis:
        """A plain redis-py client of this server (no TLS)."""
        return redis.Redis.from_url(self.url, password=self.password)

    def snapshot(self) -> bytes:
        """``SAVE``: the data set as Redis writes it to disk now (an RDB file), for
        :meth:`restore`."""
        with self.client() as client:
            client.save()
        return (self.directory / "dump.rdb").read_bytes()

    def restore(self, snapshot: bytes) -> None:
        """Redis killed and started again on an earlier :meth:`snapshot`: a restore from a
        backup, which takes the group back to an older copy of its data."""
        self.kill()
        (self.directory / "dump.rdb").write_bytes(snapshot)
        self.start()

    def rewind(self, in_place: bool) -> Callable[[], None]:
        """A copy of the data now; calling the answer takes Redis back to it: restarted on
        an RDB file (:meth:`restore`), or every key rewritten in one transaction while
        clients stay connected (``DUMP`` now; then ``FLUSHALL`` and ``RESTORE``)."""
        if not in_place:
            snapshot = self.snapshot()
            return lambda: self.restore(snapshot)
        with self.client() as client:
            dumps = {key: client.dump(key) for key in client.keys()}

        def restore() -> None:
            with self.client() as client:
                pipe = client.pipeline(transaction=True).flushall()
                for key, value in dumps.items():
                    pipe.restore(key, 0, value)
                pipe.execute()

        return restore

    def kill(self) -> None:
        """SIGKILL: connections drop at once and the data is gone."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    @contextlib.contextmanager
    def running(self) -> Iterator[RedisServer]:
        self.start()
        try:
            yield self
        finally:
            self.kill()


def make_certificates(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 it signed (``server.crt``/``.key``) in
    ``directory``; the CA's certificate file."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=s3proxy test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1",
            "-extfile", "san.ext")  # fmt: skip
    return directory / "ca.crt"


NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream s3proxy {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://s3proxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            # One try per request, so each request shows which instance answered it.
            proxy_next_upstream off;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_balancer(tmp: Path, ports: list[int]) -> Iterator[str]:
    """nginx on a loopback port, round robin over ``127.0.0.1:<port>`` for each port; its
    URL. Skips the test if nginx is not installed."""
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in ports)
    # As root the worker would drop to 'nobody', which cannot read a private temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, tmp=tmp, servers=servers, port=port))
    args = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, "nginx")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
