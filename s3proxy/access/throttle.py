"""Failed login attempts per client address: past a budget within a window, an address is
refused until the window ends. Pure: ``now`` is passed in; memory is bounded."""

from __future__ import annotations

#: Addresses tracked at most; past it, windows that have ended are dropped, then the oldest.
MAX_ADDRESSES = 10_000


class Throttle:
    """``attempts`` failures per ``window`` seconds per address."""

    def __init__(self, attempts: int = 10, window: float = 60.0) -> None:
        self.attempts = attempts
        self.window = window
        # address -> (window start, failures in it)
        self._failures: dict[str, tuple[float, int]] = {}

    def retry_after(self, address: str, now: float) -> int:
        """Seconds ``address`` must wait before another attempt counts (0: go ahead)."""
        record = self._failures.get(address)
        if record is None:
            return 0
        start, count = record
        if now - start >= self.window:
            del self._failures[address]
            return 0
        return int(start + self.window - now) + 1 if count >= self.attempts else 0

    def failed(self, address: str, now: float) -> None:
        """Count a failed attempt of ``address``."""
        start, count = self._failures.get(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if address not in self._failures and len(self._failures) >= MAX_ADDRESSES:
            self._prune(now)
        self._failures[address] = (start, count + 1)

    def _prune(self, now: float) -> None:
        ended = [a for a, (start, _) in self._failures.items() if now - start >= self.window]
        for address in ended:
            del self._failures[address]
        while len(self._failures) >= MAX_ADDRESSES:  # dicts keep insertion order: oldest first
            del self._failures[next(iter(self._failures))]
