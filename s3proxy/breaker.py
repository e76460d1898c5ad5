"""A circuit breaker for one origin: :class:`Breaker` (pure, ``now`` passed in) and
:class:`Circuit`, the origin's use of it (what counts as a failure, what a refused call
raises, the log lines).

While S3 is down, asking it again for every request only adds to its load and makes every
client wait for a timeout. The breaker counts consecutive failed calls; at ``threshold`` it
opens: calls are refused at once (the caller serves a stale copy, else 502/504) for
``cooldown`` seconds. Then it lets exactly one call through as a probe (half-open); every
other call is still refused until the probe reports. A success closes the breaker; a failed
probe opens it for another ``cooldown``::

    closed --threshold failures--> open --cooldown--> half-open (one probe out)
      ^                              ^                    |  |
      |                              +---probe failed-----+  |
      +-------------------any success------------------------+

Only the origin's health counts: a 404, a 304 or a 412 is an answer, so a success.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from s3proxy import logging as log
from s3proxy.exceptions import ObjectChanged, ObjectNotFound, OriginError, OriginTimeout
from s3proxy.failures import again

_logger = log.get_logger("s3proxy.origin")


class Permit(enum.Enum):
    """What :meth:`Breaker.permit` allows a call to do."""

    CALL = "call"  # closed: go ahead
    PROBE = "probe"  # half-open: this call is the one probe; report how it ended
    REFUSE = "refuse"  # open, or the probe is still out: fail fast, ask S3 nothing


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class Breaker:
    """Consecutive failures open it for ``cooldown`` seconds; then one probe at a time."""

    threshold: int = 5
    cooldown: float = 5.0
    failures: int = 0
    #: When the breaker last opened; ``None`` while closed.
    opened_at: float | None = None
    probing: bool = False

    def state(self, now: float) -> State:
        if self.opened_at is None:
            return State.CLOSED
        if self.probing or now - self.opened_at >= self.cooldown:
            return State.HALF_OPEN
        return State.OPEN

    def permit(self, now: float) -> Permit:
        """Whether a call may go to the origin now. A :data:`Permit.PROBE` must be followed by
        :meth:`succeeded`, :meth:`failed` or :meth:`abandoned`, or no other probe is let out."""
        state = self.state(now)
        if state is State.CLOSED:
            return Permit.CALL
        if state is State.HALF_OPEN and not self.probing:
            self.probing = True
            return Permit.PROBE
        return Permit.REFUSE

    def succeeded(self) -> None:
        """The origin answered: close (whether or not this was the probe)."""
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self, now: float, probe: bool = False) -> bool:
        """A call failed (5xx, timeout, refused connection). Returns ``True`` if this opened
        a closed breaker (worth a log line). A failed probe opens it for another
        ``cooldown``; a call let through before the breaker opened changes nothing more."""
        self.failures += 1
        if probe:
            self.opened_at, self.probing = now, False
            return False
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = now
            return True
        return False

    def abandoned(self) -> None:
        """The probe ended without a verdict (its caller was cancelled): the next call may
        probe."""
        self.probing = False


def is_failure(exc: OriginError) -> bool:
    """Whether ``exc`` says S3 is unwell (timeout, no connection, 5xx), as opposed to an
    answer about the object (404, 403, 412, 304, 416...)."""
    if isinstance(exc, ObjectNotFound | ObjectChanged):
        # Answers about the object, raised without a status: never S3's ill health (five 404s
        # in a row once opened the breaker, and every key then answered 404).
        return False
    return isinstance(exc, OriginTimeout) or exc.status is None or exc.status >= 500


class Circuit:
    """The origin's breaker on the monotonic clock. A refused call raises the kind of the last
    failure again (a timeout stays a 504, anything else a 502), without asking S3."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.breaker = Breaker(threshold, cooldown)
        self._last_failure = OriginError("S3 is failing")

    @property
    def closed(self) -> bool:
        return self.breaker.opened_at is None

    def permit(self) -> Permit:
        """:data:`Permit.CALL` or :data:`Permit.PROBE`; raises if the breaker refuses."""
        permit = self.breaker.permit(time.monotonic())
        if permit is Permit.REFUSE:
            raise again(self._last_failure, "not asked: S3 failed repeatedly")
        return permit

    def report(self, exc: OriginError | None, permit: Permit, abandoned: bool = False) -> None:
        """How a permitted call ended: ``exc`` (``None``: S3 answered), or ``abandoned``
        (cancelled: no verdict)."""
        breaker = self.breaker
        if abandoned:
            if permit is Permit.PROBE:
                breaker.abandoned()
        elif exc is not None and is_failure(exc):
            self._last_failure = exc
            if breaker.failed(time.monotonic(), probe=permit is Permit.PROBE):
                _logger.warning(
                    "origin_circuit_open",
                    error=str(exc),
                    failures=breaker.failures,
                    cooldown_s=breaker.cooldown,
                )
        else:
            if breaker.opened_at is not None:
                _logger.warning("origin_circuit_closed")
            breaker.succeeded()
