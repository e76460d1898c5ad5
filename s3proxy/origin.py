"""The S3 origin: the only module that imports aiobotocore and botocore.

Every botocore/aiohttp exception is translated here into :mod:`s3proxy.exceptions`; an expected
``304 Not Modified`` on revalidation is a return value (:data:`NOT_MODIFIED`), not an error.

How long a call (GetObject; ListObjectsV2 for listings) may take, how hard S3 is asked:

- ``--connect-timeout`` and ``--read-timeout`` bound each attempt (botocore's);
  ``--origin-deadline`` the whole call, retries and backoff included (an ``asyncio.timeout``).
- Retries run in botocore's own loop, with its standard-mode conditions and jittered backoff, up
  to :data:`RETRY_ATTEMPTS` attempts; our ``needs-retry`` hook lets one happen only if it fits in
  the deadline, the retry budget has a token (:mod:`s3proxy.retries`) and the breaker is closed.
- A circuit breaker (:mod:`s3proxy.breaker`): after :data:`BREAKER_THRESHOLD` failed calls in a
  row, calls fail at once without asking S3, with the kind of the last failure (timeout: 504, else
  502), until one probe a :data:`BREAKER_COOLDOWN` later finds S3 answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.retries.standard import AioStandardRetryConditions
from aiobotocore.session import get_session
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.retries.standard import ExponentialBackoff, RetryEventAdapter
from botocore.utils import parse_timestamp

from s3proxy import __version__
from s3proxy.breaker import Circuit, Permit
from s3proxy.conditional import parse_http_date
from s3proxy.config import OriginConfig
from s3proxy.exceptions import (
    ObjectChanged,
    ObjectNotFound,
    OriginBodyError,
    OriginError,
    OriginTimeout,
    timing_outcome,
)
from s3proxy.listing import FolderPage
from s3proxy.meta import ObjectMeta, ProbeAnswer, md5_verifiable
from s3proxy.record import Timing
from s3proxy.retries import CALL, Call, RetryBudget, retry_fits

#: Attempts per GET (the first included) when no stale copy could stand in, at most: the
#: deadline and the retry budget may allow fewer.
RETRY_ATTEMPTS = 3
#: Failed calls in a row that open the circuit breaker.
BREAKER_THRESHOLD = 5
#: Seconds the breaker stays open before one call probes S3.
BREAKER_COOLDOWN = 5.0
#: Bytes asked of the body stream at a time.
CHUNK_SIZE = 256 * 1024
#: GetObject timings kept between two hand-overs to the metrics sinks, at most.
MAX_TIMINGS = 10_000


class Revalidated(enum.Enum):
    NOT_MODIFIED = "not_modified"


#: What :meth:`Origin.get` returns when ``if_none_match`` still matches the stored object.
NOT_MODIFIED = Revalidated.NOT_MODIFIED


def s3_answer(exc: ClientError) -> tuple[int | None, str]:
    """S3's HTTP status and error code (``NoSuchKey``, ``SlowDown``) in a ClientError."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status, str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translate_errors(key: str) -> Iterator[None]:
    """Map botocore/aiohttp failures to our exception tree (no S3 XML, bucket or request id
    travels further than the log line the caller writes)."""
    try:
        yield
    except ClientError as exc:
        status, code = s3_answer(exc)
        # Without s3:ListBucket, S3 answers 403 for a key that does not exist.
        if code in ("NoSuchKey", "404", "NotFound", "AccessDenied", "403") or status in (404, 403):
            raise ObjectNotFound(key) from None
        raise OriginError(f"S3 answered {status or code} ({code})", status) from None
    except (ConnectTimeoutError, ReadTimeoutError, TimeoutError) as exc:
        raise OriginTimeout(f"S3 timed out: {type(exc).__name__}") from None
    except (EndpointConnectionError, aiohttp.ClientError) as exc:
        raise OriginError(f"cannot reach S3: {type(exc).__name__}") from None
    except BotoCoreError as exc:
        raise OriginError(f"S3 request failed: {type(exc).__name__}") from None


