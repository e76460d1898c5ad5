"""The only module importing ``redis`` (redis-py's asyncio client): the group's keys in Redis
and the few operations on them. Every Redis or socket failure leaves as
:class:`~s3proxy.exceptions.GroupUnavailable`.

Keys, under ``s3proxy:<bucket>:`` (another bucket, or another Redis database in the URL, is
another group)::

    events      a stream of events: fields v, epoch, type, body, origin     (XADD, XREAD)
    version     the last event's version                                  (INCR)
    epoch       a random name for this Redis's data set, made by the first (SET NX)
                writer: if Redis loses its data, versions start again in a new epoch;
                made anew by the first instance that proves Redis went back to an
                older copy of its data (:meth:`Bus.head`)
    members     instance -> UNIX time of its last heartbeat               (ZADD)
    acks:<id>   the instances that applied event <id>, for 60 s           (RPUSH, BLPOP)
    sites       runtime site registrations: name -> its table as JSON      (HSET, HDEL)
    sites:stamp ``<epoch>:<version>`` of the last change to ``sites`` (absent: none stored
                in this data set yet)

The version and the stream entry are made by one script, so a version is never taken
without its event (a hole in versions would make every instance clear for nothing); a
registration, its stamp and its event likewise (:meth:`Bus.change_site`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as Broken
from redis.exceptions import RedisError

from s3proxy.exceptions import GroupUnavailable

#: Entries the stream keeps (about): an instance further behind than this clears instead.
STREAM_LENGTH = 10_000
#: Seconds after its last heartbeat that an instance is no longer counted as a member.
MEMBER_TTL = 10
#: Seconds an event's acknowledgements are kept.
ACK_TTL = 60

# Rolled back: the caller's epoch (ARGV[2]) is current but its version (ARGV[3]) is past
# Redis's, or the entry after its last stream id (ARGV[4]) has a version not after it
# (``v`` is an entry's first field), or it saw such an entry in epoch ARGV[5]. Then the
# epoch is renamed (ARGV[1]) and the registrations stamped in it, at once for everyone.
_HEAD = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local applied = tonumber(ARGV[3])
local rolled = epoch == ARGV[5] or (epoch == ARGV[2] and version < applied)
if epoch == ARGV[2] and not rolled then
    local after = redis.call('XRANGE', KEYS[3], '(' .. ARGV[4], '+', 'COUNT', 1)
    rolled = #after > 0 and tonumber(after[1][2][2]) <= applied
end
if rolled then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch)
    redis.call('SET', KEYS[4], epoch .. ':' .. version)
end
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {epoch, version, id, rolled and 1 or 0}
"""
_APPEND = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local v = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
    'v', v, 'epoch', epoch, 'type', ARGV[2], 'body', ARGV[3], 'origin', ARGV[4])
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
"""
_PUBLISH = _APPEND + "return {v, id, redis.call('ZCARD', KEYS[4])}"
# A registration changes only if sites:stamp is still the one the caller checked it against
# (ARGV[7]); else nothing is written and the answer's version is 0.
_CHANGE_SITE = (
    """
if (redis.call('GET', KEYS[6]) or '') ~= ARGV[7] then return {0, '', 0, ''} end
if ARGV[9] == '' then redis.call('HDEL', KEYS[5], ARGV[8])
else redis.call('HSET', KEYS[5], ARGV[8], ARGV[9]) end
"""
    + _APPEND
    + """
local stamp = epoch .. ':' .. v
redis.call('SET', KEYS[6], stamp)
return {v, id, redis.call('ZCARD', KEYS[4]), stamp}
"""
)
# The registrations and their stamp; if this data set has none stored yet (a new group, or a
# Redis that lost its data), the caller's own (ARGV[2..], name and JSON pairs) are stored first.
_SITES = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
if redis.call('EXISTS', KEYS[4]) == 0 and #ARGV > 1 then
    for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
    local v = redis.call('GET', KEYS[2]) or '0'
    redis.call('SET', KEYS[4], redis.call('GET', KEYS[1]) .. ':' .. v)
end
return {redis.call('GET', KEYS[4]) or '', redis.call('HGETALL', KEYS[3])}
"""
_HEARTBEAT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local version = tonumber(redis.call('GET', KEYS[3]) or '0')
return {redis.call('ZCARD', KEYS[1]), redis.call('GET', KEYS[2]) or '', version}
"""


@dataclass(frozen=True, slots=True)
class Event:
    """One stream entry. ``body`` is the type's JSON payload (see :mod:`s3proxy.group`)."""

    id: str
    version: int
    epoch: str
    type: str
    body: Any
    origin: str


