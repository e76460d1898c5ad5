"""Pure: whether a failed GetObject may be tried again (botocore decides *whether* an error
is retryable and how long to back off; these rules decide whether we can afford it).

Retries help with a blip and must never make an outage worse, hence two rules:

- **the deadline**: a retry is made only if it could take as long as the attempt that failed
  and still end before the request's deadline (:func:`retry_fits`). An S3 that never answers
  costs a client one read timeout, not three plus backoff.
- **the budget** (as Finagle's ``RetryBudget`` and gRPC's retry throttling): every call
  deposits ``ratio`` of a token, every retry spends a whole one, and at most ``capacity``
  tokens are saved (:class:`RetryBudget`). However long an outage lasts, S3 sees at most
  ``(1 + ratio)`` times the calls it would see without retries, plus ``capacity``.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RetryBudget:
    """Tokens for retries, earned by calls (see the module docstring)."""

    ratio: float = 0.1
    capacity: float = 10.0
    tokens: float = 10.0

    def deposit(self) -> None:
        """A call was made (its first attempt)."""
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def withdraw(self) -> bool:
        """Spend a token on one retry; ``False`` (and nothing spent) if there is none."""
        # A hair below 1 counts as 1: ten deposits of 0.1 do not sum to exactly 1.0.
        if self.tokens < 1 - 1e-9:
            return False
        self.tokens = max(0.0, self.tokens - 1)
        return True


def retry_fits(delay: float, last_attempt: float, remaining: float) -> bool:
    """Whether waiting ``delay`` seconds, then an attempt as long as the last one
    (``last_attempt`` seconds), ends within the ``remaining`` seconds of the deadline."""
    return delay + last_attempt <= remaining


@dataclass(slots=True)
class Call:
    """The S3 call this task is making, as the origin's ``needs-retry`` hook sees it."""

    retry: bool
    #: ``time.monotonic()`` by which the whole call must have ended.
    deadline: float
    #: When the current attempt's request went out.
    attempt_started: float


CALL: ContextVar[Call | None] = ContextVar("s3proxy_origin_call", default=None)
