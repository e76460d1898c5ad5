"""A small MongoDB server for the tests, speaking the real wire protocol to the real PyMongo.

No MongoDB server can be installed on this machine (no package registry reachable here carries
one), so the Mongo sink is tested against this: an asyncio TCP server that decodes and encodes
the MongoDB wire protocol with PyMongo's own ``bson`` package. It implements what a driver
needs to write documents, and remembers what it was sent:

- message header: ``int32 messageLength, requestID, responseTo, opCode`` (little-endian);
- ``OP_MSG`` (2013): ``uint32 flagBits``, sections, optional CRC-32C checksum (flag bit 0,
  verified: a bad checksum closes the connection, as mongod does); ``moreToCome`` (bit 1, an
  unacknowledged write) gets no reply. Section kind 0 is the command document; kind 1 is a
  document sequence (``int32 size, cstring identifier, documents...``), which is how drivers
  send ``insert``'s ``documents``: they are merged into the command under that identifier;
- ``OP_QUERY`` (2004) on ``<db>.$cmd``, answered with ``OP_REPLY`` (1): the legacy handshake
  older drivers send (PyMongo 4.20 sends ``isMaster``/``hello`` in ``OP_MSG``);
- commands: ``hello`` / ``isMaster`` (a standalone server, wire versions 0..21, i.e.
  MongoDB 7.0; sessions supported, no compression, no ``topologyVersion`` so drivers poll
  instead of streaming), ``ping``, ``buildInfo``, ``createIndexes``, ``insert``,
  ``endSessions``; anything else answers ``CommandNotFound`` and is listed in ``unknown``;
  a command named in ``refuse`` gets the error given there (e.g. ``not authorized``).

``MongoServer(deferred=True)`` (for ``scripts/bench``) answers each ``insert`` with its count
at once but decodes its documents only when :meth:`MongoServer.decode_deferred` is called:
decoding BSON into dicts costs the fake server far more CPU than encoding costs the sink,
which the proxy being measured would otherwise lose on a small machine.

The server runs on its own event loop in a thread, so sync tests, async tests and s3proxy
under uvicorn can all use it. :meth:`MongoServer.stop` kills it (listener and every
connection); :meth:`MongoServer.start` brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import struct
import threading
from collections.abc import Mapping
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from tests.sink_servers import LoopServer

OP_REPLY, OP_QUERY, OP_COMPRESSED, OP_MSG = 1, 2004, 2012, 2013
CHECKSUM_PRESENT, MORE_TO_COME = 1 << 0, 1 << 1
#: MongoDB 7.0. PyMongo 4.20 needs at least 9 (MongoDB 4.4).
MIN_WIRE_VERSION, MAX_WIRE_VERSION = 0, 21
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)
#: Documents left as bytes: reading a command's first field and counting its documents
#: decodes none of them.
RAW: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the OP_MSG checksum."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


class ProtocolError(Exception):
    """The client sent something a MongoDB server would not accept; the connection closes."""


def parse_op_msg(
    body: bytes, whole: bytes, codec: CodecOptions[Any] = CODEC
) -> tuple[int, Any, list[str]]:
    """``(flagBits, command, sequence identifiers)`` from an OP_MSG body; ``whole`` is the
    message with its header, over which the checksum is computed. With :data:`RAW`, the
    command and the documents are read-only :class:`RawBSONDocument`."""
    (flags,) = struct.unpack_from("<I", body, 0)
    end = len(body)
    if flags & CHECKSUM_PRESENT:
        end -= 4
        (expected,) = struct.unpack_from("<I", body, end)
        if crc32c(whole[:-4]) != expected:
            raise ProtocolError("OP_MSG checksum mismatch")
    pos, command, sequences = 4, None, {}
    while pos < end:
        kind = body[pos]
        pos += 1
        (size,) = struct.unpack_from("<i", body, pos)
        if kind == 0:
            command = bson.decode(body[pos : pos + size], codec)
        elif kind == 1:
            name_end = body.index(b"\x00", pos + 4)
            name = body[pos + 4 : name_end].decode()
            sequences[name] = bson.decode_all(body[name_end + 1 : pos + size], codec)
        else:
            raise ProtocolError(f"OP_MSG section kind {kind}")
        pos += size
    if command is None:
        raise ProtocolError("OP_MSG without a kind-0 section")
    if sequences:
        command = {**command, **sequences}
    return flags, command, list(sequences)


def parse_op_query(body: bytes) -> tuple[str, dict[str, Any]]:
    """``(fullCollectionName, query)`` from an OP_QUERY body."""
    name_end = body.index(b"\x00", 4)
    collection = body[4:name_end].decode()
    pos = name_end + 1 + 8  # numberToSkip, numberToReturn
    (size,) = struct.unpack_from("<i", body, pos)
    return collection, bson.decode(body[pos : pos + size], CODEC)


def message(request_id: int, response_to: int, opcode: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, opcode) + body


def op_msg_body(doc: dict[str, Any]) -> bytes:
    return struct.pack("<I", 0) + b"\x00" + bson.encode(doc)


def op_reply_body(doc: dict[str, Any]) -> bytes:
    return struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(doc)


class MongoServer(LoopServer):
    """The fake server on ``127.0.0.1:<port>``; see the module docstring.

    ``documents`` and ``indexes`` are keyed by namespace (``db.collection``); ``commands``
    lists every command name received, in order."""

    thread_name = "fake-mongo"

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        #: Deferred mode: (database, insert command) not yet decoded into ``documents``.
        self._undecoded: list[tuple[str, Mapping[str, Any]]] = []
        self.port = 0
        self.documents: dict[str, list[dict[str, Any]]] = {}
        self.indexes: dict[str, dict[str, dict[str, Any]]] = {}
        self.commands: list[str] = []
        self.unknown: list[str] = []
        #: Identifiers of the kind-1 sections (document sequences) received, in order.
        self.sequences: list[str] = []
        #: Command name -> the error reply to give it instead of running it.
        self.refuse: dict[str, dict[str, Any]] = {}
        #: Each insert refuses this many of its first documents, as write errors.
        self.refuse_documents = 0
        #: Each insert's ``ordered`` option, in order.
        self.ordered: list[bool] = []
        self.protocol_errors: list[str] = []
        self.connections = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def docs(self, namespace: str) -> list[dict[str, Any]]:
        """A snapshot of the documents inserted into ``namespace``."""
        with self._lock:
            return list(self.documents.get(namespace, ()))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        """Kill the server: stop listening and abort every connection, mid-command or not."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                body = await reader.readexactly(length - 16)
                reply = self._handle(opcode, request_id, body, header + body)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            self.protocol_errors.append(str(exc))
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def _handle(self, opcode: int, request_id: int, body: bytes, whole: bytes) -> bytes | None:
        if opcode == OP_MSG:
            flags, command, sequences = parse_op_msg(body, whole, RAW if self.deferred else CODEC)
            answer = self._deferred_insert(command) if self.deferred else None
            if answer is None and self.deferred:  # not an insert to keep: decode it after all
                flags, command, sequences = parse_op_msg(body, whole)
            self.sequences.extend(sequences)
            if answer is None:
                answer = self._command(command.get("$db", "admin"), command)
            if flags & MORE_TO_COME:
                return None
            return message(next(self._ids), request_id, OP_MSG, op_msg_body(answer))
        if opcode == OP_QUERY:
            collection, query = parse_op_query(body)
            if not collection.endswith(".$cmd"):
                raise ProtocolError(f"OP_QUERY on {collection}: only commands are supported")
            answer = self._command(collection.split(".", 1)[0], query)
            return message(next(self._ids), request_id, OP_REPLY, op_reply_body(answer))
        raise ProtocolError(f"opcode {opcode} (compression is not offered)")

    def _command(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(command))
        self.commands.append(name)
        if name in self.refuse:
            return {"ok": 0.0, **self.refuse[name]}
        handler = {
            "hello": self._hello,
            "ismaster": self._hello,
            "ping": self._ok,
            "buildinfo": self._build_info,
            "createindexes": self._create_indexes,
            "insert": self._insert,
            "endsessions": self._ok,
        }.get(name.lower())
        if handler is None:
            self.unknown.append(name)
            return {
                "ok": 0.0,
                "errmsg": f"no such command: '{name}'",
                "code": 59,
                "codeName": "CommandNotFound",
            }
        return handler(db, command)

    def _ok(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        return {"ok": 1.0}

    def _hello(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        primary = "isWritablePrimary" if next(iter(command)) == "hello" else "ismaster"
        return {
            "helloOk": True,
            primary: True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": dt.datetime.now(dt.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": self.connections,
            "minWireVersion": MIN_WIRE_VERSION,
            "maxWireVersion": MAX_WIRE_VERSION,
            "readOnly": False,
            "ok": 1.0,
        }

    def _build_info(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        return {"version": "7.0.0", "versionArray": [7, 0, 0, 0], "ok": 1.0}

    def _create_indexes(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            existing = self.indexes.setdefault(f"{db}.{command['createIndexes']}", {})
            before = len(existing) + 1  # the implicit _id index
            for spec in command["indexes"]:
                existing.setdefault(spec["name"], spec)
            after = len(existing) + 1
        return {
            "createdCollectionAutomatically": False,
            "numIndexesBefore": before,
            "numIndexesAfter": after,
            "ok": 1.0,
        }

    def _deferred_insert(self, command: Mapping[str, Any]) -> dict[str, Any] | None:
        """Deferred mode: an ``insert``'s reply, its documents kept for later; ``None`` for
        any other command (or an insert to refuse), which is then decoded and run as usual."""
        if next(iter(command)) != "insert" or "insert" in self.refuse or self.refuse_documents:
            return None
        with self._lock:
            self._undecoded.append((command.get("$db", "admin"), command))
        self.commands.append("insert")
        self.ordered.append(command.get("ordered", True))
        return {"n": len(command.get("documents", ())), "ok": 1.0}

    def decode_deferred(self) -> None:
        """Decode what deferred mode kept into ``documents``, as :meth:`_insert` would have."""
        with self._lock:
            undecoded, self._undecoded = self._undecoded, []
        for db, command in undecoded:
            documents = [bson.decode(d.raw, CODEC) for d in command.get("documents", ())]
            self._keep(db, {"insert": command["insert"], "documents": documents})

    def _insert(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        self.ordered.append(command.get("ordered", True))
        return self._keep(db, command)

    def _keep(self, db: str, command: dict[str, Any]) -> dict[str, Any]:
        """Store an insert's documents (but those ``refuse_documents`` refuses); its reply."""
        # As mongod does, a document without an _id gets one, first.
        documents = [
            d if "_id" in d else {"_id": bson.ObjectId(), **d} for d in command.get("documents", [])
        ]
        refused = [
            {"index": i, "code": 11000, "errmsg": "E11000 duplicate key error"}
            for i in range(min(self.refuse_documents, len(documents)))
        ]
        with self._lock:
            self.documents.setdefault(f"{db}.{command['insert']}", []).extend(
                documents[len(refused) :]
            )
        reply: dict[str, Any] = {"n": len(documents) - len(refused), "ok": 1.0}
        if refused:
            reply["writeErrors"] = refused
        return reply
