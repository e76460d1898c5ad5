"""Each S3 request of a publish: a slot among ``--jobs``, a timeout from its bytes and the
bandwidth measured so far, and retries with backoff (:mod:`s3proxy.publish.bandwidth`).

What is retried: timeouts, connections that fail or break off, S3's 5xx and its throttling
answers (503 SlowDown, 429, ``RequestTimeout``). Anything else (403, 404, a bad digest) is an
answer about the request, which a retry would only repeat.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from s3proxy.exceptions import OriginError
from s3proxy.publish.bandwidth import Bandwidth, backoff

T = TypeVar("T")
#: Attempts per request, the first included.
ATTEMPTS = 6
_RETRIED_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"})


@dataclass(slots=True)
class Tally:
    """What one file's requests cost: attempts (retries included) and retries."""

    attempts: int = 0
    retries: int = 0


def retryable(exc: BaseException) -> bool:
    """Whether another attempt might succeed where ``exc`` ended this one."""
    if isinstance(exc, TimeoutError):
        return True
    if not isinstance(exc, OriginError):
        return False
    return (
        exc.status is None or exc.status >= 500 or exc.status == 429 or (exc.code in _RETRIED_CODES)
    )


class Requests:
    """At most ``jobs`` requests at once; each timed out and retried as the module says."""

    def __init__(
        self,
        jobs: int,
        bandwidth: Bandwidth | None = None,
        rng: random.Random | None = None,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.jobs = jobs
        self.bandwidth = bandwidth or Bandwidth()
        self._rng = rng or random.Random()
        self._attempts = attempts
        self._slots = asyncio.Semaphore(jobs)
        #: Bytes carried by the requests that succeeded.
        self.sent = 0

    async def call(self, nbytes: int, make: Callable[[], Awaitable[T]], tally: Tally) -> T:
        """``await make()`` (a fresh request each attempt) carrying ``nbytes``; raises the last
        attempt's :class:`~s3proxy.exceptions.OriginError` or TimeoutError."""
        attempt = 0
        while True:
            attempt += 1
            tally.attempts += 1
            async with self._slots:
                started = time.monotonic()
                try:
                    async with asyncio.timeout(self.bandwidth.timeout(nbytes)):
                        result = await make()
                except (OriginError, TimeoutError) as exc:
                    if attempt >= self._attempts or not retryable(exc):
                        raise
                else:
                    self.bandwidth.measured(nbytes, time.monotonic() - started)
                    self.sent += nbytes
                    return result
            tally.retries += 1
            await asyncio.sleep(backoff(attempt, self._rng))  # outside the slot
