"""Which sinks a :class:`~s3proxy.config.SinksConfig` asks for. Sink modules are imported only
when configured, so their client libraries cost nothing otherwise."""

from __future__ import annotations

from s3proxy.config import SinksConfig
from s3proxy.sinks.base import Enricher, Sink, Sinks


def build_sinks(config: SinksConfig) -> Sinks | None:
    """The configured sinks and GeoIP enricher, or ``None`` when no sink is configured."""
    sinks: list[Sink] = []
    if config.akumuli_host:
        from s3proxy.sinks.akumuli import AkumuliSink

        sinks.append(AkumuliSink(config.akumuli_host, config.akumuli_port, config.metric_prefix))
    if config.ilp_host:
        from s3proxy.sinks.influx import LineProtocolSink

        sinks.append(LineProtocolSink(config.ilp_host, config.ilp_port, config.ilp_series_name))
    if config.mongo_uri:
        from s3proxy.sinks.mongo import MongoSink

        sinks.append(MongoSink(config.mongo_uri, config.mongo_database, config.mongo_collection))
    if config.prometheus:
        from s3proxy.sinks.prometheus import PrometheusSink

        sinks.append(PrometheusSink())
    if not sinks:
        return None
    on_drop = None
    if config.prometheus:
        from s3proxy.sinks.prometheus import count_sink_drop

        on_drop = count_sink_drop
    return Sinks(sinks, config.sink_queue_size, build_enricher(config), on_drop)


def build_enricher(config: SinksConfig) -> Enricher | None:
    if config.mmdb_file:
        from s3proxy.sinks.geoip import MmdbFileEnricher

        return MmdbFileEnricher(config.mmdb_file)
    if config.mmdb_host:
        from s3proxy.sinks.geoip import MmdbWsEnricher

        return MmdbWsEnricher(config.mmdb_host, config.mmdb_port)
    return None


def prepare(config: SinksConfig, cache_dir: str) -> None:
    """Once, in the parent process before workers start: an empty metric-file directory, and
    with ``--sink-cpus`` the workers' CPUs (they inherit this process's)."""
    if config.prometheus:
        from s3proxy.sinks.prometheus import prepare_multiprocess

        prepare_multiprocess(cache_dir)
    if config.sink_cpus and wanted(config):
        from s3proxy.sinks.process import reserve_cpus

        reserve_cpus(config.sink_cpus)


def wanted(config: SinksConfig) -> bool:
    """Whether any sink is configured (then each worker starts a sink process)."""
    return bool(config.akumuli_host or config.ilp_host or config.mongo_uri or config.prometheus)
