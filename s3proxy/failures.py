"""Pure: S3's failures remembered per key for ``--error-ttl`` seconds, ``now`` passed in.

While S3 fails, a popular key would otherwise cost one GET per request (each a full timeout
when S3 does not answer). CDNs cache errors for a few seconds for the same reason
(CloudFront's error caching minimum TTL, nginx's ``proxy_cache_valid`` for 5xx). Only failures
are remembered — 5xx, timeouts, refused connections — never an answer such as a 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3proxy.exceptions import OriginError

#: Keys remembered at most; past that, expired ones are dropped, then all (a scan of random
#: paths during an outage must not grow memory).
LIMIT = 10_000


def again(error: OriginError, why: str) -> OriginError:
    """A new exception of ``error``'s kind (so the same status: 502 or 504), saying ``why`` it
    is raised without asking S3. A new one: re-raising one instance from many requests would
    grow its traceback."""
    return type(error)(f"{why}: {error}", error.status)


@dataclass(slots=True)
class FailureMemory:
    """Each key's last failure until ``ttl`` seconds after it happened."""

    ttl: float
    limit: int = LIMIT
    _failures: dict[str, tuple[float, OriginError]] = field(default_factory=dict)

    def remember(self, key: str, error: OriginError, now: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._failures) >= self.limit:
            self._failures = {k: v for k, v in self._failures.items() if v[0] > now}
            if len(self._failures) >= self.limit:
                self._failures.clear()
        self._failures[key] = (now + self.ttl, error)

    def recall(self, key: str, now: float) -> OriginError | None:
        """The failure to answer for ``key`` without asking S3, or ``None``: ask."""
        remembered = self._failures.get(key)
        if remembered is None:
            return None
        until, error = remembered
        if now >= until:
            del self._failures[key]
            return None
        return again(error, "S3 failed for this key moments ago")

    def __len__(self) -> int:
        return len(self._failures)
