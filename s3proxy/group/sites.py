"""Runtime site registrations shared by a group (issue 15, "sites everywhere"): Redis holds
the one set every instance serves, each instance's ``<cache-dir>/registry/sites.json`` is its
copy (what it serves from when it starts with Redis away).

Why it converges: Redis's set changes only in :meth:`~s3proxy.group.bus.Bus.change_site`'s
script, which stamps it (``<epoch>:<version>``, the version of the event it appends in the
same step), and only if the set is still as of the stamp the change was checked against, so
every change is checked against the whole set before it. A copy is replaced only by a newer
stamp (:func:`s3proxy.registry.newer`), and every worker refreshes its instance's copy from
the whole set (not from the event's body) when it joins, reconnects, reads a site event, or
has missed events (a gap or a new epoch): after the last change's event is read, every copy
is that set. Redis wins over an older copy, as it is the only set all instances agree on; a
copy from an instance that was away may hold sites deleted meanwhile.

A Redis with no set stored yet (a new group, or one that lost its data) is given the first
joining instance's copy, so turning ``--redis-url`` on, or a Redis restarted empty, keeps the
registrations. A Redis restored from an older copy is different: its set is a state the group
agreed on, so the instance that finds the rollback stamps it in a new epoch (in
:meth:`~s3proxy.group.bus.Bus.head`) and every copy, newer by version but of the old epoch,
takes it; sites registered after the copy was made disappear everywhere.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from s3proxy.exceptions import GroupUnavailable
from s3proxy.group.member import SITE_DELETE, SITE_PUT

if TYPE_CHECKING:
    from s3proxy.group.member import Group
    from s3proxy.registry import Registry


class SharedSites:
    """The :class:`~s3proxy.registry.Shared` of one worker: ``registry``'s sites in
    ``group``'s Redis (set as ``group.sites``, which calls :meth:`sync`)."""

    def __init__(self, group: Group, registry: Registry) -> None:
        self.group = group
        self.registry = registry

    async def commit(self, name: str, table: Any, stamp: str) -> tuple[str, Any] | None:
        group = self.group
        if not group.connected:
            raise GroupUnavailable(group.error or "not connected yet")
        kind, started = SITE_DELETE if table is None else SITE_PUT, time.monotonic()
        stored = await group.bus.change_site(kind, name, table, stamp, group.instance)
        if stored is None:
            return None
        sent, new_stamp = stored
        return new_stamp, await group.acknowledged(sent, started)

    async def sync(self) -> None:
        tables, _ = await asyncio.to_thread(self.registry.state)
        stored = await self.group.bus.registrations(seed=tables)
        if stored.stamp:  # else none stored, and this instance had none to give
            await asyncio.to_thread(self.registry.store, stored.tables, stored.stamp)
        await self.registry.serve(None)
