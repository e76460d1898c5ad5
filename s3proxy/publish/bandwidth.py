"""Pure: how long a request may take and how long to wait before trying it again.

A request's timeout follows the bytes it carries: ``bytes / bandwidth * SLACK`` plus a fixed
allowance for the round trip and S3's own work, never less than a floor. The bandwidth is an
exponentially weighted moving average of the transfers measured so far (per connection, since
that is what one request gets), so a slow link is not cut off and a stalled request on a fast
one is not waited on for minutes. Retries back off exponentially with full jitter (each wait
uniform in ``[0, min(cap, base * 2**attempt))``), so many failed parts do not return together.

No clock and no randomness of its own: callers pass the measurements and the random source.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Bytes per second assumed per connection before anything is measured (a modest 1 MB/s, so
#: the first large parts of a publish over a slow link are not timed out).
INITIAL_BANDWIDTH = 1_000_000.0
#: Weight of the newest measurement in the average.
ALPHA = 0.3
#: How many times the expected duration a request may take.
SLACK = 4.0
#: Seconds every request is allowed beyond its bytes (round trip, S3's work).
OVERHEAD = 5.0
#: The shortest timeout, in seconds.
FLOOR = 10.0
#: Transfers shorter than this (bytes) say more about latency than bandwidth: not counted.
MIN_SAMPLE = 256 * 1024


@dataclass(slots=True)
class Bandwidth:
    """The EWMA of measured bytes per second of one connection; mutable, one per publish."""

    estimate: float = INITIAL_BANDWIDTH
    samples: int = 0

    def measured(self, nbytes: int, seconds: float) -> None:
        """Count one finished transfer of ``nbytes`` in ``seconds``."""
        if nbytes < MIN_SAMPLE or seconds <= 0:
            return
        rate = nbytes / seconds
        # The first sample replaces the guess instead of being averaged with it.
        self.estimate = rate if self.samples == 0 else ALPHA * rate + (1 - ALPHA) * self.estimate
        self.samples += 1

    def timeout(self, nbytes: int, floor: float = FLOOR) -> float:
        """Seconds a request carrying ``nbytes`` may take in all."""
        return max(floor, OVERHEAD + SLACK * nbytes / self.estimate)


def backoff(attempt: int, rng: random.Random, base: float = 0.2, cap: float = 20.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry): full jitter."""
    return rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))
