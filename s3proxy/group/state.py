"""What one instance knows about the group, shared by its workers: ``<cache-dir>/group.json``,
read and written only under an ``flock`` of ``<cache-dir>/group.lock``.

An instance is one cache directory and the workers serving from it; the file outlives them,
so an instance restarted on the same disk knows which events its cache has seen and catches
up on the ones it missed (or clears, when it cannot tell). :func:`step` is the pure decision
for one event; :class:`InstanceState` is the blocking, locked file around it (call it from a
thread).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from s3proxy.exceptions import CacheError


@dataclass(slots=True)
class Known:
    """The group as this instance last saw it. ``epoch`` names the Redis data set the version
    counts in (a Redis that lost its data starts a new one); ``version`` is the last event
    applied, ``last_id`` its stream id; ``down_since`` the UNIX time Redis became unreachable
    (``None``: reachable, or never tried)."""

    instance: str
    epoch: str | None = None
    version: int = 0
    last_id: str = "0-0"
    down_since: float | None = None


class Step(enum.Enum):
    """What an instance does with event ``v``, given the last version it applied."""

    SKIP = "skip"  # applied already (by a sibling worker, or before a restart)
    APPLY = "apply"  # the next one: apply it
    CLEAR = "clear"  # versions were skipped (a trimmed stream): clear everything, then apply


def step(applied: int, version: int) -> Step:
    if version <= applied:
        return Step.SKIP
    return Step.APPLY if version == applied + 1 else Step.CLEAR


class InstanceState:
    """The locked ``group.json`` of one cache directory. Blocking: every method takes the
    lock and reads or writes the file. Raises :class:`CacheError` if the directory cannot
    be written."""

    def __init__(self, cache_dir: str) -> None:
        self.path = Path(cache_dir) / "group.json"
        self._lock_path = Path(cache_dir) / "group.lock"

    @contextlib.contextmanager
    def locked(self) -> Iterator[Known]:
        """The state, under the lock; changes to it are written when the block ends."""
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CacheError(f"cannot open {self._lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            known, before = self._read()
            yield known
            if asdict(known) != before:
                self._write(known)
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read(self) -> Known:
        with self.locked() as known:
            return known

    def _read(self) -> tuple[Known, dict[str, object]]:
        """The state and what the file holds (``{}`` if nothing usable: written at once)."""
        try:
            data = json.loads(self.path.read_text())
            return Known(**data), data
        except (OSError, ValueError, TypeError):
            # Absent or unreadable: a new instance, which has seen no event.
            return Known(instance=secrets.token_hex(8)), {}

    def _write(self, known: Known) -> None:
        temporary = self.path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(asdict(known)))
            os.replace(temporary, self.path)
        except OSError as exc:
            raise CacheError(f"cannot write {self.path}: {exc.strerror}") from None