@dataclass(slots=True)
class OriginObject:
    """An object whose headers have arrived. Its owner must iterate :meth:`chunks` to the end
    or call :meth:`close` (an unread body would otherwise be dropped from the pool)."""

    key: str
    meta: ObjectMeta
    _body: Any
    _md5: Any = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the body; raise :class:`OriginBodyError` if it breaks off, runs long, or does
        not match the single-part ETag (an MD5 of the content). The last chunk is held back
        until those checks pass, so a consumer that has received every byte has received
        verified bytes: a bad body ends in an error, never in a complete-looking response."""
        received = 0
        held: bytes | None = None
        try:
            while True:
                try:
                    chunk = await self._body.read(CHUNK_SIZE)
                # BotoCoreError: ResponseStreamingError, ReadTimeoutError, IncompleteReadError.
                except (aiohttp.ClientError, TimeoutError, BotoCoreError) as exc:
                    raise OriginBodyError(f"body broke off: {type(exc).__name__}") from None
                if not chunk:
                    break
                received += len(chunk)
                if self._md5 is not None:
                    self._md5.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        finally:
            self.close()
        if received != self.meta.size:
            raise OriginBodyError(f"body of {received} bytes, expected {self.meta.size}")
        if self._md5 is not None and f'"{self._md5.hexdigest()}"' != self.meta.etag:
            raise OriginBodyError("body does not match its ETag")
        if held is not None:
            yield held

    def close(self) -> None:
        self._body.close()


def _timestamp(value: Any) -> datetime:
    """botocore's timestamp parser: HTTP-dates in 6 µs, others by its own (dateutil: 200 µs)."""
    epoch = parse_http_date(value) if type(value) is str else None
    return parse_timestamp(value) if epoch is None else datetime.fromtimestamp(epoch, UTC)


def s3_client(session: Any, config: OriginConfig, aio_config: AioConfig) -> Any:
    """The S3 client of ``config``'s endpoint and credentials (an async context manager)."""
    factory = session.get_component("response_parser_factory")  # botocore documents defaults
    factory.set_parser_defaults(timestamp_parser=_timestamp)
    # endpoint_url=None lets botocore read AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL; no
    # key/secret means the standard credential chain (env, profile, role, web identity).
    return session.create_client(
        "s3",
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.key,
        aws_secret_access_key=config.secret,
        config=aio_config,
    )


