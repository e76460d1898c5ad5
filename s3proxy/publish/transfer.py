"""One file into one object: a single PUT below the threshold, else a multipart upload whose
parts go up in parallel, each read from disk while it is sent (:class:`FileSlice`), so memory
does not grow with the file or the part size.

Nothing half-sent is visible: a PUT carries ``Content-MD5`` and S3 stores all of it or none; a
multipart upload is invisible until CompleteMultipartUpload, which is only sent when every
part's MD5 (read at send time) adds up to the multipart ETag of the file as it was planned, so
a file that changed while it was sent is aborted and reported instead of published half-new.

Resuming: a multipart upload's id is kept in the state file (:mod:`s3proxy.publish.state`)
from its creation to its completion. A rerun that finds the same file (MD5, part size) asks
S3 which parts it has (ListParts) and sends only the others.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import time
from dataclasses import dataclass
from typing import Any

from s3proxy.exceptions import OriginError, PublishError
from s3proxy.publish.bucket import Bucket
from s3proxy.publish.plan import MD5_METADATA, THRESHOLD, LocalFile, part_count, part_size
from s3proxy.publish.requests import Requests, Tally
from s3proxy.publish.state import JsonFile


class FileSlice(io.RawIOBase):
    """``length`` bytes of the file at ``path`` from ``offset``: a seekable, readable stream
    that botocore sizes and aiohttp reads (in its executor) as it sends."""

    def __init__(self, path: str, offset: int, length: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._offset, self._length, self._position = offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._length - self._position)
        if wanted <= 0:
            return 0
        data = os.pread(self._fd, wanted, self._offset + self._position)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + position)
        return self._position

    def tell(self) -> int:
        return self._position

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def md5_of(path: str, offset: int, length: int) -> bytes:
    """The MD5 of ``length`` bytes of the file at ``path`` from ``offset`` (blocking)."""
    digest = hashlib.md5(usedforsecurity=False)
    with FileSlice(path, offset, length) as part:
        while chunk := part.read(1024 * 1024):
            digest.update(chunk)
    return digest.digest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


@dataclass(slots=True)
class FileStats:
    """One file's publish, as a ``--stats`` line."""

    key: str
    bytes: int
    tally: Tally
    parts: int = 1
    resumed_parts: int = 0
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> dict[str, Any]:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else None
        return {
            "key": self.key,
            "bytes": self.bytes,
            "result": "failed" if self.error else "uploaded",
            "attempts": self.tally.attempts,
            "retries": self.tally.retries,
            "parts": self.parts,
            "resumed_parts": self.resumed_parts,
            "seconds": round(self.seconds, 4),
            "mb_per_s": round(rate, 3) if rate is not None else None,
            **({"error": self.error} if self.error else {}),
        }


