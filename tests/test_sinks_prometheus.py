"""The Prometheus sink: records become counters and histograms, read back by parsing the
exposition with prometheus_client's own parser; worker processes add up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from s3proxy.sinks.base import Sinks
from s3proxy.sinks.prometheus import (
    MULTIPROC_ENV,
    PrometheusSink,
    count_sink_drop,
    exposition,
    prepare_multiprocess,
)
from s3proxy.sinks.prometheus import scrape as scrape_directory
from tests.servers import ProxyServer
from tests.sink_servers import eventually, make_record, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape() -> Samples:
    body, content_type = exposition()
    assert content_type.startswith("text/plain; version=")
    return parse(body.decode())


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    if name == "s3proxy_requests_total":
        labels.setdefault("site", "")  # the records' site: none named
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_records_become_counters_and_a_latency_histogram() -> None:
    """Requests are counted by method, status and cache outcome; latency lands in the
    histogram of its cache outcome; bytes sent and fetched from S3 add up."""
    records = [
        make_record(size=1000, duration_us=300),
        make_record(size=1000, duration_us=300),
        make_record(method="HEAD", size=0, duration_us=150),
        make_record(status=404, cache="miss", size=9, duration_us=20_000, origin_bytes=0),
        make_record(cache="miss", size=5000, duration_us=80_000, origin_bytes=5000),
    ]
    before = scrape()

    async def scenario() -> None:
        sinks = Sinks([PrometheusSink()])
        await sinks.start()
        for r in records:
            sinks.emit(r)
        await eventually(lambda: sinks.stats()["prometheus"]["sent"] == 5)
        await sinks.close()

    asyncio.run(scenario())
    after = scrape()
    total = "s3proxy_requests_total"
    assert delta(after, before, total, method="GET", status="200", cache="hit") == 2
    assert delta(after, before, total, method="HEAD", status="200", cache="hit") == 1
    assert delta(after, before, total, method="GET", status="404", cache="miss") == 1
    assert delta(after, before, total, method="GET", status="200", cache="miss") == 1
    latency = "s3proxy_request_duration_seconds"
    assert delta(after, before, latency + "_count", cache="hit") == 3
    assert delta(after, before, latency + "_bucket", cache="hit", le="0.00025") == 1
    assert delta(after, before, latency + "_bucket", cache="hit", le="0.0005") == 3
    assert delta(after, before, latency + "_bucket", cache="miss", le="0.025") == 1
    assert delta(after, before, latency + "_bucket", cache="miss", le="0.1") == 2
    assert delta(after, before, latency + "_sum", cache="miss") == pytest.approx(0.1)
    assert delta(after, before, "s3proxy_sent_bytes_total", cache="hit") == 2000
    assert delta(after, before, "s3proxy_sent_bytes_total", cache="miss") == 5009
    assert delta(after, before, "s3proxy_origin_bytes_total") == 5000


def test_methods_clients_invent_are_counted_as_other() -> None:
    """A made-up method cannot create new time series."""
    before = scrape()
    asyncio.run(PrometheusSink().write([make_record(method="X-INVENTED", status=405)]))
    after = scrape()
    total = "s3proxy_requests_total"
    assert delta(after, before, total, method="other", status="405", cache="hit") == 1
    assert not any(labels and ("method", "X-INVENTED") in labels for _, labels in after)


def test_sink_drops_add_up_per_sink() -> None:
    """Sink drops add up per sink."""
    before = scrape()
    count_sink_drop("akumuli", 3)
    count_sink_drop("akumuli", 2)
    count_sink_drop("mongo", 0)
    after = scrape()
    assert delta(after, before, "s3proxy_sink_dropped_records_total", sink="akumuli") == 5
    assert delta(after, before, "s3proxy_sink_dropped_records_total", sink="mongo") == 0


def test_prepare_multiprocess_gives_an_empty_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metric files go to ``<cache_dir>/prometheus`` (or the operator's
    PROMETHEUS_MULTIPROC_DIR), emptied of a previous run's files only."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not ours")
    assert prepare_multiprocess(str(tmp_path)) == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "elsewhere"))
    assert prepare_multiprocess(str(tmp_path)).endswith("elsewhere")


_WORKER = """
import asyncio, sys, time
from s3proxy.record import RequestRecord
from s3proxy.sinks.prometheus import PrometheusSink, count_sink_drop

