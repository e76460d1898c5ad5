"""Prometheus: request counters and latency histograms, for ``/_proxy/_private/metrics``.

A sink like the others, so requests only queue records; :class:`PrometheusSink` updates the
metrics a batch at a time off the request path.

With ``--threads N`` each worker process keeps its values in files of one directory
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``) and whichever worker
answers the scrape sums them all. prometheus_client chooses between in-memory and
file-backed values when it is first imported, so this module imports it only inside its
functions: after :func:`prepare_multiprocess` has set the variable in the parent process.
"""

from __future__ import annotations

import collections
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from s3proxy.config import Config
from s3proxy.record import RequestRecord

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds; from a memory hit (~100 µs) to a large object streamed from S3.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Any other method is counted as ``other``: clients choose the method, and every label
#: value is a new time series.
METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"})


@dataclass(frozen=True, slots=True)
class _Metrics:
    requests: Counter
    latency: Histogram
    sent_bytes: Counter
    origin_bytes: Counter
    cache_entries: Gauge
    cache_bytes: Gauge
    sink_dropped: Counter


@functools.cache
def _metrics() -> _Metrics:
    """This process's metrics, registered once in prometheus_client's default registry."""
    from prometheus_client import Counter, Gauge, Histogram

    return _Metrics(
        requests=Counter("s3proxy_requests", "Requests answered.", ["method", "status", "cache"]),
        latency=Histogram(
            "s3proxy_request_duration_seconds",
            "Time from the request to the last byte of the answer.",
            ["cache"],
            buckets=LATENCY_BUCKETS,
        ),
        sent_bytes=Counter("s3proxy_sent_bytes", "Body bytes sent to clients.", ["cache"]),
        origin_bytes=Counter("s3proxy_origin_bytes", "Body bytes fetched from S3."),
        # Every worker sees the same shared cache: the latest look is the answer.
        cache_entries=Gauge(
            "s3proxy_cache_entries", "Objects in the disk cache.", multiprocess_mode="mostrecent"
        ),
        cache_bytes=Gauge(
            "s3proxy_cache_bytes", "Bytes in the disk cache.", multiprocess_mode="mostrecent"
        ),
        sink_dropped=Counter(
            "s3proxy_sink_dropped_records", "Metrics records a sink dropped.", ["sink"]
        ),
    )


class PrometheusSink:
    """Counts records into the metrics; never fails (nothing to connect to)."""

    name = "prometheus"

    async def open(self) -> None:
        _metrics()

    async def write(self, records: list[RequestRecord]) -> None:
        metrics = _metrics()
        requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        sent: collections.Counter[str] = collections.Counter()
        origin = 0
        for record in records:
            method = record.method if record.method in METHODS else "other"
            requests[method, str(record.status), record.cache] += 1
            sent[record.cache] += record.size
            origin += record.origin_bytes
            metrics.latency.labels(record.cache).observe(record.duration_us / 1_000_000)
        for labels, count in requests.items():
            metrics.requests.labels(*labels).inc(count)
        for cache, size in sent.items():
            metrics.sent_bytes.labels(cache).inc(size)
        if origin:
            metrics.origin_bytes.inc(origin)

    async def close(self) -> None:
        pass


def set_cache_stats(entries: int, bytes_: int) -> None:
    """Record the disk cache's size (call before :func:`exposition`)."""
    metrics = _metrics()
    metrics.cache_entries.set(entries)
    metrics.cache_bytes.set(bytes_)


def count_sink_drop(sink: str, n: int) -> None:
    """Add ``n`` records dropped by ``sink`` (its queue was full, or a write failed)."""
    if n > 0:
        _metrics().sink_dropped.labels(sink).inc(n)


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, values
    from prometheus_client import generate_latest as render
    from prometheus_client.multiprocess import MultiProcessCollector

    _metrics()
    if values.ValueClass is values.MutexValue:
        return render(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return render(registry), CONTENT_TYPE_LATEST


def prepare_multiprocess(config: Config) -> None:
    """Once, in the parent process before the workers start: with ``--threads`` > 1 (or
    ``PROMETHEUS_MULTIPROC_DIR`` set by the operator), give the workers an empty directory
    for their metric files (``<cache_dir>/prometheus``), so counts restart with the server."""
    path = os.environ.get(MULTIPROC_ENV)
    if path is None:
        if config.threads <= 1:
            return
        path = os.path.join(config.cache_dir, "prometheus")
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
