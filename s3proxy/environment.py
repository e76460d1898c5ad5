"""The checks that touch the machine, run once at startup before any worker starts (and by
anything else that wants to know whether a Config can run here): the cache and log
directories can be created and written, with room to spare; the sink CPUs exist.

Each problem is a :class:`~s3proxy.settings.SettingError` for the setting at fault, in words
an operator can act on: which directory, and why (a file is in the way, a parent is missing
and cannot be made, read-only, not this user's, no space)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from s3proxy.config import Config
from s3proxy.settings import fail

#: Free bytes below which a directory counts as full: a cache or log file could not be written.
MIN_FREE = 1024 * 1024


def check_environment(config: Config) -> None:
    """Raise :class:`SettingError` for the first setting this machine cannot honour: the cache
    dir, then the log dir (both created if missing), then the sink CPUs."""
    problem = directory_problem(config.cache.cache_dir)
    if problem:
        raise fail(config.cache, "cache_dir", problem)
    if config.logs.log_dir:
        problem = directory_problem(config.logs.log_dir)
        if problem:
            raise fail(config.logs, "log_dir", problem)
    if config.sinks.sink_cpus:
        usable = os.sched_getaffinity(0)
        missing = sorted(set(config.sinks.sink_cpus) - usable)
        if missing:
            allowed = ", ".join(map(str, sorted(usable)))
            problem = f"CPU {missing[0]} is not one this process may use ({allowed})"
            raise fail(config.sinks, "sink_cpus", problem)


def directory_problem(path: str) -> str | None:
    """Why ``path`` cannot hold s3proxy's files, in a sentence, or ``None`` when it can. The
    directory and its missing parents are created; a probe file is written and removed."""
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".probe-{os.getpid()}"
        try:
            with open(probe, "wb") as file:
                file.write(b"x")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        return _why(target, exc)
    free = shutil.disk_usage(target).free
    if free < MIN_FREE:
        return f"{target} has no space left ({free} bytes free)"
    return None


def _why(target: Path, exc: OSError) -> str:
    """Words for ``exc``, raised while making or writing into ``target``: the nearest existing
    ancestor is where the cause lies."""
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    missing = "" if existing == target else f"{target} is missing and cannot be created: "
    if not existing.is_dir():
        if existing == target:
            return f"{target} is a file, not a directory"
        return f"{missing}{existing} is a file, not a directory"
    if exc.errno == errno.EROFS:
        return f"{missing}{existing} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        info = existing.stat()
        return (
            f"{missing}{existing} is not writable by this user (uid {os.getuid()}; it belongs "
            f"to uid {info.st_uid}, mode {info.st_mode & 0o777:o})"
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{missing}{existing} has no space left"
    return f"{missing or str(target) + ': '}{exc.strerror or exc}"
