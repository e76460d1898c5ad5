"""How many CPUs this process may use: the default worker count.

``os.cpu_count()`` is the host's count. A process pinned with ``taskset``/cpusets, or in a
container with a CPU quota (``docker run --cpus 2``, a Kubernetes CPU limit), may use fewer:
its affinity mask bounds it, and so does the cgroup's CPU bandwidth (cgroup v2 ``cpu.max``,
v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) of its own cgroup and of every ancestor up
to the mount point. The parsing is pure (text in, numbers out); :func:`usable_cpus` is the
only function that reads ``/proc`` and ``/sys``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mount:
    """A cgroup hierarchy's mount (one line of ``/proc/self/mountinfo``)."""

    version: int  # 1 or 2
    root: str  # the cgroup this mount shows at ``point`` (not ``/`` without a cgroup namespace)
    point: str


def quota_v2(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"200000 100000"`` -> 2.0); ``None`` for
    ``max`` (no limit) or text that is not a quota."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return _ratio(parts[0], parts[1])


def quota_v1(quota_us: str, period_us: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; ``None``
    for ``-1`` (no limit) or text that is not a quota."""
    return _ratio(quota_us.strip(), period_us.strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def parse_mounts(mountinfo: str) -> list[Mount]:
    """The cgroup2 mounts and the v1 mounts carrying the ``cpu`` controller, from the text of
    ``/proc/self/mountinfo`` (proc(5): fields, ``-``, fstype, source, super options)."""
    mounts = []
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2":
            mounts.append(Mount(2, fields[3], fields[4]))
        elif tail[0] == "cgroup" and "cpu" in tail[2].split(","):
            mounts.append(Mount(1, fields[3], fields[4]))
    return mounts


def parse_cgroups(proc_cgroup: str) -> dict[int, str]:
    """This process's cgroup path per version, from ``/proc/self/cgroup``: ``0::/path`` is
    v2's; ``N:cpu,cpuacct:/path`` is v1's ``cpu`` controller."""
    paths: dict[int, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths[2] = path
        elif "cpu" in controllers.split(","):
            paths[1] = path
    return paths


def quota_dirs(mounts: Iterable[Mount], cgroups: dict[int, str]) -> list[tuple[int, str]]:
    """(version, directory) of this process's cgroup and each ancestor up to its mount point,
    deepest first. A cgroup outside a mount's root (no cgroup namespace, a container's view)
    is looked for at the mount point itself, which then is the container's own cgroup."""
    dirs = []
    for mount in mounts:
        path = cgroups.get(mount.version)
        if path is None:
            continue
        relative = os.path.relpath(path, mount.root)
        if relative.startswith(".."):
            relative = "."
        directory = os.path.normpath(os.path.join(mount.point, relative))
        while True:
            dirs.append((mount.version, directory))
            if directory == os.path.normpath(mount.point):
                break
            directory = os.path.dirname(directory)
    return dirs


def worker_count(affinity: int, quotas: Iterable[float | None]) -> int:
    """CPUs to plan for: the affinity mask's size, lowered to the smallest cgroup quota
    rounded up (1.5 CPUs of quota can keep two workers busy half the time), at least 1."""
    limits = [math.ceil(q) for q in quotas if q is not None]
    return max(1, min([affinity, *limits]))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def usable_cpus(read: Callable[[str], str | None] = _read) -> int:
    """The number of CPUs this process may use (affinity, then cgroup CPU quotas). Reads
    ``/proc/self`` and the cgroup files; a file that cannot be read is no limit."""
    affinity = len(os.sched_getaffinity(0))
    mounts = parse_mounts(read("/proc/self/mountinfo") or "")
    cgroups = parse_cgroups(read("/proc/self/cgroup") or "")
    quotas: list[float | None] = []
    for version, directory in quota_dirs(mounts, cgroups):
        if version == 2:
            quotas.append(quota_v2(read(os.path.join(directory, "cpu.max")) or ""))
        else:
            quota = read(os.path.join(directory, "cpu.cfs_quota_us")) or ""
            period = read(os.path.join(directory, "cpu.cfs_period_us")) or ""
            quotas.append(quota_v1(quota, period))
    return worker_count(affinity, quotas)
