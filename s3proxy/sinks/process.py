"""Metrics sinks in a child process, so that encoding and sending records never costs the
serving event loop its throughput.

Measured (``scripts/bench --sinks``): with the sinks on the serving loop, encoding and
sending a record to Akumuli, the line protocol, MongoDB, GeoIP and Prometheus took ~28 µs of
CPU per request, three times the cost of the hit it described (0.28× the throughput without
sinks). Here each worker keeps only :class:`SinkClient`: a record becomes a tuple (~0.1 µs),
and the tuples go in batches every :data:`FLUSH_INTERVAL` seconds, as one :mod:`marshal`
message, over a ``SOCK_SEQPACKET`` socket pair (message boundaries kept, end of file when the
worker goes), with non-blocking sends. When the child falls behind, its socket buffer fills
and the batch is dropped and counted — the request never waits. The child runs only on
otherwise idle CPU (``SCHED_IDLE``) and feeds the usual :class:`~s3proxy.sinks.base.Sinks`
(queues, batching, reconnects) a batch at a time. All the sinks together cost 4–11 µs of
its CPU per record when they packed BSON and updated histogram buckets by hand; through
PyMongo's encoder and ``Histogram.observe`` the MongoDB and Prometheus sinks take ~3 µs a
record more each (see the CHANGELOG), on CPU the workers leave idle.

Start order: the worker's lifespan spawns ``python -m s3proxy.sinks.process FD``; the child
reads the settings from :data:`CONFIG_ENV`, and exits on end of file after draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from s3proxy import logging as log
from s3proxy.config import LogsConfig, SinksConfig
from s3proxy.record import RequestRecord, Timing

CONFIG_ENV = "_S3PROXY_SINK_CONFIG"
#: Seconds between batches sent to the child (and the most a record waits in the worker).
FLUSH_INTERVAL = 0.05
#: A batch is sent early when it may have reached this many bytes.
BATCH_BYTES = 64 * 1024
#: Kernel buffer for the socket pair: how far the child may fall behind before drops.
SOCKET_BUFFER = 2 * 1024 * 1024
#: The most one message can hold: a batch passes BATCH_BYTES by at most one record, whose
#: resource is at most 1 KiB (longer ones are answered 414).
RECV_BYTES = 256 * 1024
#: The child's nice value where SCHED_IDLE is not available: serving comes first.
CHILD_NICE = 10

_logger = log.get_logger("s3proxy.sinks")


#: A record on the wire: :class:`RequestRecord`'s fields in order, without ``location``.
Row = tuple[float, str, str, str, str, int, int, int, bool, str, int, str]


def row(r: RequestRecord) -> Row:
    return (
        r.timestamp, r.method, r.resource, r.mime_type, r.ip, r.size,
        r.duration_us, r.status, r.compressed, r.cache, r.origin_bytes, r.site,
    )  # fmt: skip


def batch(dropped: int, rows: list[Row], timings: Sequence[Timing] = ()) -> bytes:
    """One message: ``(dropped, rows, timings)``, where ``dropped`` counts the records the
    worker could not hand over since its last message and ``timings`` are its GetObject
    timings since then (see :meth:`s3proxy.origin.Origin.take_timings`). :mod:`marshal` (C
    both ways, and private to two processes of one interpreter): ~0.3 µs a record to write
    and ~0.5 µs to read, where JSON lines took ~1 µs and ~2 µs."""
    return marshal.dumps((dropped, rows, list(timings)))


def unbatch(message: bytes) -> tuple[int, list[RequestRecord], list[Timing]]:
    """The worker's ``dropped`` count, records and timings from a :func:`batch` message;
    raises :class:`ValueError`, :class:`EOFError` or :class:`TypeError` on anything else."""
    dropped, rows, timings = marshal.loads(message)
    return (
        int(dropped),
        [RequestRecord(*r) for r in rows],
        [(str(outcome), float(seconds)) for outcome, seconds in timings],
    )


def stats_path(cache_dir: str, pid: int) -> Path:
    return Path(cache_dir) / f"sinks-{pid}.json"


class SinkClient:
    """The worker's end: a :class:`~s3proxy.record.Recorder` that never blocks."""

    def __init__(
        self,
        config: SinksConfig,
        logs: LogsConfig,
        cache_dir: str,
        timings: Callable[[], list[Timing]] | None = None,
    ) -> None:
        """The child writes its stats (and Prometheus files) under ``cache_dir``. ``timings``,
        if given, is called at each hand-over for the S3 timings to send."""
        self.config = config
        self.logs = logs
        self.cache_dir = cache_dir
        self._timings = timings
        self.sent = self.dropped = 0
        self._rows: list[Row] = []
        self._size = 0
        self._unreported_drops = 0
        self._sock: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def emit(self, record: RequestRecord) -> None:
        self._rows.append(row(record))
        # An upper bound of the marshalled size: the resource and type are the long fields.
        self._size += len(record.resource) + len(record.mime_type) + 96
        if self._size >= BATCH_BYTES:
            self._flush()

    def start(self) -> None:
        """Spawn the child (once, at startup, in the running event loop)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        ours.setblocking(False)
        settings = {"sinks": asdict(self.config), "logs": asdict(self.logs), "dir": self.cache_dir}
        env = {**os.environ, CONFIG_ENV: json.dumps(settings)}
        if self.config.prometheus:
            from s3proxy.sinks.prometheus import MULTIPROC_ENV, multiprocess_dir

            env[MULTIPROC_ENV] = multiprocess_dir(self.cache_dir)
            os.makedirs(env[MULTIPROC_ENV], exist_ok=True)
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "s3proxy.sinks.process", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._sock = ours
        self._task = asyncio.create_task(self._flush_periodically(), name="sinks:flush")

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self._flush()

    def _flush(self) -> None:
        rows, self._rows, self._size = self._rows, [], 0
        timings = self._timings() if self._timings is not None else []
        if (not rows and not timings and not self._unreported_drops) or self._sock is None:
            return
        try:
            self._sock.send(batch(self._unreported_drops, rows, timings))
        except (BlockingIOError, OSError):  # the child is behind (or gone): drop, count
            self.dropped += len(rows)
            self._unreported_drops += len(rows)
            return
        self.sent += len(rows)
        self._unreported_drops = 0

    async def close(self, grace: float = 3.0) -> None:
        """Send what is left, let the child drain its sinks, then stop it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._flush()
        if self._sock is not None:
            self._sock.close()  # the child sees end of file
            self._sock = None
        child = self._child
        if child is not None:
            try:
                await asyncio.to_thread(child.wait, grace)
            except subprocess.TimeoutExpired:
                child.kill()
                await asyncio.to_thread(child.wait)
        with contextlib.suppress(OSError):
            stats_path(self.cache_dir, os.getpid()).unlink()

    def stats(self) -> dict[str, Any]:
        """This worker's counts and the child's (from the file it rewrites every second)."""
        child: dict[str, Any] = {}
        if self._child is not None:
            with contextlib.suppress(OSError, ValueError):
                child = json.loads(stats_path(self.cache_dir, os.getpid()).read_text())
        return {"worker": {"sent": self.sent, "dropped": self.dropped}, **child}