@dataclass(frozen=True, slots=True)
class Head:
    """The group's newest point: its epoch, last version and last stream id; whether this
    call found Redis rolled back (and so renamed the epoch)."""

    epoch: str
    version: int
    last_id: str
    rolled_back: bool = False


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat's answer: the live members, and Redis's epoch (``""``: none, its data is
    gone) and version now."""

    members: int
    epoch: str
    version: int


@dataclass(frozen=True, slots=True)
class Published:
    version: int
    id: str
    #: Instances that sent a heartbeat in the last :data:`MEMBER_TTL` seconds.
    members: int


@dataclass(frozen=True, slots=True)
class Registrations:
    """The group's runtime sites: name -> table, as of ``stamp`` (``<epoch>:<version>``;
    ``""``: none stored yet)."""

    stamp: str
    tables: dict[str, Any]


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Redis's and the socket's errors as :class:`GroupUnavailable`."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise GroupUnavailable(str(exc) or type(exc).__name__) from exc


class Bus:
    """The group's keys in one Redis. Connections are made on first use and again after a
    failure; each call raises :class:`GroupUnavailable` when Redis cannot answer, at once
    or after ``timeout`` seconds. The one retry is on a connection found broken: after Redis
    restarts, each pooled connection fails once, closed by the server, before a new one is
    made, and a purge right after Redis's return must not fail on that. (A command is run
    twice only if its connection broke while it ran: a duplicate event is harmless.)"""

    def __init__(
        self, url: str, password: str | None, namespace: str, timeout: float = 3.0
    ) -> None:
        options: dict[str, Any] = {}
        if password is not None and urlsplit(url).password is None:
            options["password"] = password
        self._redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=min(timeout, 1.0),
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(Broken,)),
            **options,
        )
        self._keys = [namespace + name for name in ("epoch", "version", "events", "members")]
        self._acks = namespace + "acks:"
        self._sites = [namespace + "sites", namespace + "sites:stamp"]
        self._head = self._redis.register_script(_HEAD)
        self._publish = self._redis.register_script(_PUBLISH)
        self._change_site = self._redis.register_script(_CHANGE_SITE)
        self._registrations = self._redis.register_script(_SITES)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)

    async def close(self) -> None:
        await self._redis.aclose()

    async def head(self, epoch: str | None, version: int, last_id: str, suspect: str = "") -> Head:
        """The newest point, making the epoch if this Redis has none. ``epoch``, ``version``
        and ``last_id``: what the caller has applied (``None``: nothing yet); ``suspect``:
        an epoch in which the caller saw an unseen entry with a version not after its own.
        If they prove Redis went back to an older copy of its data in the epoch it still
        has, a new epoch is made (once: the next caller finds it renamed) and the
        registrations are stamped in it, so every instance clears once and takes Redis's
        registrations as they are."""
        args: list[str | int] = [secrets.token_hex(8), epoch or "", version, last_id, suspect]
        async with _translated():
            now, newest, last, rolled = await self._head([*self._keys[:3], self._sites[1]], args)
        return Head(now, int(newest), last, bool(rolled))

    async def publish(self, type_: str, body: Any, origin: str) -> Published:
        """Append an event (the next version) and count the live members."""
        args: list[str | int] = [
            *(secrets.token_hex(8), type_, json.dumps(body), origin),
            *(STREAM_LENGTH, MEMBER_TTL),
        ]
        async with _translated():
            version, id_, members = await self._publish(self._keys, args)
        return Published(int(version), id_, int(members))

    async def change_site(
        self, type_: str, name: str, table: Any, stamp: str, origin: str
    ) -> tuple[Published, str] | None:
        """Store ``table`` as registration ``name`` (``None``: remove it) and append its
        event, if the registrations are still as of ``stamp``; the event and the new stamp,
        or ``None`` (changed meanwhile: nothing written)."""
        stored = "" if table is None else json.dumps(table)
        args: list[str | int] = [
            *(secrets.token_hex(8), type_, json.dumps({"name": name}), origin),
            *(STREAM_LENGTH, MEMBER_TTL, stamp, name, stored),
        ]
        async with _translated():
            version, id_, members, new = await self._change_site(self._keys + self._sites, args)
        if not int(version):
            return None
        return Published(int(version), id_, int(members)), new

    async def registrations(self, seed: dict[str, Any]) -> Registrations:
        """The stored registrations; ``seed`` is stored first if there are none yet."""
        pairs = [item for name, table in seed.items() for item in (name, json.dumps(table))]
        keys = [self._keys[0], self._keys[1], *self._sites]
        async with _translated():
            stamp, flat = await self._registrations(keys, [secrets.token_hex(8), *pairs])
        tables = {flat[i]: json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Registrations(stamp, tables)

    async def read(self, after: str, block: float, count: int = 100) -> list[Event]:
        """Events after stream id ``after``, oldest first; waits up to ``block`` seconds for
        one if there is none yet."""
        streams: dict[Any, Any] = {self._keys[2]: after}
        async with _translated():
            answer = await self._redis.xread(streams, count=count, block=int(block * 1000))
        # RESP2, decoded: [[stream, [(id, {field: value}), ...]]], or None after ``block``.
        read = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], answer or [])
        return [_event(id_, fields) for _, entries in read for id_, fields in entries]

    async def heartbeat(self, instance: str) -> Beat:
        """Mark ``instance`` alive now; the live members, Redis's epoch and version."""
        keys = [self._keys[3], self._keys[0], self._keys[1]]
        async with _translated():
            members, epoch, version = await self._heartbeat(keys, [instance, MEMBER_TTL])
        return Beat(int(members), epoch, int(version))

    async def leave(self, instance: str) -> None:
        async with _translated():
            await self._redis.zrem(self._keys[3], instance)

    async def ack(self, event_id: str, instance: str) -> None:
        key = self._acks + event_id
        async with _translated():
            pipe = self._redis.pipeline(transaction=False)
            pipe.rpush(key, instance)
            pipe.expire(key, ACK_TTL)
            await pipe.execute()

    async def acks(self, event_id: str, wanted: int, within: float) -> int:
        """How many instances acknowledged ``event_id``: waits until ``wanted`` have or
        ``within`` seconds pass, whichever is first."""
        key, seen = self._acks + event_id, 0
        deadline = time.monotonic() + within
        async with _translated():
            while seen < wanted:
                left = deadline - time.monotonic()
                if left <= 0 or not await self._redis.blpop([key], timeout=left):
                    break
                seen += 1
        return seen


def _event(id_: str, fields: dict[str, str]) -> Event:
    return Event(
        id=id_,
        version=int(fields["v"]),
        epoch=fields["epoch"],
        type=fields["type"],
        body=json.loads(fields["body"]),
        origin=fields["origin"],
    )
