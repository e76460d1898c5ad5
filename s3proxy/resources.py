"""The resources one worker serves with (cache, S3 client, site, sink client), opened together
at startup by :meth:`Resources.open` and handed whole to the site and management routes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s3proxy import sitesfile
from s3proxy.cache import Cache
from s3proxy.config import CacheConfig, Config
from s3proxy.hosting import Hosting
from s3proxy.origin import Origin
from s3proxy.registry import Registry
from s3proxy.reload import Reloader
from s3proxy.sinks.factory import wanted as sinks_wanted
from s3proxy.sinks.process import SinkClient
from s3proxy.site import Site
from s3proxy.sitesfile import Sites

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
    #: The sites (one without ``--config``), their S3 clients and the router.
    hosting: Hosting
    sinks: SinkClient | None  # None: no sink configured, not "not yet started"
    group: Group | None  # None: no --redis-url
    #: Reloads the sites file on SIGHUP and when it changes (``None``: no ``--config``).
    reloader: Reloader | None = None
    #: Sites registered at runtime (``None``: no ``--config``).
    registry: Registry | None = None

    @property
    def site(self) -> Site:
        """The default site (without ``--config``, the only one), else the first."""
        served = self.hosting.served
        router_default = next((s for s in served.sites.sites.values() if s.default), None)
        name = (router_default or next(iter(served.sites.sites.values()))).name
        return served.hosted[name].site

    @property
    def origin(self) -> Origin:
        """The bucket :attr:`site` reads."""
        return self.site.readthrough.origin

    def sites(self) -> dict[str, Site]:
        """Every site served now, by name."""
        return {name: hosted.site for name, hosted in self.hosting.served.hosted.items()}

    @classmethod
    async def open(cls, config: Config, stack: contextlib.AsyncExitStack) -> Resources:
        """Open everything for ``config``; ``stack`` closes it in reverse order. Raises
        :class:`~s3proxy.exceptions.ConfigError` for a bad sites file."""
        cache = open_cache(config.cache, config.origin.bucket or "")
        stack.callback(cache.close)
        hosting = Hosting(config, cache)
        sinks = None
        if sinks_wanted(config.sinks):
            timings = None
            if config.sinks.prometheus:  # the S3 latency histogram
                hosting.keep_timings()
                timings = hosting.take_timings
            sinks = SinkClient(config.sinks, config.logs, config.cache.cache_dir, timings)
            sinks.start()
            stack.push_async_callback(sinks.close)
        hosting.recorder = sinks
        stack.push_async_callback(hosting.close)
        registry = None
        if config.process.sites_file:
            registry = Registry(config, hosting)
            await registry.serve(load_sites(config))
        else:
            await hosting.swap(load_sites(config))
        group = None
        if config.group.redis_url is not None:
            from s3proxy.group import Group  # only then: redis-py is not even imported

            # One bus for the instances of a bucket, or for every instance with a sites file
            # (whether or not it also has --bucket, the sites' default: instances differing
            # there must still be one group; cache keys are namespaced by site).
            bucket = config.origin.bucket
            name = bucket if bucket and not config.process.sites_file else "sites"
            group = Group(config.group, cache, name)
            if registry is not None:  # registrations kept in Redis, the same in every instance
                from s3proxy.group.sites import SharedSites

                registry.shared = group.sites = SharedSites(group, registry)
            await group.start()
            stack.push_async_callback(group.close)
        reloader = None
        if config.process.sites_file:
            assert registry is not None
            reloader = Reloader(config, hosting, registry)
            await reloader.start(stack)
        return cls(config, cache, hosting, sinks, group, reloader, registry)


def load_sites(config: Config) -> Sites:
    """The sites of ``--config``'s file, else the command line's one site."""
    path = config.process.sites_file
    return sitesfile.load(path, config) if path else sitesfile.implicit(config)
