"""The write side of S3 for ``s3proxy publish``: list, put, multipart, delete.

Besides :mod:`s3proxy.origin` (the serving path's read-only client, with its breaker and
retry budget), the one module that imports aiobotocore/botocore. Each method is one S3 call,
made once: the caller (:mod:`s3proxy.publish.transfer`) owns timeouts and retries, so
botocore's own retries are off. Every botocore/aiohttp failure is translated here into
:class:`~s3proxy.exceptions.OriginError` (with S3's status and code when it answered) or
:class:`~s3proxy.exceptions.OriginTimeout`.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    ReadTimeoutError,
)

from s3proxy.config import OriginConfig
from s3proxy.exceptions import OriginError, OriginTimeout
from s3proxy.origin import s3_answer, s3_client
from s3proxy.publish.plan import RemoteObject

#: Keys one DeleteObjects call may name (S3's limit).
DELETE_BATCH = 1000


@contextlib.contextmanager
def translate() -> Iterator[None]:
    """botocore/aiohttp failures -> our exception tree, S3's code and status kept."""
    try:
        yield
    except ClientError as exc:
        status, code = s3_answer(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        raise OriginError(f"S3 answered {status} {code}: {message}", status, code) from None
    except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
        raise OriginTimeout(f"S3 timed out: {type(exc).__name__}") from None
    except NoCredentialsError:
        raise OriginError("no AWS credentials found (--key/--secret, or the chain)") from None
    except (aiohttp.ClientError, BotoCoreError, OSError) as exc:
        raise OriginError(f"cannot reach S3: {type(exc).__name__}: {exc}") from None


class Bucket:
    """One bucket's client for publishing; open with ``async with Bucket(config, pool)``."""

    def __init__(self, config: OriginConfig, pool: int = 16) -> None:
        assert config.bucket is not None, "publish requires --bucket"
        self.name: str = config.bucket
        self._config = config
        self._pool = pool
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def __aenter__(self) -> Bucket:
        config = self._config
        aio_config = AioConfig(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # ours: transfer.py
            max_pool_connections=self._pool,
            s3={"addressing_style": config.addressing_style},
            # Content-MD5 is sent with every body; a CRC would read each body once more.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with translate():
            client = s3_client(get_session(), config, aio_config)
            self._client = await self._stack.enter_async_context(client)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def listing(self, prefix: str) -> dict[str, RemoteObject]:
        """Every object under ``prefix``: key -> size and ETag."""
        found: dict[str, RemoteObject] = {}
        with translate():
            pages = self._client.get_paginator("list_objects_v2")
            async for page in pages.paginate(Bucket=self.name, Prefix=prefix):
                for item in page.get("Contents", ()):
                    found[item["Key"]] = RemoteObject(int(item["Size"]), str(item["ETag"]))
        return found

    async def head(self, key: str) -> tuple[RemoteObject, dict[str, str]]:
        """The object's size and ETag, and its user metadata (``x-amz-meta-*`` without the
        prefix)."""
        with translate():
            response = await self._client.head_object(Bucket=self.name, Key=key)
        found = RemoteObject(int(response["ContentLength"]), str(response["ETag"]))
        return found, dict(response.get("Metadata") or {})

    async def put(self, key: str, body: Any, md5: str, **headers: Any) -> str:
        """PutObject with ``Content-MD5`` (base64 ``md5``); returns the ETag."""
        with translate():
            response = await self._client.put_object(
                Bucket=self.name, Key=key, Body=body, ContentMD5=md5, **headers
            )
        return str(response["ETag"])

    async def create_upload(self, key: str, **headers: Any) -> str:
        """CreateMultipartUpload; returns the upload id."""
        with translate():
            response = await self._client.create_multipart_upload(
                Bucket=self.name, Key=key, **headers
            )
        return str(response["UploadId"])

    async def upload_part(self, key: str, upload_id: str, number: int, body: Any, md5: str) -> str:
        """UploadPart with ``Content-MD5``; returns the part's ETag."""
        with translate():
            response = await self._client.upload_part(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=md5,
            )
        return str(response["ETag"])

    async def parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """ListParts: part number -> (size, ETag) of the parts uploaded so far."""
        found: dict[int, tuple[int, str]] = {}
        with translate():
            pages = self._client.get_paginator("list_parts")
            async for page in pages.paginate(Bucket=self.name, Key=key, UploadId=upload_id):
                for part in page.get("Parts", ()):
                    found[int(part["PartNumber"])] = (int(part["Size"]), str(part["ETag"]))
        return found

    async def complete(self, key: str, upload_id: str, etags: list[str]) -> str:
        """CompleteMultipartUpload of parts 1..n with ``etags``; returns the object's ETag."""
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, 1)]
        with translate():
            response = await self._client.complete_multipart_upload(
                Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        return str(response["ETag"])

    async def abort(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload (its parts stop costing storage)."""
        with translate():
            await self._client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)

    async def uploads(self, prefix: str) -> AsyncIterator[tuple[str, str, datetime.datetime]]:
        """The multipart uploads in progress under ``prefix``: (key, upload id, initiated)."""
        with translate():
            pages = self._client.get_paginator("list_multipart_uploads")
            async for page in pages.paginate(Bucket=self.name, Prefix=prefix):
                for upload in page.get("Uploads", ()):
                    yield str(upload["Key"]), str(upload["UploadId"]), upload["Initiated"]

    async def delete(self, keys: list[str]) -> None:
        """DeleteObjects of at most :data:`DELETE_BATCH` keys; raises if any was not deleted."""
        objects = [{"Key": key} for key in keys]
        with translate():
            response = await self._client.delete_objects(
                Bucket=self.name, Delete={"Objects": objects, "Quiet": True}
            )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise OriginError(
                f"S3 did not delete {len(errors)} objects ({first.get('Key')}: "
                f"{first.get('Code')})",
                None,
                str(first.get("Code", "")),
            )
