"""The default worker count: the CPUs this process may use (affinity, cgroup v1/v2 quotas),
not the host's count. Parsing is table-tested; the CLI is run under ``taskset``."""

from __future__ import annotations

import os
import shutil

import pytest

from s3proxy.cpus import (
    Mount,
    parse_cgroups,
    parse_mounts,
    quota_dirs,
    quota_v1,
    quota_v2,
    usable_cpus,
    worker_count,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        pytest.param("max 100000\n", None, id="unlimited"),
        pytest.param("200000 100000\n", 2.0, id="two-cpus"),
        pytest.param("150000 100000", 1.5, id="one-and-a-half"),
        pytest.param("50000 100000", 0.5, id="half"),
        pytest.param("", None, id="empty"),
        pytest.param("garbage", None, id="garbage"),
        pytest.param("100000 0", None, id="zero-period"),
    ],
)
def test_quota_v2(text: str, cpus: float | None) -> None:
    """cgroup v2 cpu.max: "<quota> <period>" or "max"."""
    assert quota_v2(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [
        pytest.param("-1\n", "100000\n", None, id="unlimited"),
        pytest.param("300000\n", "100000\n", 3.0, id="three-cpus"),
        pytest.param("25000", "100000", 0.25, id="quarter"),
        pytest.param("", "", None, id="missing-files"),
    ],
)
def test_quota_v1(quota: str, period: str, cpus: float | None) -> None:
    """cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us; -1 is no limit."""
    assert quota_v1(quota, period) == cpus


# This very machine: hybrid v1 + v2 (the unified hierarchy mounted beside the v1 ones).
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A Docker container on a v2 host, with its cgroup namespace.
DOCKER_V2_MOUNTINFO = (
    "1180 1171 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec - cgroup2 cgroup rw,nsdelegate\n"
    "1181 1171 0:5 / /proc rw - proc proc rw\n"
)
# A v1 container without a cgroup namespace: the mount's root is the container's cgroup.
DOCKER_V1_MOUNTINFO = (
    "700 690 0:40 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:20 - cgroup cgroup "
    "rw,cpu,cpuacct\n"
)


@pytest.mark.parametrize(
    ("mountinfo", "mounts"),
    [
        pytest.param(
            HYBRID_MOUNTINFO,
            [Mount(1, "/", "/sys/fs/cgroup/cpu"), Mount(2, "/", "/sys/fs/cgroup/unified")],
            id="hybrid",
        ),
        pytest.param(DOCKER_V2_MOUNTINFO, [Mount(2, "/", "/sys/fs/cgroup")], id="docker-v2"),
        pytest.param(
            DOCKER_V1_MOUNTINFO,
            [Mount(1, "/docker/abc", "/sys/fs/cgroup/cpu,cpuacct")],
            id="docker-v1-optional-fields",
        ),
        pytest.param("not a mountinfo line\n", [], id="garbage"),
    ],
)
def test_parse_mounts(mountinfo: str, mounts: list[Mount]) -> None:
    """cgroup2 mounts and v1 mounts with the cpu controller; other file systems ignored."""
    assert parse_mounts(mountinfo) == mounts


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        pytest.param("0::/\n", {2: "/"}, id="v2-namespace"),
        pytest.param(
            "4:memory:/x\n2:cpuacct:/\n1:cpu:/a/b\n0::/user.slice\n",
            {1: "/a/b", 2: "/user.slice"},
            id="hybrid",
        ),
        pytest.param("3:cpu,cpuacct:/docker/abc\n", {1: "/docker/abc"}, id="v1-joint"),
        pytest.param("", {}, id="empty"),
    ],
)
def test_parse_cgroups(text: str, paths: dict[int, str]) -> None:
    """The v2 path (0::) and the v1 cpu controller's path."""
    assert parse_cgroups(text) == paths


@pytest.mark.parametrize(
    ("mounts", "cgroups", "dirs"),
    [
        pytest.param(
            [Mount(2, "/", "/sys/fs/cgroup")],
            {2: "/"},
            [(2, "/sys/fs/cgroup")],
            id="namespace-root",
        ),
        pytest.param(
            [Mount(2, "/", "/sys/fs/cgroup")],
            {2: "/kubepods/pod1/c1"},
            [
                (2, "/sys/fs/cgroup/kubepods/pod1/c1"),
                (2, "/sys/fs/cgroup/kubepods/pod1"),
                (2, "/sys/fs/cgroup/kubepods"),
                (2, "/sys/fs/cgroup"),
            ],
            id="ancestors-deepest-first",
        ),
        pytest.param(
            [Mount(1, "/docker/abc", "/sys/fs/cgroup/cpu,cpuacct")],
            {1: "/docker/abc"},
            [(1, "/sys/fs/cgroup/cpu,cpuacct")],
            id="v1-mount-root-is-the-container",
        ),
        pytest.param(
            [Mount(2, "/docker/abc", "/sys/fs/cgroup")],
            {2: "/elsewhere"},
            [(2, "/sys/fs/cgroup")],
            id="outside-the-mount-root",
        ),
        pytest.param([Mount(1, "/", "/sys/fs/cgroup/cpu")], {2: "/"}, [], id="no-matching-path"),
    ],
)
def test_quota_dirs(
    mounts: list[Mount], cgroups: dict[int, str], dirs: list[tuple[int, str]]
) -> None:
    """Every directory whose quota bounds this process, up to the mount point."""
    assert quota_dirs(mounts, cgroups) == dirs


@pytest.mark.parametrize(
    ("affinity", "quotas", "count"),
    [
        pytest.param(8, [], 8, id="no-cgroup"),
        pytest.param(8, [None, None], 8, id="unlimited"),
        pytest.param(8, [2.0], 2, id="quota-below-affinity"),
        pytest.param(2, [4.0], 2, id="affinity-below-quota"),
        pytest.param(8, [1.5], 2, id="rounded-up"),
        pytest.param(8, [0.1], 1, id="at-least-one"),
        pytest.param(8, [None, 3.0, 6.0], 3, id="smallest-ancestor-wins"),
    ],
)
def test_worker_count(affinity: int, quotas: list[float | None], count: int) -> None:
    """The smaller of the affinity mask and the tightest quota, rounded up, never 0."""
    assert worker_count(affinity, quotas) == count


def test_usable_cpus_reads_a_container_quota() -> None:
    """The files of a v2 container limited to 1.5 CPUs (docker run --cpus 1.5) give 2, or
    fewer if this process's affinity is smaller."""
    files = {
        "/proc/self/mountinfo": DOCKER_V2_MOUNTINFO,
        "/proc/self/cgroup": "0::/\n",
        "/sys/fs/cgroup/cpu.max": "150000 100000\n",
    }
    assert usable_cpus(files.get) == min(2, len(os.sched_getaffinity(0)))


def test_usable_cpus_follows_affinity_here() -> None:
    """On this machine (no quota), the answer is the affinity mask's size."""
    assert 1 <= usable_cpus() <= len(os.sched_getaffinity(0))


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_cli_default_workers_follow_taskset() -> None:
    """Under `taskset -c 0`, the command's default worker count is 1, whatever the host has."""
    import subprocess
    import sys

    code = "from s3proxy.cpus import usable_cpus; print(usable_cpus())"
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "1"
