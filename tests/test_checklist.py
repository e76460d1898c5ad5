"""``s3proxy check``'s checklist: S3 (endpoint, credentials, bucket), the cache dir and each
sink, against moto and real sockets; the rendering is table-tested."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from s3proxy.checklist import Item, render, run_checks
from s3proxy.config import Config
from tests.servers import free_port


@pytest.mark.parametrize(
    ("items", "text"),
    [
        pytest.param(
            [Item(True, "configuration", "valid"), Item(True, "bucket b", "readable")],
            "✓ configuration: valid\n✓ bucket b: readable\nall checks passed",
            id="all-pass",
        ),
        pytest.param(
            [Item(True, "endpoint", "x answers"), Item(False, "bucket b", "no such bucket")],
            "✓ endpoint: x answers\n✗ bucket b: no such bucket\n1 of 2 checks failed",
            id="one-fails",
        ),
    ],
)
def test_render(items: list[Item], text: str) -> None:
    """One line per item with ✓ or ✗ and its reason, then a count of failures."""
    assert render(items) == text


def _by_name(items: list[Item]) -> dict[str, Item]:
    return {item.name.split(" ")[0]: item for item in items}


def test_a_good_bucket_passes_every_check(base_config: Config, put: Callable[..., None]) -> None:
    """Endpoint, credentials, bucket and cache dir all pass for the test's bucket."""
    put("index.html", b"home")
    items = run_checks(base_config)
    assert all(item.ok for item in items), render(items)
    assert [item.name for item in items] == [
        "configuration",
        "endpoint",
        "credentials",
        f"bucket {base_config.origin.bucket}",
        f"cache dir {base_config.cache.cache_dir}",
    ]


def test_a_wrong_bucket_fails_its_line_only(base_config: Config) -> None:
    """A missing bucket is ✗ with its reason; the endpoint and the cache still pass."""
    items = _by_name(run_checks(base_config.replace(bucket="no-such-bucket-here")))
    assert not items["bucket"].ok
    assert items["bucket"].reason.startswith("no such bucket: no-such-bucket-here")
    assert items["endpoint"].ok and items["cache"].ok


def test_an_unreachable_endpoint_leaves_the_rest_unchecked(base_config: Config) -> None:
    """Nothing listening: the endpoint fails, credentials and bucket could not be checked."""
    config = base_config.replace(endpoint_url=f"http://127.0.0.1:{free_port()}")
    items = _by_name(run_checks(config))
    assert items["endpoint"].reason.startswith("endpoint unreachable")
    assert items["credentials"] == Item(False, "credentials", "not checked: fix the endpoint first")
    assert not items["bucket"].ok


def test_a_cache_bound_larger_than_the_disk_fails(base_config: Config) -> None:
    """--cache-max-size beyond the disk's free space is ✗: the disk would fill first."""
    items = _by_name(run_checks(base_config.replace(cache_max_size=1 << 59)))
    assert not items["cache"].ok
    assert "less than --cache-max-size" in items["cache"].reason


def test_an_unwritable_cache_dir_fails(base_config: Config) -> None:
    """A cache dir under a file cannot be made: ✗ with the reason."""
    blocker = f"{base_config.cache.cache_dir}-file"
    with open(blocker, "w"):
        pass
    items = _by_name(run_checks(base_config.replace(cache_dir=f"{blocker}/cache")))
    assert not items["cache"].ok


def test_each_sink_is_checked_for_reachability(base_config: Config) -> None:
    """A sink whose server listens is ✓; one whose port is closed is ✗ saying so."""
    with socket.create_server(("127.0.0.1", 0)) as akumuli:
        config = base_config.replace(
            akumuli_host="127.0.0.1",
            akumuli_port=akumuli.getsockname()[1],
            ilp_host="127.0.0.1",
            ilp_port=free_port(),
        )
        sinks = {item.name: item for item in run_checks(config) if item.name.startswith("sink")}
    assert sinks["sink akumuli"] == Item(True, "sink akumuli", "reachable")
    assert sinks["sink ilp"] == Item(False, "sink ilp", "connection refused")
