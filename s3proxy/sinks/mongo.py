"""MongoDB sink: one document per request, as the original proxy wrote them.

The only module that imports ``pymongo`` and ``bson``. It writes with PyMongo's native asyncio
client (:class:`pymongo.AsyncMongoClient`) in batches: one unordered ``insert`` command per
batch the :class:`~s3proxy.sinks.base.SinkRunner` hands it.

The document keeps the original's field names and BSON types, so existing queries and
dashboards keep working::

    method       string    GET / HEAD
    resource     string    the request path
    mimeType     string    the response's content type
    ipaddress    string    the client address (X-Real-IP, X-Forwarded-For, peer)
    size         int64     response body bytes
    time         int64     nanoseconds from request to last byte (measured in µs)
    status       int32     HTTP status
    compressed   bool      the body was gzip-encoded
    timestamp    int64     nanoseconds since the epoch at the start of the request
    created      date      the same instant, as a BSON datetime (millisecond precision)
    location     document  GeoIP fields, only when the enricher found some
                           (see :func:`s3proxy.sinks.geoip.flatten`)

plus two of ours: ``cache`` (string: the cache outcome, as in the access log) and
``originBytes`` (int64: bytes fetched from S3 for this request).

:meth:`MongoSink.open` creates the four single-field ascending indexes the original created
(``method``, ``resource``, ``status``, ``timestamp``); creating an index that exists is a
no-op on the server, and one the server refuses is logged, not fatal. The original's last
version wrote unacknowledged (``w: 0``); we keep acknowledged writes (``w: 1``), so a batch
the server did not take is counted as dropped instead of vanishing.

Short server-selection and connect timeouts (2 s unless the URI sets them) make a dead server
fail a batch quickly, so the runner drops it, backs off and reconnects; requests never wait.
"""

from __future__ import annotations

from typing import Any

from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64
from pymongo import ASCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from s3proxy import logging as log
from s3proxy.record import RequestRecord

_logger = log.get_logger("s3proxy.sinks.mongo")

#: The original proxy's indexes, one ascending key each.
INDEXED_FIELDS = ("method", "resource", "status", "timestamp")

#: Client options applied unless the URI sets them (PyMongo lets keyword arguments override
#: the URI, so we only fill gaps). Milliseconds, as in MongoDB's connection string.
DEFAULT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 2_000,
    "connectTimeoutMS": 2_000,
    "socketTimeoutMS": 10_000,
    "appname": "s3proxy",
}


def document(record: RequestRecord) -> dict[str, Any]:
    """The BSON document for ``record``, in the original proxy's shape (see module doc).
    ``location`` is the record's own dict, shared, not copied: BSON encoding only reads it."""
    micros = round(record.timestamp * 1_000_000)
    doc: dict[str, Any] = {
        "method": record.method,
        "resource": record.resource,
        "mimeType": record.mime_type,
        "ipaddress": record.ip,
        "size": Int64(record.size),
        "time": Int64(record.duration_us * 1_000),
        "status": record.status,
        "compressed": record.compressed,
        "timestamp": Int64(micros * 1_000),
        # BSON dates hold milliseconds; truncating here keeps `created` equal to what is
        # stored. DatetimeMS is the BSON date itself: 0.1 µs against 0.5 for a datetime.
        "created": DatetimeMS(micros // 1_000),
        "cache": record.cache,
        "originBytes": Int64(record.origin_bytes),
    }
    if record.location:
        doc["location"] = record.location
    return doc


def uri_options(uri: str) -> set[str]:
    """The option names (lower case) set in a connection string's query part."""
    _, _, query = uri.partition("?")
    return {part.split("=", 1)[0].lower() for part in query.split("&") if part}


class WriteRefused(Exception):
    """The server answered an insert with write errors."""


class MongoSink:
    """Writes records to ``database.collection`` at ``uri``. See the module docstring."""

    name = "mongo"

    def __init__(self, uri: str, database: str, collection: str) -> None:
        self.uri = uri
        self.database = database
        self.collection_name = collection
        given = uri_options(uri)
        self.options = {k: v for k, v in DEFAULT_OPTIONS.items() if k.lower() not in given}
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._database: AsyncDatabase[dict[str, Any]] | None = None

    async def open(self) -> None:
        """Connect and create the indexes; raises (and leaves nothing open) when the server
        cannot be reached. A server that refuses the indexes (a user allowed to insert but
        not to index) is logged and written to all the same, as the original did."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(self.uri, **self.options)
        try:
            database = client[self.database]
            await self._index(database[self.collection_name])
        except BaseException:
            await client.close()
            raise
        self._client, self._database = client, database

    async def _index(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        try:
            await collection.create_indexes(
                [IndexModel([(field, ASCENDING)]) for field in INDEXED_FIELDS]
            )
        except OperationFailure as exc:
            _logger.warning(
                "mongo_index_failed",
                collection=f"{self.database}.{self.collection_name}",
                code=exc.code,
                error=str(exc),
            )

    async def write(self, records: list[RequestRecord]) -> None:
        """Insert ``records`` with one unordered ``insert`` command; raises if the server
        refused it or any document in it (then the whole batch counts as dropped, though
        an unordered insert keeps the documents it could take)."""
        if self._database is None:
            raise RuntimeError("MongoSink.write before open")
        # The insert command itself, not insert_many: the server gives each document its
        # _id, where PyMongo would make them one by one in Python (~3 µs a document more).
        # PyMongo's C encoder turns the whole command, documents included, into BSON.
        reply = await self._database.command(
            {
                "insert": self.collection_name,
                "documents": [document(record) for record in records],
                "ordered": False,
            }
        )
        errors = reply.get("writeErrors")
        if errors:
            raise WriteRefused(
                f"{len(errors)} of {len(records)} documents refused, first: "
                f"{errors[0].get('errmsg', errors[0])}"
            )

    async def close(self) -> None:
        client, self._client, self._database = self._client, None, None
        if client is not None:
            await client.close()