def _message(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "S3 timed out on every attempt"
    if isinstance(exc, BaseExceptionGroup):
        return _message(exc.exceptions[0])
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return str(exc)


class Transfer:
    """Sends files to ``bucket`` through ``requests``, remembering multipart uploads in
    ``uploads`` (a :class:`JsonFile`: key -> id, md5, part size, start time)."""

    def __init__(self, bucket: Bucket, requests: Requests, uploads: JsonFile) -> None:
        self.bucket = bucket
        self.requests = requests
        self.uploads = uploads

    async def upload(self, file: LocalFile, headers: dict[str, str]) -> FileStats:
        """Publish ``file`` with ``headers``; the stats say how, and why not in their
        ``error`` when S3 failed after the retries, or the file changed or vanished while it
        was sent."""
        stats = FileStats(file.key, file.size, Tally())
        started = time.monotonic()
        try:
            if file.size < THRESHOLD:
                await self._put(file, headers, stats)
            else:
                await self._multipart(file, headers, stats)
        except* (OriginError, PublishError, TimeoutError, OSError) as group:
            stats.error = "; ".join(_message(exc) for exc in group.exceptions)
        finally:
            stats.seconds = time.monotonic() - started
        return stats

    async def _put(self, file: LocalFile, headers: dict[str, str], stats: FileStats) -> None:
        md5 = b64(bytes.fromhex(file.md5))
        meta = {"Metadata": {MD5_METADATA: file.md5}, **headers}

        async def put() -> str:
            with FileSlice(file.path, 0, file.size) as body:
                return await self.bucket.put(file.key, body, md5, **meta)

        try:
            await self.requests.call(file.size, put, stats.tally)
        except OriginError as exc:
            if exc.code == "BadDigest":
                raise PublishError(f"{file.key}: the file changed while it was sent") from None
            raise

    async def _multipart(self, file: LocalFile, headers: dict[str, str], stats: FileStats) -> None:
        part = part_size(file.size)
        count = stats.parts = part_count(file.size, part)
        upload_id, have = await self._resume(file, part, stats)
        if upload_id is None:
            meta = {"Metadata": {MD5_METADATA: file.md5}, **headers}
            upload_id = await self.requests.call(
                0, lambda: self.bucket.create_upload(file.key, **meta), stats.tally
            )
            self.uploads.data[file.key] = {
                "id": upload_id,
                "md5": file.md5,
                "part": part,
                "started": time.time(),
            }
            await asyncio.to_thread(self.uploads.saver())
        digests: list[bytes] = [b""] * count
        numbers = iter(range(1, count + 1))

        async def sender() -> None:
            for number in numbers:
                offset = (number - 1) * part
                length = min(part, file.size - offset)
                # The part's MD5 from the digest pass (its Content-MD5: a part that changed
                # since is refused as BadDigest), else read now.
                digest = file.part_md5(number)
                if digest is None:
                    digest = await asyncio.to_thread(md5_of, file.path, offset, length)
                digests[number - 1] = digest
                if have.get(number) == (length, f'"{digest.hex()}"'):
                    stats.resumed_parts += 1
                    continue
                await self._part(file, upload_id, number, offset, length, digest, stats)

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.requests.jobs, count)):
                group.create_task(sender())
        combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        if f'"{combined}-{count}"' != file.multipart_etag:
            await self._forget(file.key, upload_id)
            raise PublishError(f"{file.key}: the file changed while it was sent")
        etags = [f'"{d.hex()}"' for d in digests]
        await self._complete(file, upload_id, etags, stats)

    async def _part(
        self,
        file: LocalFile,
        upload_id: str,
        number: int,
        offset: int,
        length: int,
        digest: bytes,
        stats: FileStats,
    ) -> None:
        async def send() -> str:
            with FileSlice(file.path, offset, length) as body:
                return await self.bucket.upload_part(file.key, upload_id, number, body, b64(digest))

        try:
            await self.requests.call(length, send, stats.tally)
        except OriginError as exc:
            if exc.code == "BadDigest":
                await self._forget(file.key, upload_id)
                raise PublishError(f"{file.key}: the file changed while it was sent") from None
            raise

    async def _complete(
        self, file: LocalFile, upload_id: str, etags: list[str], stats: FileStats
    ) -> None:
        try:
            await self.requests.call(
                0, lambda: self.bucket.complete(file.key, upload_id, etags), stats.tally
            )
        except OriginError as exc:
            # A retry of a completion whose answer was lost finds the upload gone: the object
            # with this content is what tells that it was done.
            if exc.code != "NoSuchUpload" or not await self._is_there(file):
                raise
        self.uploads.data.pop(file.key, None)
        await asyncio.to_thread(self.uploads.saver())

    async def _is_there(self, file: LocalFile) -> bool:
        try:
            found, meta = await self.bucket.head(file.key)
        except OriginError:
            return False
        return found.size == file.size and meta.get(MD5_METADATA) == file.md5

    async def _resume(
        self, file: LocalFile, part: int, stats: FileStats
    ) -> tuple[str | None, dict[int, tuple[int, str]]]:
        """The upload to continue for ``file`` and the parts S3 has of it, if there is one."""
        entry = self.uploads.data.get(file.key)
        if not isinstance(entry, dict):
            return None, {}
        upload_id = str(entry.get("id"))
        if entry.get("md5") != file.md5 or entry.get("part") != part:
            await self._forget(file.key, upload_id)  # another version of the file
            return None, {}
        try:
            have = await self.requests.call(
                0, lambda: self.bucket.parts(file.key, upload_id), stats.tally
            )
        except OriginError as exc:
            if exc.status != 404:  # NoSuchUpload: completed, aborted or expired
                raise
            self.uploads.data.pop(file.key, None)
            return None, {}
        return upload_id, have

    async def _forget(self, key: str, upload_id: str) -> None:
        """Abort the upload (best effort: a stale one is also what ``--abort-stale`` is for)
        and drop it from the state."""
        try:
            await self.bucket.abort(key, upload_id)
        except OriginError:
            pass
        self.uploads.data.pop(key, None)
        await asyncio.to_thread(self.uploads.saver())
