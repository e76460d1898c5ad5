"""The boundary between a worker and its sink process: records cross it intact, a stalled
child costs records (counted), never a request, and the child ends with its worker."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from s3proxy.config import Config
from s3proxy.record import RequestRecord
from s3proxy.sinks.process import SinkClient, batch, row, unbatch
from tests.servers import ProxyServer
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
    assert unbatch(batch(0, [row(record)])) == (0, [record])
    assert unbatch(batch(7, [row(record)] * 3)) == (7, [record] * 3)
    assert unbatch(batch(2, [])) == (2, [])


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\xff",
        batch(1, [row(RequestRecord(1.0, "GET", "/", "", "-", 0, 0, 200))])[:-3],
        marshal.dumps((1,)),
        marshal.dumps((1, 5)),
        marshal.dumps((1, [(1, 2)])),
    ],
    ids=["empty", "junk", "truncated", "short", "not-rows", "short-row"],
)
def test_a_malformed_batch_is_refused(message: bytes) -> None:
    """Anything but a batch raises the errors the child counts and skips."""
    with pytest.raises((ValueError, EOFError, TypeError)):
        unbatch(message)


def test_a_stalled_sink_process_costs_records_not_requests(
    put: Callable[..., None], start_proxy: Callable[..., ProxyServer], tmp_path: Path
) -> None:
    """With the sink process stopped (SIGSTOP), requests are answered as fast as ever; once
    its socket buffer is full, batches are dropped and counted in the worker."""
    put("index.html", b"x" * 2000)
    with AkumuliServer() as akumuli:
        proxy = start_proxy(akumuli_host="127.0.0.1", akumuli_port=akumuli.port)
        client = proxy.app.sinks
        assert client is not None and client._child is not None
        with httpx.Client(base_url=proxy.url) as http:
            assert http.get("/").status_code == 200
            wait_for(lambda: len(akumuli.points) >= 1, what="the first record")
            os.kill(client._child.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                for _ in range(4000):
                    assert http.get("/", headers={"x-forwarded-for": "9" * 3000}).status_code == 200
                elapsed = time.monotonic() - started
                wait_for(lambda: client.dropped > 0, what="drops counted in the worker")
            finally:
                os.kill(client._child.pid, signal.SIGCONT)
        assert elapsed < 60  # bounded, not a timing assertion: it would hang if requests waited
        assert client.sent > 0


def test_the_sink_process_ends_with_its_worker(tmp_path: Path) -> None:
    """Closing the client (worker shutdown) makes the child drain and exit."""

    async def run() -> int | None:
        client = SinkClient(Config(bucket="b", cache_dir=str(tmp_path), prometheus=True))
        client.start()
        assert client._child is not None
        await asyncio.sleep(0.5)
        await client.close()
        return client._child.poll()

    assert asyncio.run(run()) == 0