n, size = int(sys.argv[1]), int(sys.argv[2])
r = RequestRecord(time.time(), "GET", "/", "text/html", "127.0.0.1", size, 500, 200, cache="hit")
asyncio.run(PrometheusSink().write([r] * n))
count_sink_drop("ilp", n)
"""


def test_sink_processes_add_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each sink process writes its own metric files; a worker's scrape of the directory
    shows the sum (counters and histograms add) and the cache size it was given, and
    passes over a file another process has only just created."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    directory = prepare_multiprocess(str(tmp_path))
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        MULTIPROC_ENV: directory,
    }
    for n, size in ((3, 100), (4, 1000)):
        subprocess.run([sys.executable, "-c", _WORKER, str(n), str(size)], env=env, check=True)
    # A process's file between its creation and its sizing: not a failed scrape.
    (Path(directory) / "counter_999999.db").touch()
    body, content_type = scrape_directory(directory, 12, 34_567)
    assert content_type.startswith("text/plain")
    samples = parse(body.decode())
    labels = (("cache", "hit"), ("method", "GET"), ("site", ""), ("status", "200"))
    assert samples[("s3proxy_requests_total", labels)] == 7
    assert samples[("s3proxy_sent_bytes_total", (("cache", "hit"),))] == 3 * 100 + 4 * 1000
    assert samples[("s3proxy_request_duration_seconds_count", (("cache", "hit"),))] == 7
    assert samples[("s3proxy_sink_dropped_records_total", (("sink", "ilp"),))] == 7
    assert samples[("s3proxy_cache_entries", ())] == 12
    assert samples[("s3proxy_cache_bytes", ())] == 34_567
    assert len(list(Path(directory).glob("*.db"))) >= 2


def test_the_proxy_serves_its_metrics(
    start_proxy: Callable[..., ProxyServer], put: Callable[..., None]
) -> None:
    """Through s3proxy with ``--prometheus true``: requests show up in the scrape of
    ``/_proxy/_private/metrics`` (bearer token required), with the cache's size and the
    time of each GetObject by outcome."""
    put("index.html", b"<h1>home</h1>", ContentType="text/html")
    proxy = start_proxy(prometheus=True)
    auth = {"authorization": "Bearer test-token"}
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/_proxy/_private/metrics").status_code == 403
        before = parse(client.get("/_proxy/_private/metrics", headers=auth).text)
        assert client.get("/").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/nothing-here.html").status_code == 404

        def scraped() -> Samples:
            answer = client.get("/_proxy/_private/metrics", headers=auth)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain")
            return parse(answer.text)

        def requests(status: str) -> float:
            """GETs answered with ``status`` since ``before``, whatever the cache did."""
            after = scraped()
            return sum(
                value - before.get((name, labels), 0.0)
                for (name, labels), value in after.items()
                if name == "s3proxy_requests_total"
                and dict(labels)["method"] == "GET"
                and dict(labels)["status"] == status
            )

        wait_for(lambda: requests("200") == 2, what="two 200s in the scrape")
        wait_for(lambda: requests("404") == 1, what="one 404 in the scrape")

        def origin(outcome: str) -> float:
            return delta(
                scraped(), before, "s3proxy_origin_duration_seconds_count", outcome=outcome
            )

        # One GetObject each for the miss and the 404 (a name with an extension: no folder
        # to look for); the hit asked S3 nothing.
        wait_for(lambda: origin("ok") == 1, what="one timed GetObject")
        wait_for(lambda: origin("not_found") == 1, what="one timed 404 from S3")
        after = scraped()
    assert after[("s3proxy_cache_entries", ())] >= 1
    assert after[("s3proxy_cache_bytes", ())] >= 13
    took = delta(after, before, "s3proxy_origin_duration_seconds_sum", outcome="ok")
    assert 0 < took < 10
