"""Debian's real Prometheus server (``/usr/bin/prometheus``, 2.42) scrapes s3proxy's
``/_proxy/_private/metrics`` with its bearer token, and its own query API returns the
request counts of the ``s3proxy`` command run with two workers; a job with a wrong token is
refused."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from s3proxy.sinks.prometheus import MULTIPROC_ENV
from tests.servers import ProxyProcess, S3Server, cli_args, free_port
from tests.sink_servers import server_binary, wait_for

#: Debian's package, not whatever else is on the PATH: the config below is 2.42's syntax.
PROMETHEUS = shutil.which("prometheus", path="/usr/bin")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="/usr/bin/prometheus not installed (Debian: apt-get install prometheus)",
)

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: s3proxy
    metrics_path: /_proxy/_private/metrics
    authorization:
      type: Bearer
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: wrong-token
    metrics_path: /_proxy/_private/metrics
    authorization:
      type: Bearer
      credentials: {wrong}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """``prometheus`` on a free loopback port, its TSDB and log under ``root``."""

    def __init__(self, root: Path, config: str) -> None:
        self.root, self.port = root, free_port()
        (root / "prometheus.yml").write_text(config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Prometheus]:
        assert PROMETHEUS is not None
        argv = [
            PROMETHEUS,
            f"--config.file={self.root / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        log = self.root / "prometheus.log"
        with server_binary("prometheus", argv, log, f"{self.url}/-/ready", 200, timeout=60):
            yield self

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``, after checking the call succeeded."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str, **labels: str) -> float | None:
        """The instant value of the series of ``query`` with ``labels``, or None if absent."""
        for series in self.api("query", query=query)["result"]:
            if all(series["metric"].get(k) == v for k, v in labels.items()):
                return float(series["value"][1])
        return None

    def target(self, job: str) -> dict[str, Any]:
        """The active target of ``job`` as ``/api/v1/targets`` reports it (empty before
        Prometheus has loaded it)."""
        found = [t for t in self.api("targets")["activeTargets"] if t["labels"]["job"] == job]
        assert len(found) <= 1, found
        return dict(found[0]) if found else {}


def counts_by_sink_process(directory: Path) -> dict[str, float]:
    """Requests counted so far in each sink process's own metric file (``counter_<pid>.db``)."""
    counts = {}
    for file in directory.glob("counter_*.db"):
        counts[file.stem] = sum(
            sample.value
            for family in MultiProcessCollector.merge([str(file)])  # type: ignore[no-untyped-call]
            for sample in family.samples
            if sample.name == "s3proxy_requests_total"
        )
    return {pid: n for pid, n in counts.items() if n}


def get(url: str) -> int:
    """One GET on a connection of its own, so either worker may accept it."""
    return httpx.get(url, timeout=10).status_code


def test_prometheus_scrapes_the_workers_summed_counts(
    s3: S3Server, bucket: str, put: Callable[..., None], tmp_path: Path
) -> None:
    """The real Prometheus, with the bearer token, scrapes ``s3proxy --threads 2`` and its
    query API gives exactly the 200s and 404s sent, summed over both workers' sink
    processes; the same scrape with a wrong token is refused with 403 (target down)."""
    put("index.html", b"<h1>home</h1>", ContentType="text/html")
    token, metric_files = secrets.token_urlsafe(24), tmp_path / "metrics"
    port = free_port()
    args = cli_args(s3, bucket, str(tmp_path / "cache"), port, "--threads", "2")
    args += ["--prometheus", "true", "--auth-key", token]
    proxy = ProxyProcess(args, {MULTIPROC_ENV: str(metric_files)}, port).wait_ready(timeout=60)
    try:
        # Fresh connections until both workers have answered, so the scrape must add up two
        # sink processes' files (which worker accepts a connection is the kernel's choice).
        ok = 0
        while ok < 7 or len(counts_by_sink_process(metric_files)) < 2:
            assert ok < 400, f"one worker accepted all {ok} connections"
            assert get(f"{proxy.url}/") == 200
            ok += 1
        not_found = 3
        for _ in range(not_found):
            assert get(f"{proxy.url}/nothing-here") == 404

        config = _CONFIG.format(token=token, wrong=secrets.token_urlsafe(24), port=port)
        with Prometheus(tmp_path, config).running() as prometheus:
            wait_for(
                lambda: prometheus.value("up", job="s3proxy") == 1,
                timeout=60,
                what="the s3proxy job's target up",
            )

            def sent(status: str, window: str = "") -> float | None:
                """Requests answered ``status``, now, or at most ever in the ``window``."""
                series = f's3proxy_requests_total{{status="{status}"}}'
                if window:
                    series = f"max_over_time({series}[{window}])"
                return prometheus.value(f"sum({series})")

            wait_for(lambda: sent("200") == ok, timeout=60, what=f"{ok} 200s in Prometheus")
            wait_for(lambda: sent("404") == not_found, timeout=60, what="404s in Prometheus")
            wait_for(
                lambda: prometheus.target("wrong-token").get("lastError", "") != "",
                timeout=60,
                what="a scrape by the wrong-token job",
            )
            refused = prometheus.target("wrong-token")
            assert prometheus.value("up", job="wrong-token") == 0
            assert refused["health"] == "down"
            assert "403" in refused["lastError"], refused
            # Every scrape so far (Prometheus's requests of the metrics endpoint) left the
            # counts as they were: the highest value each series ever had still adds up.
            assert sent("200", window="5m") == ok and sent("404", window="5m") == not_found
    finally:
        proxy.kill()