# -- the child ---------------------------------------------------------------------------------


async def _serve(sock: socket.socket, config: SinksConfig, cache_dir: str) -> None:
    from s3proxy.sinks.factory import build_sinks
    from s3proxy.sinks.prometheus import count_sink_drop, observe_origin

    sinks = build_sinks(config)
    if sinks is None:
        return
    await sinks.start()
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    parent = os.getppid()
    received = malformed = 0

    def readable() -> None:
        nonlocal received, malformed
        for _ in range(64):  # a bounded burst, then let the sinks run
            try:
                data = sock.recv(RECV_BYTES)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                if not done.done():
                    done.set_result(None)
                return
            try:
                dropped, records, timings = unbatch(data)
            except (ValueError, EOFError, TypeError):
                malformed += 1
                continue
            if dropped and config.prometheus:
                count_sink_drop("worker", dropped)
            if timings and config.prometheus:
                observe_origin(timings)
            received += len(records)
            sinks.emit_many(records)

    sock.setblocking(False)
    loop.add_reader(sock.fileno(), readable)
    path = stats_path(cache_dir, parent)
    try:
        while not done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 1.0)
            if os.getppid() != parent:  # the worker died without closing: stop too
                break
            with contextlib.suppress(OSError):
                tmp = path.with_suffix(".tmp")
                counts = {"received": received, "malformed": malformed, "sinks": sinks.stats()}
                tmp.write_text(json.dumps(counts))
                os.replace(tmp, path)
    finally:
        loop.remove_reader(sock.fileno())
        await sinks.close()


def lower_priority() -> None:
    """Run only on CPU the workers leave idle: SCHED_IDLE where Linux offers it (below any
    nice value), else nice :data:`CHILD_NICE`. A saturated machine then drops records (counted)
    rather than serving slower."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICE)


def reserve_cpus(sink_cpus: tuple[int, ...]) -> None:
    """Keep this process, and the workers and threads it starts from now on, off
    ``sink_cpus``, which the sink processes get (:func:`place`): a sink process then never
    takes a worker's core, its caches or its wakeups. When the sink CPUs are all the CPUs
    there are, the workers keep them all."""
    usable = os.sched_getaffinity(0)
    workers = usable - set(sink_cpus)
    if workers:
        os.sched_setaffinity(0, workers)
    _logger.info("cpus_reserved", workers=sorted(workers or usable), sinks=list(sink_cpus))


def place(config: SinksConfig) -> str | None:
    """Run on ``--sink-cpus`` if given (see :func:`reserve_cpus`), at the lowest priority.
    First thing in the child, so that every thread it starts inherits both; returns why the
    CPUs could not be had (then it runs where the worker does), or ``None``."""
    lower_priority()
    if config.sink_cpus:
        try:
            os.sched_setaffinity(0, config.sink_cpus)
        except OSError as exc:  # a CPU went offline since startup
            return exc.strerror or str(exc)
    return None


def main(argv: list[str]) -> None:
    """``python -m s3proxy.sinks.process FD``: run the sinks for one worker."""
    settings = json.loads(os.environ[CONFIG_ENV])
    config = SinksConfig(**settings["sinks"])
    logs = LogsConfig(**settings["logs"])
    unplaced = place(config)
    log.configure_from(logs)
    if unplaced:
        _logger.warning("sink_cpus_unavailable", cpus=list(config.sink_cpus), error=unplaced)
    sock = socket.socket(fileno=int(argv[1]))
    started = time.monotonic()
    try:
        asyncio.run(_serve(sock, config, settings["dir"]))
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        _logger.info("sinks_stopped", seconds=round(time.monotonic() - started, 1))
        log.flush()


if __name__ == "__main__":
    main(sys.argv)
