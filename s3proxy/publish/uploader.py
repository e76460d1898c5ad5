"""A streaming uploader for applications: bytes written in pieces become one object.

    async with Bucket(origin_config) as bucket:
        async with Uploader(bucket, "exports/report.csv", ContentType="text/csv") as upload:
            for row in rows:
                await upload.write(row)
            await upload.complete()

Below the threshold the object is one PUT at :meth:`Uploader.complete`; once the bytes
written pass it, a multipart upload starts and each full part is sent as soon as it is
buffered, so memory holds at most one part plus the last write. Every request is timed out
and retried as :mod:`s3proxy.publish.requests` says. The object appears only at
:meth:`~Uploader.complete`; :meth:`~Uploader.abort`, or leaving the ``async with`` block
without completing (an exception included), discards everything sent.

The part size is fixed when the upload starts (the total is not known yet), so it bounds
the object to ``part_size * 10,000`` bytes (80 GB with the default 8 MiB).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from s3proxy.exceptions import PublishError
from s3proxy.publish.bucket import Bucket
from s3proxy.publish.plan import DEFAULT_PART, MAX_PARTS, MIN_PART, THRESHOLD
from s3proxy.publish.requests import Requests, Tally


def _md5(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class Uploader:
    """Writes into the object ``key`` of ``bucket``; ``headers`` are PutObject's
    (``ContentType``, ``CacheControl``, ``Metadata``...)."""

    def __init__(
        self,
        bucket: Bucket,
        key: str,
        *,
        requests: Requests | None = None,
        threshold: int = THRESHOLD,
        part_size: int = DEFAULT_PART,
        **headers: Any,
    ) -> None:
        if part_size < MIN_PART or threshold < part_size:
            raise ValueError("part_size must be at least 5 MiB and at most the threshold")
        self.bucket, self.key = bucket, key
        self.requests = requests or Requests(1)
        self.tally = Tally()
        self._threshold, self._part = threshold, part_size
        self._headers = headers
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self._state = "open"

    async def write(self, data: bytes) -> None:
        """Add ``data`` to the object, sending full parts once past the threshold."""
        if self._state != "open":
            raise PublishError(f"{self.key}: write after the upload was {self._state}")
        self._buffer += data
        if self._upload_id is None and len(self._buffer) < self._threshold:
            return
        while len(self._buffer) >= self._part:
            await self._send_part(bytes(self._buffer[: self._part]))
            del self._buffer[: self._part]

    async def complete(self) -> str:
        """Make the object visible with everything written; returns its ETag."""
        if self._state != "open":
            raise PublishError(f"{self.key}: complete after the upload was {self._state}")
        body = bytes(self._buffer)
        if self._upload_id is None:
            etag = await self.requests.call(
                len(body),
                lambda: self.bucket.put(self.key, body, _md5(body), **self._headers),
                self.tally,
            )
        else:
            if body or not self._etags:
                await self._send_part(body)
            upload_id, etags = self._upload_id, list(self._etags)
            etag = await self.requests.call(
                0, lambda: self.bucket.complete(self.key, upload_id, etags), self.tally
            )
        self._buffer.clear()
        self._state = "completed"
        return etag

    async def abort(self) -> None:
        """Discard the upload: nothing written becomes visible."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id = self._upload_id
            await self.requests.call(0, lambda: self.bucket.abort(self.key, upload_id), self.tally)

    async def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = await self.requests.call(
                0, lambda: self.bucket.create_upload(self.key, **self._headers), self.tally
            )
        number = len(self._etags) + 1
        if number > MAX_PARTS:
            raise PublishError(f"{self.key}: more than {MAX_PARTS} parts of {self._part} bytes")
        upload_id = self._upload_id
        etag = await self.requests.call(
            len(data),
            lambda: self.bucket.upload_part(self.key, upload_id, number, data, _md5(data)),
            self.tally,
        )
        self._etags.append(etag)

    async def __aenter__(self) -> Uploader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.abort()  # a no-op after complete()
