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
    """What an instance does with an event, given what it has applied (:func:`step`)."""

    SKIP = "skip"  # applied already (by a sibling worker, or before a restart)
    APPLY = "apply"  # the next one: apply it
    CLEAR = "clear"  # versions were skipped (a trimmed stream) or a new epoch: clear, apply
    ROLLBACK = "rollback"  # a version not after ours, later in the stream: Redis went back


def step(known: Known, epoch: str, version: int, id_: str) -> Step:
    """The decision for the event at stream id ``id_``, version ``version`` of ``epoch``.

    Versions order events within an epoch and prove gaps; the stream id tells an event this
    instance has seen (at or before ``known.last_id``: a sibling worker applied it) from one
    it has not. An unseen event whose version is not after the last applied one proves that
    Redis went back to an older copy of its data (a restored snapshot or backup, a failover
    to a lagging replica): versions are being taken again, for other events."""
    unseen = stream_order(id_) > stream_order(known.last_id)
    if epoch != known.epoch:  # seen: an older epoch's entry, left in the stream by a rollback
        return Step.CLEAR if unseen else Step.SKIP
    if version <= known.version:
        return Step.ROLLBACK if unseen else Step.SKIP
    return Step.APPLY if version == known.version + 1 else Step.CLEAR


def stream_order(id_: str) -> tuple[int, int]:
    """A stream id (``<ms>-<seq>``) as the pair Redis orders it by."""
    ms, _, seq = id_.partition("-")
    return int(ms), int(seq or 0)


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
