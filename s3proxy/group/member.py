"""One worker's part in the group: it follows the stream and applies what other instances
published, publishes what this instance purged, and keeps it while Redis is away (the design
is in :mod:`s3proxy.group`'s docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from s3proxy import logging as log
from s3proxy.cache import Cache
from s3proxy.config import GroupConfig
from s3proxy.exceptions import GroupUnavailable, S3ProxyError
from s3proxy.group.bus import Bus, Event, Head, Published
from s3proxy.group.state import InstanceState, Step, step

if TYPE_CHECKING:
    from s3proxy.group.sites import SharedSites

#: Event types. A site event says registrations changed (:mod:`s3proxy.group.sites`).
INVALIDATE, SITE_PUT, SITE_DELETE = "invalidate", "site_put", "site_delete"
#: Seconds Redis may be away before the instance clears its cache on its return.
OUTAGE_GRACE = 5.0
#: Seconds a publisher waits for the other instances' acknowledgements.
ACK_WAIT = 1.0
#: Seconds each read waits for an event (also how soon a silent Redis is noticed).
BLOCK = 1.0
#: Seconds between heartbeats (so readiness shows a joining member within a second).
HEARTBEAT = 1.0
#: Seconds before the first reconnection attempt, doubling to the second.
RETRY = (0.1, 2.0)
#: Purge operations kept while Redis is away; beyond this, one clear is sent instead.
UNSENT_LIMIT = 1000
#: Why an instance clears on finding another epoch than its own.
NEW_EPOCH = "redis lost its data or went back to an older copy (a new epoch)"

_logger = log.get_logger("s3proxy.group")
#: A cache operation: ("clear", ""), ("key", key) or ("prefix", prefix).
Operation = tuple[str, str]


def invalidate(cache: Cache, operations: list[Operation]) -> None:
    """Run ``operations`` on ``cache`` (blocking). A clear makes the rest moot."""
    if any(kind == "clear" for kind, _ in operations):
        cache.clear()
        return
    for kind, value in operations:
        cache.purge(**{kind: value})


class Group:
    """Create, :meth:`start` (it returns at once: Redis is reached in the background),
    :meth:`close`."""

    def __init__(self, part: GroupConfig, cache: Cache, bucket: str) -> None:
        assert part.redis_url is not None, "no group without --redis-url"
        self.cache = cache
        self.grace = OUTAGE_GRACE
        self.bus = Bus(part.redis_url, part.redis_password, f"s3proxy:{bucket}:")
        self.state = InstanceState(str(cache.root))
        self.instance = ""
        #: This worker's view: Redis answers, the live members, the last version applied.
        self.connected = False
        self.members = 0
        self.epoch: str | None = None
        self.version = 0
        self.error: str | None = None
        #: The first join is over (joined, or Redis did not answer): until then readiness
        #: waits, so a new instance takes no traffic before it has Redis's sites and purges.
        self.settled = False
        self._handlers: dict[str, Callable[[Any], None]] = {
            INVALIDATE: lambda body: invalidate(cache, [(k, v) for k, v in body]),
            # Each worker refreshes the whole set on reading one (see _read_from).
            SITE_PUT: _nothing,
            SITE_DELETE: _nothing,
        }
        #: Runtime sites (``None``: no ``--config``), refreshed on joining and site events.
        self.sites: SharedSites | None = None
        self._resync = False  # events were missed: refresh the sites with the next event
        #: An epoch in which this worker saw Redis rolled back: the next join renames it.
        self._suspect = ""
        self._unsent: list[Operation] = []
        self._task: asyncio.Task[None] | None = None

    def on(self, type_: str, handler: Callable[[Any], None]) -> None:
        """Apply events of ``type_`` with ``handler(body)`` (blocking; run in a thread, under
        the instance's lock, once per instance, in version order)."""
        self._handlers[type_] = handler

    async def start(self) -> None:
        known = await asyncio.to_thread(self.state.read)
        self.instance, self.version = known.instance, known.version
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connected:
            with contextlib.suppress(GroupUnavailable):
                await self.bus.leave(self.instance)
        await self.bus.close()

    def status(self) -> dict[str, Any]:
        """For ``/_proxy/ready``'s details: this worker's view, from memory."""
        status: dict[str, Any] = {
            "redis": "connected" if self.connected else "unreachable",
            "instance": self.instance,
            "instances": self.members,
            "version": self.version,
        }
        if not self.connected:
            status["error"] = self.error
            status["unsent"] = len(self._unsent)
        return status

    # -- publishing -------------------------------------------------------------------------

    async def invalidated(self, operations: list[Operation]) -> dict[str, Any]:
        """Tell the group about cache operations this instance has just applied (for the
        management answer, see :meth:`publish`); with Redis away, keep them to send on its
        return."""
        try:
            return await self.publish(INVALIDATE, operations)
        except GroupUnavailable:
            self._keep(operations)
            return {"redis": "unreachable", "applied": "here only; sent when Redis is back"}

    async def publish(self, type_: str, body: Any) -> dict[str, Any]:
        """Publish an event of ``type_`` that this instance has applied itself (the seam for
        runtime sites: ``site_put``/``site_delete``). Returns its version, the live members,
        how many acknowledged within :data:`ACK_WAIT` and the seconds from publishing to the
        last acknowledgement (or to giving up). Raises :class:`GroupUnavailable`."""
        if not self.connected:
            raise GroupUnavailable(self.error or "not connected yet")
        started = time.monotonic()
        try:
            sent = await self.bus.publish(type_, body, self.instance)
        except GroupUnavailable as exc:
            self.error = str(exc)
            raise
        return await self.acknowledged(sent, started)

    async def acknowledged(self, sent: Published, started: float) -> dict[str, Any]:
        """What :meth:`publish` answers for event ``sent``, published since ``started``
        (:func:`time.monotonic`), once the members acknowledged it or :data:`ACK_WAIT`
        passed."""
        try:
            acknowledged = await self.bus.acks(sent.id, sent.members, ACK_WAIT)
        except GroupUnavailable:
            acknowledged = 0
        return {
            "version": sent.version,
            "instances": sent.members,
            "acknowledged": acknowledged,
            "seconds": round(time.monotonic() - started, 4),
        }

    def _keep(self, operations: list[Operation]) -> None:
        self._unsent += operations
        if len(self._unsent) > UNSENT_LIMIT:
            self._unsent[:] = [("clear", "")]

    async def _send_unsent(self) -> None:
        """Publish what was purged here while Redis was away; if that fails, it stays kept
        for the next return (purges kept meanwhile are sent then too)."""
        operations = list(self._unsent)
        if operations:
            await self.bus.publish(INVALIDATE, operations, self.instance)
            if self._unsent[: len(operations)] == operations:  # else replaced by one clear
                del self._unsent[: len(operations)]
            _logger.info("group_unsent_published", operations=len(operations))

    # -- following --------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Join, read and apply events until cancelled; reconnect after failures."""
        delay = RETRY[0]
        while True:
            try:
                cursor = await self._join()
                self.settled, delay = True, RETRY[0]
                await self._read_from(cursor)
                continue  # Redis changed under us (lost or rolled back): join again
            except GroupUnavailable as exc:
                error = str(exc)
            except S3ProxyError as exc:  # group.json cannot be written: follow again later
                error = str(exc)
                _logger.error("group_state_failed", error=error)
            self.connected, self.error, self.settled = False, error, True
            with contextlib.suppress(S3ProxyError):
                await asyncio.to_thread(self._went_down, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY[1])

    async def _join(self) -> str:
        known = await asyncio.to_thread(self.state.read)
        head = await self.bus.head(known.epoch, known.version, known.last_id, self._suspect)
        self._suspect = ""
        cursor = await asyncio.to_thread(self._reconcile, head)
        self.members = (await self.bus.heartbeat(self.instance)).members
        self.connected, self.error = True, None
        await self._send_unsent()
        await self._sync_sites()
        return cursor

    async def _read_from(self, cursor: str) -> None:
        """Apply events from ``cursor`` on; returns when Redis is found to have lost its
        data or gone back to an older copy of it (by an event, or by the heartbeat's
        epoch and version, so also with no event coming), for the caller to join again."""
        beat = time.monotonic()
        while True:
            for event in await self.bus.read(cursor, BLOCK):
                what = await asyncio.to_thread(self._apply, event)
                if what is Step.ROLLBACK:
                    self._suspect = event.epoch
                    return
                if event.type in (SITE_PUT, SITE_DELETE) or self._resync:
                    await self._sync_sites()  # served here before it is acknowledged
                if what is not Step.SKIP:
                    await self.bus.ack(event.id, self.instance)
                cursor = event.id
            if self._unsent:  # a purge whose publishing failed while Redis answered us
                await self._send_unsent()
            if time.monotonic() - beat >= HEARTBEAT:
                now = await self.bus.heartbeat(self.instance)
                self.members, beat = now.members, time.monotonic()
                if now.epoch != self.epoch or now.version < self.version:
                    return

    async def _sync_sites(self) -> None:
        """Refresh and serve the runtime sites. Redis's failure goes to the caller (and the
        next join refreshes); the registry's is logged: it never stops the following."""
        if self.sites is None:
            return
        self._resync = False
        try:
            await self.sites.sync()
        except GroupUnavailable:
            self._resync = True
            raise
        except (S3ProxyError, OSError, ValueError) as exc:  # ValueError: junk JSON in Redis
            _logger.error("group_sites_failed", error=str(exc))

    # -- under the instance's lock (blocking, in a thread) ----------------------------------

    def _went_down(self, error: str) -> None:
        with self.state.locked() as known:
            if known.down_since is None:  # the first worker to notice logs, once
                known.down_since = time.time()
                _logger.warning("redis_unreachable", error=error)

    def _reconcile(self, head: Head) -> str:
        """On (re)connection: clear if Redis lost its data, went back to an older copy of it
        or was away too long; the stream id to read on from."""
        with self.state.locked() as known:
            reason = None
            if known.epoch is None:
                pass  # a new instance: its cache has seen nothing to catch up on
            elif known.epoch != head.epoch and head.rolled_back:
                reason = f"rollback: redis went back to version {head.version}"
                reason += f" after this instance applied {known.version}"
            elif known.epoch != head.epoch:
                reason = NEW_EPOCH
            elif known.down_since is not None and time.time() - known.down_since > self.grace:
                reason = f"redis was away more than {self.grace:g} s"
            if reason is not None:
                self._clear(reason)
            if reason is not None or known.epoch is None:
                known.epoch, known.version, known.last_id = head.epoch, head.version, head.last_id
            if known.down_since is not None:
                away = round(time.time() - known.down_since, 3)
                _logger.info("redis_reconnected", away=away, cleared=reason is not None)
                known.down_since = None
            self.epoch, self.version = known.epoch, known.version
            return known.last_id

    def _apply(self, event: Event) -> Step:
        """Apply ``event`` if this instance has not (then it acknowledges); what it did.
        :attr:`Step.ROLLBACK`: nothing (the caller joins again, and that clears)."""
        with self.state.locked() as known:
            what = step(known, event.epoch, event.version, event.id)
            if what in (Step.SKIP, Step.ROLLBACK):  # SKIP: a sibling applied it
                self.epoch, self.version = known.epoch, known.version
                return what
            if what is Step.CLEAR and event.epoch != known.epoch:
                self._clear(NEW_EPOCH)
            elif what is Step.CLEAR:
                self._clear(f"missed events before version {event.version}")
            if event.origin != known.instance:  # the origin applied it before publishing
                self._run(event)
            known.epoch, known.version, known.last_id = event.epoch, event.version, event.id
            self.epoch, self.version = event.epoch, event.version
            return what

    def _run(self, event: Event) -> None:
        handler = self._handlers.get(event.type)
        if handler is None:
            _logger.warning("group_event_unknown", type=event.type, version=event.version)
            return
        try:
            handler(event.body)
        except S3ProxyError as exc:
            _logger.error("group_event_failed", type=event.type, error=str(exc))
            return
        _logger.info(
            "group_event_applied", type=event.type, version=event.version, origin=event.origin
        )

    def _clear(self, reason: str) -> None:
        self._resync = True  # what was missed may have changed sites too
        summary = self.cache.clear()
        _logger.warning("group_cache_cleared", reason=reason, instance=self.instance, **summary)


def _nothing(body: Any) -> None:
    del body
