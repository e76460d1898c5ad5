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
import contextlib
import functools
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from s3proxy.record import RequestRecord

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client import Counter, Histogram
    from prometheus_client.metrics_core import Metric

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
    origin_latency: Histogram
    sink_dropped: Counter


@functools.cache
def _metrics() -> _Metrics:
    """This process's metrics, registered once in prometheus_client's default registry."""
    from prometheus_client import Counter, Histogram

    return _Metrics(
        requests=Counter(
            "s3proxy_requests", "Requests answered.", ["method", "status", "cache", "site"]
        ),
        latency=Histogram(
            "s3proxy_request_duration_seconds",
            "Time from the request to the last byte of the answer.",
            ["cache"],
            buckets=LATENCY_BUCKETS,
        ),
        sent_bytes=Counter("s3proxy_sent_bytes", "Body bytes sent to clients.", ["cache"]),
        origin_bytes=Counter("s3proxy_origin_bytes", "Body bytes fetched from S3."),
        origin_latency=Histogram(
            "s3proxy_origin_duration_seconds",
            "Time from a GetObject to S3's response headers, retries included.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
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
        """Count ``records`` in: one counter update per metric and label set of the batch
        (each is a locked write to a memory-mapped file in multiprocess mode), one histogram
        observation per record."""
        metrics = _metrics()
        groups: dict[tuple[str, int, str, str], list[RequestRecord]] = collections.defaultdict(list)
        for record in records:
            groups[record.method, record.status, record.cache, record.site].append(record)
        sent: collections.Counter[str] = collections.Counter()
        durations: dict[str, list[float]] = collections.defaultdict(list)
        origin = 0
        for (method, status, cache, site), group in groups.items():
            method = method if method in METHODS else "other"
            metrics.requests.labels(method, str(status), cache, site).inc(len(group))
            sent[cache] += sum([r.size for r in group])
            origin += sum([r.origin_bytes for r in group])
            durations[cache] += [r.duration_us / 1_000_000 for r in group]
        for cache, size in sent.items():
            metrics.sent_bytes.labels(cache).inc(size)
        for cache, amounts in durations.items():
            observe_all(metrics.latency.labels(cache), amounts)
        if origin:
            metrics.origin_bytes.inc(origin)

    async def close(self) -> None:
        pass


def observe_all(histogram: Histogram, amounts: list[float]) -> None:
    """``histogram.observe`` each amount: prometheus_client's public API, though it has no
    bulk form. In multiprocess mode each observation is two locked writes to a memory-mapped
    file (the sum and one bucket); measured ~1.5 µs a record in the sink process, which
    only runs on CPU the workers leave idle."""
    observe = histogram.observe
    for amount in amounts:
        observe(amount)


def observe_origin(timings: list[tuple[str, float]]) -> None:
    """Add the workers' GetObject timings (``(outcome, seconds)``) to the origin histogram."""
    groups: dict[str, list[float]] = collections.defaultdict(list)
    for outcome, seconds in timings:
        groups[outcome].append(seconds)
    histogram = _metrics().origin_latency
    for outcome, amounts in groups.items():
        observe_all(histogram.labels(outcome), amounts)


def count_sink_drop(sink: str, n: int) -> None:
    """Add ``n`` records dropped by ``sink`` (its queue was full, or a write failed)."""
    if n > 0:
        _metrics().sink_dropped.labels(sink).inc(n)


def exposition() -> tuple[bytes, str]:
    """This process's metrics, or every process's when ``PROMETHEUS_MULTIPROC_DIR`` is set
    (then summed from the files), and the content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, values
    from prometheus_client import generate_latest as render

    _metrics()
    if values.ValueClass is values.MutexValue:
        return render(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    registry.register(MetricFiles(os.environ[MULTIPROC_ENV]))
    return render(registry), CONTENT_TYPE_LATEST


def multiprocess_dir(cache_dir: str) -> str:
    """Where the sink processes write their metric files: ``PROMETHEUS_MULTIPROC_DIR`` if the
    operator set it, else ``<cache_dir>/prometheus``."""
    return os.environ.get(MULTIPROC_ENV) or os.path.join(cache_dir, "prometheus")


def prepare_multiprocess(cache_dir: str) -> str:
    """Once, before any worker starts: an empty directory for the metric files, so counts
    restart with the server. Returns it (the sink processes get it in their environment)."""
    directory = Path(multiprocess_dir(cache_dir))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return str(directory)


def scrape(
    directory: str, cache_entries: int, cache_bytes: int, redis: bool | None = None
) -> tuple[bytes, str]:
    """For ``/_proxy/_private/metrics`` in a worker: the sum of every sink process's metric
    files in ``directory``, plus the disk cache's size as the worker sees it and, with
    ``--redis-url``, whether it reaches Redis (``redis``). Reads files only; the worker's own
    prometheus_client state is not used."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
    from prometheus_client import generate_latest as render
    from prometheus_client.core import GaugeMetricFamily

    class CacheSize:
        def collect(self) -> list[GaugeMetricFamily]:
            gauges = [
                GaugeMetricFamily(
                    "s3proxy_cache_entries", "Objects in the disk cache.", cache_entries
                ),
                GaugeMetricFamily("s3proxy_cache_bytes", "Bytes in the disk cache.", cache_bytes),
            ]
            if redis is not None:
                help_ = "1 if this instance reaches the group's Redis (--redis-url), else 0."
                gauges.append(GaugeMetricFamily("s3proxy_redis_connected", help_, int(redis)))
            return gauges

    registry = CollectorRegistry()
    registry.register(MetricFiles(directory))
    registry.register(CacheSize())
    return render(registry), CONTENT_TYPE_LATEST


class MetricFiles:
    """prometheus_client's sum of the metric files in ``directory`` (what its
    ``MultiProcessCollector`` collects), without the files a process has created and not
    yet sized: prometheus_client takes an empty one for a corrupt one and fails the whole
    scrape (client_python#1199), for good if the process died in that moment."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            with contextlib.suppress(OSError):  # gone since
                if os.path.getsize(path) > 0:
                    files.append(path)
        metrics: Iterable[Metric] = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
        return metrics
