"""The machinery every sink shares: bounded fan-out, locating records from the enricher's
cache without a lookup, and the per-location memo the encoders use."""

from __future__ import annotations

import asyncio

from s3proxy.record import RequestRecord
from s3proxy.sinks.base import BACKOFF_FIRST, BACKOFF_MAX, Backoff, Location, SinkRunner, Sinks
from s3proxy.sinks.text import LocationMemo
from tests.sink_servers import ListSink, make_record


class KnownAddresses:
    """An enricher that knows some addresses without a lookup, and looks the rest up on
    the event loop, one per call (so tests can see what waited)."""

    def __init__(self, known: dict[str, Location | None]) -> None:
        self.known = known
        self.looked_up: list[str] = []

    def cached(self, ip: str) -> tuple[bool, Location | None]:
        return (True, self.known[ip]) if ip in self.known else (False, None)

    async def enrich(self, record: RequestRecord) -> None:
        self.looked_up.append(record.ip)
        await asyncio.sleep(0)
        record.location = {"city": f"looked up {record.ip}"}

    async def close(self) -> None:
        pass


def test_a_full_queue_takes_what_fits_and_counts_the_rest() -> None:
    drops: list[tuple[str, int]] = []
    runner = SinkRunner(ListSink(), queue_size=3, on_drop=lambda name, n: drops.append((name, n)))
    runner.offer(make_record(size=0))
    runner.offer_many([make_record(size=n) for n in range(1, 5)])
    runner.offer_many([make_record(size=9)])
    assert [r.size for r in runner.queue] == [0, 1, 2]
    assert runner.dropped == 3 and drops == [("list", 2), ("list", 1)]


def test_known_addresses_are_located_at_once_and_the_rest_after_a_lookup() -> None:
    """Records of a cached address get its location (the cached dict itself) in
    ``emit_many``, before any await; the others reach the sinks after their lookup."""
    oslo: Location = {"city": "Oslo"}
    enricher = KnownAddresses({"198.51.100.7": oslo, "10.0.0.1": None})
    sink = ListSink()

    async def scenario() -> None:
        sinks = Sinks([sink], enricher=enricher)
        batch = [
            make_record(ip="198.51.100.7"),
            make_record(ip="203.0.113.9"),
            make_record(ip="10.0.0.1"),
        ]
        sinks.emit_many(batch)
        assert batch[0].location is oslo and batch[2].location is None
        assert [r.ip for r in sinks.runners[0].queue] == ["198.51.100.7", "10.0.0.1"]
        await sinks.start()
        for _ in range(50):
            await asyncio.sleep(0)
        await sinks.close()

    asyncio.run(scenario())
    assert [r.ip for r in sink.records] == ["198.51.100.7", "10.0.0.1", "203.0.113.9"]
    assert sink.records[2].location == {"city": "looked up 203.0.113.9"}
    assert enricher.looked_up == ["203.0.113.9"]


def test_too_many_waiting_records_go_on_without_a_location() -> None:
    """When the lookups fall behind by a whole queue, records are not lost: they pass
    unlocated, and are counted as skipped."""
    enricher = KnownAddresses({})

    async def scenario() -> Sinks:
        sinks = Sinks([ListSink()], queue_size=4, enricher=enricher)
        sinks.emit_many([make_record(ip=f"203.0.113.{n}") for n in range(10)])
        return sinks

    sinks = asyncio.run(scenario())
    assert sinks.stats()["geoip"] == {"queued": 4, "skipped": 6}
    # The 6 skipped went on to the sink, whose own queue (also 4) took what fit.
    assert len(sinks.runners[0].queue) == 4 and sinks.runners[0].dropped == 2
    assert all(r.location is None for r in sinks.runners[0].queue)


def test_location_memo_keeps_by_identity() -> None:
    calls: list[Location | None] = []

    def derive(location: Location | None) -> str:
        calls.append(location)
        return "" if location is None else location["city"]

    memo = LocationMemo(derive, size=2)
    oslo, also_oslo, bergen = {"city": "Oslo"}, {"city": "Oslo"}, {"city": "Bergen"}
    assert memo(None) == "" and memo(oslo) == "Oslo" and memo(oslo) == "Oslo"
    assert len(calls) == 2  # None once (at construction), oslo once
    assert memo(also_oslo) == "Oslo" and len(calls) == 3  # an equal dict is another entry
    oslo["city"] = "Christiania"  # locations are shared read-only: a change is not seen
    assert memo(oslo) == "Oslo"
    assert memo(bergen) == "Bergen"  # the third entry: the memo starts over
    assert memo(oslo) == "Christiania" and len(calls) == 5


def test_backoff_doubles_up_to_its_limit_and_starts_over_after_a_success() -> None:
    """Retries wait 0.5 s, 1 s, 2 s... never more than the limit; a success resets them."""
    backoff = Backoff()
    delays = [backoff.next() for _ in range(10)]
    assert delays[:3] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert delays[-1] == BACKOFF_MAX and max(delays) == BACKOFF_MAX
    backoff.reset()
    assert backoff.next() == BACKOFF_FIRST
