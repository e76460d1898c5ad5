"""The MongoDB sink, through :class:`~s3proxy.sinks.base.Sinks`, against a fake MongoDB.

No MongoDB server can be installed on this machine, so these tests run PyMongo against
:mod:`tests.mongo_server`, which speaks the real wire protocol (OP_MSG with document
sequences, OP_QUERY, BSON from PyMongo's ``bson``). Documents are asserted as the server
decoded them, BSON types included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import socket
import struct
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import bson
import pytest
from bson.int64 import Int64
from pymongo.errors import ServerSelectionTimeoutError

from s3proxy.sinks import Sinks
from s3proxy.sinks.base import BATCH
from s3proxy.sinks.mongo import MongoSink, document
from tests.mongo_server import (
    CHECKSUM_PRESENT,
    MAX_WIRE_VERSION,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    MongoServer,
    crc32c,
    message,
)
from tests.servers import free_port
from tests.sink_servers import eventually, make_record, started

NAMESPACE = "metrics.request"
T = TypeVar("T")

# PyMongo 4.20 leaks the socket of a server-monitor connect that close() cancels: it closes
# the socket on OSError and TimeoutError around sock_connect, not on CancelledError. CPython
# closes it when collected, with a ResourceWarning. Only tests that close a client while its
# server is down can hit it; they collect garbage before they end, so it surfaces in them.
CANCELLED_CONNECT = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture
def mongo() -> Iterator[MongoServer]:
    with MongoServer().running() as server:
        yield server


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, then a garbage collection (see :data:`CANCELLED_CONNECT`)."""
    try:
        return asyncio.run(coro)
    finally:
        gc.collect()


def test_supports_the_installed_pymongo() -> None:
    """The fake server's wire versions are within what the installed PyMongo accepts."""
    from pymongo import common

    assert common.MIN_SUPPORTED_WIRE_VERSION <= MAX_WIRE_VERSION
    assert MAX_WIRE_VERSION <= common.MAX_SUPPORTED_WIRE_VERSION


def test_document_has_the_original_fields_and_types(mongo: MongoServer) -> None:
    """A record arrives as the original's document: names, BSON types, ns timestamps."""

    async def scenario() -> None:
        async with started(Sinks([MongoSink(mongo.uri, "metrics", "request")])) as sinks:
            sinks.emit(
                make_record(timestamp=1_700_000_000.123456, ip="184.105.163.155", compressed=True)
            )
            await eventually(lambda: sinks.runners[0].sent == 1)

    asyncio.run(scenario())
    [doc] = mongo.docs(NAMESPACE)
    assert {k: (v, type(v)) for k, v in doc.items() if k != "_id"} == {
        "method": ("GET", str),
        "resource": ("/index.html", str),
        "mimeType": ("text/html", str),
        "ipaddress": ("184.105.163.155", str),
        "size": (2950, Int64),
        "time": (1_234_000, Int64),
        "status": (200, int),
        "compressed": (True, bool),
        "timestamp": (1_700_000_000_123_456_000, Int64),
        "created": (dt.datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=dt.UTC), dt.datetime),
        "cache": ("hit", str),
        "originBytes": (0, Int64),
    }
    assert isinstance(doc["_id"], bson.ObjectId)
    assert mongo.unknown == [] and mongo.protocol_errors == []


def test_location_is_a_subdocument_only_when_known() -> None:
    """``location`` is written when the enricher filled it, and absent otherwise."""
    location = {"city": "London", "country_iso_code": "GB"}
    assert document(make_record(location=location))["location"] == location
    assert "location" not in document(make_record())


def test_open_creates_the_original_indexes(mongo: MongoServer) -> None:
    """Opening creates ascending indexes on method, resource, status and timestamp."""

    async def scenario() -> None:
        sink = MongoSink(mongo.uri, "metrics", "request")
        await sink.open()
        await sink.close()

    asyncio.run(scenario())
    assert mongo.indexes[NAMESPACE] == {
        f"{field}_1": {"name": f"{field}_1", "key": {field: 1}}
        for field in ("method", "resource", "status", "timestamp")
    }


