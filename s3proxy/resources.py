"""The resources one worker serves with (cache, S3 client, site, sink client), opened together
at startup by :meth:`Resources.open` and handed whole to the site and management routes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s3proxy.cache import Cache
from s3proxy.config import CacheConfig, Config
from s3proxy.origin import Origin
from s3proxy.readthrough import ReadThrough
from s3proxy.sinks.factory import wanted as sinks_wanted
from s3proxy.sinks.process import SinkClient
from s3proxy.site import Site

if TYPE_CHECKING:
    from s3proxy.group import Group


def open_cache(part: CacheConfig, bucket: str) -> Cache:
    cache = Cache(
        part.cache_dir,
        bucket,
        memory_budget=part.memory_cache_size,
        memory_object_size=part.memory_object_size,
        max_size=part.cache_max_size,
    )
    cache.open()
    return cache


@dataclass(frozen=True, slots=True)
class Resources:
    """What one worker's lifespan opened, all of it, for the routes that serve with it; it
    exists only between startup and shutdown, so nothing in it is optional."""

    config: Config
    cache: Cache
    origin: Origin
    site: Site
    sinks: SinkClient | None  # None: no sink configured, not "not yet started"
    group: Group | None  # None: no --redis-url

    @classmethod
    async def open(cls, config: Config, stack: contextlib.AsyncExitStack) -> Resources:
        """Open everything for ``config``; ``stack`` closes it in reverse order."""
        cache = open_cache(config.cache, config.origin.bucket)
        stack.callback(cache.close)
        origin = await stack.enter_async_context(Origin(config.origin))
        readthrough = ReadThrough(
            cache,
            origin,
            ttl=config.site.ttl,
            honor_cache_control=config.site.honor_cache_control,
            max_object_size=config.cache.cache_max_object_size,
            stale_if_error=config.site.stale_if_error,
        )
        stack.push_async_callback(readthrough.close)
        sinks = None
        if sinks_wanted(config.sinks):
            timings = None
            if config.sinks.prometheus:  # the S3 latency histogram
                origin.keep_timings()
                timings = origin.take_timings
            sinks = SinkClient(config.sinks, config.logs, config.cache.cache_dir, timings)
            sinks.start()
            stack.push_async_callback(sinks.close)
        site = Site(config.site, readthrough, recorder=sinks)
        group = None
        if config.group.redis_url is not None:
            from s3proxy.group import Group  # only then: redis-py is not even imported

            group = Group(config.group, cache, config.origin.bucket)
            await group.start()
            stack.push_async_callback(group.close)
        return cls(config, cache, origin, site, sinks, group)
