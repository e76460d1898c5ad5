"""The boundary between a worker and its sink process: records cross it intact, a stalled
child costs records (counted), never a request, and the child ends with its worker."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from s3proxy.config import LogsConfig, SinksConfig
from s3proxy.params import parse_cpu_list
from s3proxy.record import RequestRecord
from s3proxy.sinks.process import SinkClient, batch, row, unbatch
from tests.servers import ProxyProcess, ProxyServer, S3Server, cli_args, free_port
from tests.sink_servers import AkumuliServer, wait_for


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(
            RequestRecord(1.5, "GET", "/index.html", "text/html", "1.2.3.4", 10, 7, 200),
            id="plain",
        ),
        pytest.param(
            RequestRecord(
                1e9,
                "GET",
                '/a"b\\c\n\u00e9',
                'text/plain; x="y"',
                "::1",
                0,
                0,
                404,
                compressed=True,
                cache="miss",
                origin_bytes=5,
            ),
            id="escapes",
        ),  # fmt: skip
    ],
)
def test_records_cross_the_boundary_intact(record: RequestRecord) -> None:
    """What the worker encodes, the child decodes to an equal record (alone, in a batch,
    with the worker's count of dropped records)."""
    assert unbatch(batch(0, [row(record)])) == (0, [record], [])
    assert unbatch(batch(7, [row(record)] * 3)) == (7, [record] * 3, [])
    assert unbatch(batch(2, [])) == (2, [], [])
    timings = [("ok", 0.0123), ("not_found", 0.5)]
    assert unbatch(batch(0, [row(record)], timings)) == (0, [record], timings)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\xff",
        batch(1, [row(RequestRecord(1.0, "GET", "/", "", "-", 0, 0, 200))])[:-3],
        marshal.dumps((1,)),
        marshal.dumps((1, 5)),
        marshal.dumps((1, [(1, 2)])),
        marshal.dumps((1, [], [("ok",)])),
        marshal.dumps((1, [], [("ok", "fast")])),
    ],
    ids=[
        *("empty", "junk", "truncated", "short", "not-rows", "short-row"),
        *("short-timing", "bad-timing"),
    ],
)
def test_a_malformed_batch_is_refused(message: bytes) -> None:
    """Anything but a batch raises the errors the child counts and skips."""
    with pytest.raises((ValueError, EOFError, TypeError)):
        unbatch(message)


def test_a_stalled_sink_process_costs_records_not_requests(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer], tmp_path: Path
) -> None:
    """With the sink process stopped (SIGSTOP), every request is still answered (none waits
    for it); once its socket buffer is full, batches are dropped and counted in the worker."""
    put("index.html", b"x" * 2000)
    with AkumuliServer() as akumuli:
        proxy = start_proxy(akumuli_host="127.0.0.1", akumuli_port=akumuli.port)
        client = proxy.app.resources.sinks
        assert client is not None and client._child is not None
        # A request that waited for the stalled child would never be answered: httpx's
        # timeout fails it (a bound on waiting; the whole loop's time is the machine's).
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            assert http.get("/").status_code == 200
            wait_for(lambda: len(akumuli.points) >= 1, what="the first record")
            os.kill(client._child.pid, signal.SIGSTOP)
            try:
                for _ in range(4000):
                    assert http.get("/", headers={"x-forwarded-for": "9" * 3000}).status_code == 200
                wait_for(lambda: client.dropped > 0, what="drops counted in the worker")
            finally:
                os.kill(client._child.pid, signal.SIGCONT)
        assert client.sent > 0


def test_the_sink_process_ends_with_its_worker(tmp_path: Path) -> None:
    """Closing the client (worker shutdown) makes the child drain and exit."""

    async def run() -> int | None:
        client = SinkClient(SinksConfig(prometheus=True), LogsConfig(), str(tmp_path))
        client.start()
        assert client._child is not None
        await asyncio.sleep(0.5)
        await client.close()
        return client._child.poll()

    assert asyncio.run(run()) == 0


def _allowed_cpus(pid: int) -> set[int]:
    """Where the kernel lets ``pid`` run (its ``Cpus_allowed_list``, e.g. ``0-2,5``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return set(parse_cpu_list(line.split(":", 1)[1]))
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def _descendants(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found + [grandchild for child in found for grandchild in _descendants(child)]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_sink_cpus_reserve_a_core_for_the_sink_processes(
    threads: str, s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """``--sink-cpus`` puts every sink process on those CPUs and every worker on the others,
    with one worker in-process or several; requests and records flow as before."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        pytest.skip("needs two CPUs")
    sink_cpu, worker_cpus = usable[-1], usable[:-1]
    put("index.html", b"<p>hi</p>")
    with AkumuliServer() as akumuli:
        port = free_port()
        args = cli_args(s3, bucket, str(tmp_path / "cache"), port, "--threads", threads)
        args += ["--akumuli-host", "127.0.0.1", "--akumuli-port", str(akumuli.port)]
        args += ["--sink-cpus", str(sink_cpu)]
        proxy = ProxyProcess(args, {}, port).wait_ready()
        try:
            assert httpx.get(f"{proxy.url}/", timeout=10).status_code == 200
            wait_for(lambda: len(akumuli.points) >= 1, what="the record")
            processes = [proxy.proc.pid, *_descendants(proxy.proc.pid)]
            sinks = [pid for pid in processes if "s3proxy.sinks.process" in _cmdline(pid)]
            assert len(sinks) == int(threads)
            for pid in processes:
                assert _allowed_cpus(pid) == ({sink_cpu} if pid in sinks else set(worker_cpus))
        finally:
            proxy.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sink_cpus_naming_a_cpu_we_cannot_use_exits_2(tmp_path: Path) -> None:
    """A CPU this process may not run on stops startup with one line and exit code 2."""
    beyond = max(os.sched_getaffinity(0)) + 1
    done = subprocess.run(
        [sys.executable, "-m", "s3proxy", "-b", "b", "-d", str(tmp_path / "c"), "--dir", ""]
        + ["--prometheus", "true", "--sink-cpus", str(beyond)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        f"s3proxy: error: --sink-cpus: CPU {beyond} is not one this process may use "
        f"({', '.join(map(str, sorted(os.sched_getaffinity(0))))})"
    )