def test_refused_indexes_do_not_stop_writes(mongo: MongoServer) -> None:
    """A user not allowed to create indexes still gets its records written."""
    mongo.refuse["createIndexes"] = {"errmsg": "not authorized", "code": 13}

    async def scenario() -> None:
        async with started(Sinks([MongoSink(mongo.uri, "metrics", "request")])) as sinks:
            sinks.emit(make_record())
            await eventually(lambda: sinks.runners[0].sent == 1)
            assert sinks.runners[0].failures == 0

    asyncio.run(scenario())
    assert NAMESPACE not in mongo.indexes
    assert len(mongo.docs(NAMESPACE)) == 1


def test_records_are_inserted_in_batches_of_unordered_inserts(mongo: MongoServer) -> None:
    """A burst is written with one unordered insert command per batch."""
    count = 2 * BATCH + 7

    async def scenario() -> None:
        async with started(Sinks([MongoSink(mongo.uri, "metrics", "request")])) as sinks:
            for i in range(count):
                sinks.emit(make_record(resource=f"/{i}"))
            await eventually(lambda: sinks.runners[0].sent == count)
            assert sinks.stats()["mongo"] == {
                "queued": 0,
                "sent": count,
                "dropped": 0,
                "failures": 0,
            }

    asyncio.run(scenario())
    assert mongo.commands.count("insert") == 3 and mongo.ordered == [False] * 3
    assert [d["resource"] for d in mongo.docs(NAMESPACE)] == [f"/{i}" for i in range(count)]


def test_refused_documents_fail_the_batch(mongo: MongoServer) -> None:
    """Write errors in the server's answer count as a failed batch, logged, not lost from
    sight; the sink keeps writing the next batches."""
    mongo.refuse_documents = 1

    async def scenario() -> None:
        async with started(Sinks([MongoSink(mongo.uri, "metrics", "request")])) as sinks:
            sinks.emit(make_record(resource="/refused"))
            await eventually(lambda: sinks.runners[0].failures == 1)
            mongo.refuse_documents = 0
            sinks.emit(make_record(resource="/taken"))
            await eventually(lambda: sinks.runners[0].sent == 1)
            assert sinks.stats()["mongo"]["dropped"] == 1

    asyncio.run(scenario())
    assert [d["resource"] for d in mongo.docs(NAMESPACE)] == ["/taken"]


@CANCELLED_CONNECT
def test_a_killed_server_costs_counted_drops_and_is_reconnected(mongo: MongoServer) -> None:
    """Killing MongoDB mid-run: emit does not raise, the lost batch is counted, and records
    sent after the restart arrive."""

    async def scenario() -> None:
        async with started(Sinks([MongoSink(mongo.uri, "metrics", "request")])) as sinks:
            runner = sinks.runners[0]
            for _ in range(10):
                sinks.emit(make_record(resource="/before"))
            await eventually(lambda: runner.sent == 10)

            await asyncio.to_thread(mongo.stop)
            for _ in range(5):
                sinks.emit(make_record(resource="/down"))
            await eventually(lambda: runner.failures >= 1)
            assert runner.dropped == 5

            await asyncio.to_thread(mongo.start)
            for _ in range(10):
                sinks.emit(make_record(resource="/after"))
            await eventually(lambda: runner.sent == 20, limit=15)
            assert runner.dropped == 5

    run(scenario())
    resources = [d["resource"] for d in mongo.docs(NAMESPACE)]
    assert resources == ["/before"] * 10 + ["/after"] * 10
    assert mongo.commands.count("createIndexes") == 2  # once per connection


@CANCELLED_CONNECT
def test_a_dead_server_fails_open_fast() -> None:
    """With nothing listening, open raises within the short default selection timeout."""

    async def scenario() -> float:
        sink = MongoSink(f"mongodb://127.0.0.1:{free_port()}/", "metrics", "request")
        started = time.perf_counter()
        with pytest.raises(ServerSelectionTimeoutError):
            await sink.open()
        await sink.close()
        return time.perf_counter() - started

    assert run(scenario()) < 5