class S3Client:
    """One pooled S3 client for one server (an endpoint and its credentials; the command line's
    S3 options, or a ``[servers.NAME]`` table): its connection pool, bounded by
    ``s3_max_connections``, its circuit breaker and retry budget are shared by every bucket read
    through it (:meth:`bucket`). Open with ``async with S3Client(config)`` (no bucket used)."""

    def __init__(self, config: OriginConfig) -> None:
        self.config = config
        self.closed = False
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        #: Timings of GetObject calls since :meth:`take_timings`; ``None``: not kept.
        self._timings: list[Timing] | None = None
        self.circuit = Circuit(BREAKER_THRESHOLD, BREAKER_COOLDOWN)
        self.budget = RetryBudget()
        self._retry_events = RetryEventAdapter()
        self._retry_conditions = AioStandardRetryConditions(max_attempts=RETRY_ATTEMPTS)
        self._backoff = ExponentialBackoff()

    def bucket(self, name: str) -> Origin:
        """``name`` on this server, as a site reads it."""
        return Origin(self, name)

    def keep_timings(self) -> None:
        """From now on, time every GetObject for :meth:`take_timings` (for Prometheus)."""
        self._timings = []

    def take_timings(self) -> list[Timing]:
        """``(outcome, seconds)`` of each GetObject since the last call, at most
        :data:`MAX_TIMINGS` of them. Outcomes: ``ok``, ``not_modified``, ``not_found``,
        ``changed`` (If-Match failed), ``timeout``, ``error``."""
        timings = self._timings or []
        if self._timings is not None:
            self._timings = []
        return timings

    async def __aenter__(self) -> S3Client:
        # botocore's own retry handler gets one attempt in all, so it never retries; ours, on the
        # same needs-retry event of botocore's retry loop, decides with botocore's standard
        # conditions and backoff plus the deadline, the budget and the breaker.
        self._client = await self._open_client(get_session())
        events = self._client.meta.events
        for operation in ("GetObject", "ListObjectsV2"):
            events.register(f"before-send.s3.{operation}", self._attempt_starts)
            events.register(f"needs-retry.s3.{operation}", self._needs_retry)
        return self

    async def _open_client(self, session: Any) -> Any:
        config = self.config
        aio_config = AioConfig(
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            # total_max_attempts counts the first attempt; botocore's max_attempts does not (its
            # max_attempts=3 meant four attempts: the 18 s a blackholed S3 used to cost).
            retries={"total_max_attempts": 1, "mode": "standard"},
            # aiohttp's connector makes the requests past this many wait for a connection
            # (no timeout of its own: --origin-deadline bounds the wait).
            max_pool_connections=config.s3_max_connections,
            s3={"addressing_style": config.addressing_style},
            # A User-Agent made once: botocore rebuilds its own twice a call (0.2 ms).
            user_agent=f"s3proxy/{__version__} {session.user_agent()}",
        )
        return await self._stack.enter_async_context(s3_client(session, config, aio_config))

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client and its pool (requests still using it fail)."""
        self.closed = True
        await self._stack.aclose()

    def _attempt_starts(self, **kwargs: Any) -> None:
        """botocore's ``before-send`` hook: an attempt's request is about to go out."""
        call = CALL.get()
        if call is not None:
            call.attempt_started = time.monotonic()

    async def _needs_retry(self, **kwargs: Any) -> float | None:
        """botocore's ``needs-retry`` hook: the seconds to back off before another attempt of
        this task's S3 call, or ``None`` for no retry (see the module docstring)."""
        call = CALL.get()
        if call is None or not call.retry:
            return None
        context = self._retry_events.create_retry_context(**kwargs)
        if not await self._retry_conditions.is_retryable(context):
            return None
        now = time.monotonic()
        delay: float = self._backoff.delay_amount(context)
        if not retry_fits(delay, now - call.attempt_started, call.deadline - now):
            return None
        if not self.circuit.closed or not self.budget.withdraw():
            return None
        return delay

    async def get(
        self,
        bucket: str,
        key: str,
        *,
        if_none_match: str | None = None,
        byte_range: str | None = None,
        if_match: str | None = None,
        retry: bool = True,
    ) -> OriginObject | Revalidated:
        """GetObject ``key`` of ``bucket``. With ``if_none_match`` (a stored ETag), return
        :data:`NOT_MODIFIED` when S3 answers 304. ``byte_range`` (``bytes=a-b``) asks for part
        of the object: the result's ``meta.size`` is then the part's length. Raises
        :class:`ObjectNotFound`, :class:`OriginTimeout` or :class:`OriginError`."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if if_none_match:
            params["IfNoneMatch"] = if_none_match
        if byte_range:
            params["Range"] = byte_range
        if if_match:
            params["IfMatch"] = if_match
        permit = self.circuit.permit()
        started, outcome = time.perf_counter(), "error"
        try:
            response = await self._call("get_object", params, permit, retry)
            outcome = "ok"
        except OriginError as exc:
            if if_none_match and exc.status == 304:
                outcome = "not_modified"
                return NOT_MODIFIED
            if if_match and exc.status == 412:
                outcome = "changed"
                raise ObjectChanged(key) from None
            outcome = timing_outcome(exc)
            raise
        finally:
            timings = self._timings
            if timings is not None and len(timings) < MAX_TIMINGS:
                timings.append((outcome, time.perf_counter() - started))
        verify = md5_verifiable(response) and not byte_range
        md5 = hashlib.md5(usedforsecurity=False) if verify else None
        return OriginObject(key, ObjectMeta.from_response(response), response["Body"], md5)

    async def presign_get(self, bucket: str, key: str, seconds: int) -> str:
        """A URL that GETs ``key`` of ``bucket`` for ``seconds`` without credentials."""
        params = {"Bucket": bucket, "Key": key}  # signed here: no request to S3
        return str(await self._client.generate_presigned_url("get_object", params, seconds))

    @property
    def endpoint_url(self) -> str:
        """The endpoint the client sends to: the flag's, ``AWS_ENDPOINT_URL*``'s, or AWS's."""
        return str(self._client.meta.endpoint_url)

    async def probe(self, bucket: str, key: str) -> ProbeAnswer:
        """GetObject the first byte of ``key`` in ``bucket``, once (no retries), and say what
        S3 answered. Never raises for S3's, the network's or the credentials' failures."""
        try:
            # Outside get(), no call context: the retry hook makes no retry.
            response = await self._client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
        except ClientError as exc:
            return ProbeAnswer(*s3_answer(exc))
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            return ProbeAnswer(None, type(exc).__name__)
        response["Body"].close()
        return ProbeAnswer(response["ResponseMetadata"]["HTTPStatusCode"])

    async def list_folder(
        self, bucket: str, prefix: str, token: str | None, max_keys: int
    ) -> FolderPage:
        """One page of ListObjectsV2 of ``prefix`` in ``bucket`` by ``/``, after ``token``,
        through the pool, deadline, retries and breaker as a GetObject. Raises
        :class:`ObjectNotFound` (no such bucket, or no s3:ListBucket) or another OriginError."""
        params: dict[str, Any] = dict(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=max_keys)
        if token is not None:
            params["ContinuationToken"] = token
        response = await self._call("list_objects_v2", params, self.circuit.permit(), True)
        return FolderPage.from_response(response, prefix)

    async def _call(
        self, operation: str, params: dict[str, Any], permit: Permit, retry: bool
    ) -> dict[str, Any]:
        """``operation`` within the deadline, reported to the breaker; raises ours."""
        now = time.monotonic()
        deadline = self.config.origin_deadline
        token = CALL.set(Call(retry, now + deadline, now))
        try:
            with _translate_errors(params.get("Key") or params["Prefix"]):
                self.budget.deposit()
                async with asyncio.timeout(deadline):
                    response: dict[str, Any] = await getattr(self._client, operation)(**params)
        except OriginError as exc:
            self.circuit.report(exc, permit)
            raise
        except BaseException:  # cancelled: no verdict on S3's health
            self.circuit.report(None, permit, abandoned=True)
            raise
        finally:
            CALL.reset(token)
        self.circuit.report(None, permit)
        return response


class Origin:
    """One bucket of an :class:`S3Client`, what a site's read-through fills from; ``async
    with Origin.open(config)`` makes one with a client of its own (a check)."""

    __slots__ = ("bucket", "client")

    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, config: OriginConfig) -> AsyncIterator[Origin]:
        """The bucket of ``config`` through a client of its own, closed on exit."""
        assert config.bucket is not None, "a bucket to open"
        async with S3Client(config) as client:
            yield client.bucket(config.bucket)

    @property
    def endpoint_url(self) -> str:
        return self.client.endpoint_url

    async def get(self, key: str, **options: Any) -> OriginObject | Revalidated:
        """:meth:`S3Client.get` of ``key`` in this bucket, with its keyword options."""
        return await self.client.get(self.bucket, key, **options)

    async def probe(self, key: str) -> ProbeAnswer:
        """:meth:`S3Client.probe` of ``key`` in this bucket."""
        return await self.client.probe(self.bucket, key)
