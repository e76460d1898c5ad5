"""A group of instances behind one load balancer, made one by Redis (``--redis-url``).

Imported only when ``--redis-url`` is set: without it nothing here runs or is loaded, and the
hit path never touches it in any case (a purge reaches every worker's memory through the
cache's shared generation, as a local purge always has).

What travels: a clear or purge, after the instance that received it has applied it, as an
``invalidate`` event whose body is the cache operations it ran (``[["clear", ""]]``,
``[["key", k]]``, ``[["prefix", p]]``, one per site purged): every instance applies the same
operations to its own cache. ``site_put`` and ``site_delete`` say that a runtime site
registration changed (the set itself lives in Redis beside the stream; :mod:`.sites` says
why every instance converges on it). An instance acknowledges and skips an event type it
does not know (logged), so a newer instance's events never stall an older one.

Why a Redis stream, and not pub/sub: pub/sub forgets what it sent while an instance was away,
so a reconnecting instance could not tell what it missed. A stream keeps its entries (about
:data:`~s3proxy.group.bus.STREAM_LENGTH`): an instance reads on from the last id it applied
(``XREAD`` of one connection per worker, blocking a second at a time) and so applies each
event once and in order, after an outage too. Each event carries a version from ``INCR``,
taken with the entry by one script: a version more than one past the last applied proves a
gap (the stream was trimmed past us), and an ``epoch`` (a random name set once per Redis data
set) proves that Redis lost its data and started counting again. Either way the instance
cannot know what it missed and clears its cache, once: never a stale page kept for good.

Redis restored from an older copy (a snapshot, a backup, an AOF rewind, a lagging replica
promoted) keeps its epoch but counts from an older version, so versions are taken again for
new events. An instance proves it when Redis's version is below the one it applied (at its
join, or by its heartbeat, so with no event coming too), or when it reads an entry it has not
seen (after its last stream id) whose version is not after its own (:func:`.state.step`).
Then it renames the epoch, in the same script that checks, only if it is still the one seen
(:meth:`.bus.Bus.head`): a rollback becomes what a lost data set is, every instance clears
once whenever it looks, the first to rename included, and none renames twice. The renaming
also stamps the registrations in the new epoch, so every copy takes Redis's set (see
:mod:`.sites`). The heartbeat also notices a ``FLUSHALL`` (no epoch) with no event coming.

Acknowledgements: the instance that applies an event pushes its id onto a list that lives 60 s;
the publisher pops from it (``BLPOP``) until every live member (a heartbeat in the last 10 s,
in a sorted set) has answered or one second has passed, and says how many did.

Workers: every worker follows the stream; ``<cache-dir>/group.json`` under an ``flock``
(:mod:`.state`) says which version the instance has applied, so the first worker to read an
event applies it for all and the others skip it. The instance id lives in that file too, so an
instance restarted on its old disk catches up on what it missed while stopped.

Redis down: serving does not depend on it at all. A purge applies locally, is kept in the
worker's memory (at most :data:`~s3proxy.group.member.UNSENT_LIMIT` operations, beyond that
one clear) and published when Redis answers again, for the others. The outage is logged once
per instance (the worker that marks ``down_since`` in the state file logs it), shown by
``/_proxy/ready``'s ``group`` details and the ``s3proxy_redis_connected`` gauge. An instance
whose Redis was away longer than :data:`~s3proxy.group.member.OUTAGE_GRACE` seconds clears
its cache when it is back: another instance may have purged locally meanwhile and died with
its unsent purges.
"""

from s3proxy.group.member import Group

__all__ = ["Group"]