@CANCELLED_CONNECT
def test_timeouts_in_the_uri_win() -> None:
    """A timeout set in the connection string is kept; ours fill only the gaps."""
    sink = MongoSink("mongodb://db:27017/?serverSelectionTimeoutMS=300&w=1", "m", "r")
    assert "serverSelectionTimeoutMS" not in sink.options
    assert sink.options["connectTimeoutMS"] == 2_000

    async def scenario() -> float:
        dead = MongoSink(
            f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300", "m", "r"
        )
        started = time.perf_counter()
        with pytest.raises(ServerSelectionTimeoutError):
            await dead.open()
        return time.perf_counter() - started

    assert run(scenario()) < 1.5


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        header = sock.recv(16, socket.MSG_WAITALL)
        if not header:
            return b""
        (length,) = struct.unpack_from("<i", header)
        return header + sock.recv(length - 16, socket.MSG_WAITALL)


def test_fake_server_answers_a_legacy_op_query_handshake(mongo: MongoServer) -> None:
    """The fake answers OP_QUERY isMaster on admin.$cmd with an OP_REPLY, as mongod does."""
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1)
    reply = _exchange(mongo.port, message(7, 0, OP_QUERY, body + bson.encode({"isMaster": 1})))
    _, _, response_to, opcode = struct.unpack_from("<iiii", reply)
    assert (response_to, opcode) == (7, OP_REPLY)
    (returned,) = struct.unpack_from("<i", reply, 16 + 16)
    answer = bson.decode(reply[36:])
    assert returned == 1 and answer["ismaster"] is True and answer["ok"] == 1.0


def test_fake_server_checks_op_msg_checksums(mongo: MongoServer) -> None:
    """An OP_MSG with a valid CRC-32C is answered; a corrupted one closes the connection."""
    body = struct.pack("<I", CHECKSUM_PRESENT) + b"\x00" + bson.encode({"ping": 1, "$db": "a"})
    unsigned = message(9, 0, OP_MSG, body + b"\x00" * 4)[:-4]
    signed = unsigned + struct.pack("<I", crc32c(unsigned))
    reply = _exchange(mongo.port, signed)
    assert struct.unpack_from("<iiii", reply)[2:] == (9, OP_MSG)
    assert bson.decode(reply[21:]) == {"ok": 1.0}
    assert _exchange(mongo.port, signed[:-1] + bytes([signed[-1] ^ 1])) == b""
    assert mongo.protocol_errors == ["OP_MSG checksum mismatch"]


def test_deferred_server_answers_at_once_and_decodes_the_same_documents() -> None:
    """The bench's deferred mode acknowledges each insert with its count without decoding
    it, and :meth:`MongoServer.decode_deferred` later yields exactly what a server decoding
    at once stores."""
    records = [make_record(resource=f"/page-{i}.html", size=i) for i in range(BATCH + 7)]

    def written(server: MongoServer) -> list[dict[str, Any]]:
        async def scenario() -> None:
            sinks = Sinks([MongoSink(server.uri, "metrics", "request")])
            async with started(sinks):
                sinks.emit_many(list(records))
                await eventually(lambda: sinks.runners[0].sent == len(records))
                assert sinks.runners[0].dropped == 0

        asyncio.run(scenario())
        return [{k: v for k, v in d.items() if k != "_id"} for d in server.docs(NAMESPACE)]

    with MongoServer().running() as eager:
        expected = written(eager)
    with MongoServer(deferred=True).running() as deferred:
        assert written(deferred) == []  # acknowledged, not yet decoded
        assert deferred.commands.count("insert") == 2  # two batches, each answered
        deferred.decode_deferred()
        assert [{k: v for k, v in d.items() if k != "_id"} for d in deferred.docs(NAMESPACE)] == (
            expected
        )
        assert all("_id" in d for d in deferred.docs(NAMESPACE))
    assert len(expected) == len(records)
