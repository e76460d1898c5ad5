"""The header timeout's clock: one timer per event loop that times out request heads waiting
past ``--header-timeout`` (:class:`~s3proxy.protocol.StrictProtocol` answers 408).

Every :attr:`Sweep.interval` seconds it asks each open connection to look at its head
(``swept``); a head (or a fresh connection's silence) first seen waiting by one sweep is timed
out by the sweep ``ceil(timeout / interval)`` later. Cost: one pass over the connections per
interval, nothing per request but the reset when a message completes.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Iterable
from typing import ClassVar, Protocol, runtime_checkable


@runtime_checkable
class Swept(Protocol):
    """A connection the sweep looks at."""

    def swept(self, number: int, sweeps: int) -> None:
        """Sweep ``number`` looks: time the head out if ``sweeps`` sweeps saw it waiting."""


class Sweep:
    """The sweep of one event loop (see the module docstring)."""

    _loops: ClassVar[weakref.WeakSet[asyncio.AbstractEventLoop]] = weakref.WeakSet()

    @classmethod
    def ensure(
        cls, loop: asyncio.AbstractEventLoop, connections: Iterable[object], timeout: float
    ) -> None:
        """Start the sweep of ``connections`` on ``loop``, once."""
        if loop not in cls._loops:
            cls._loops.add(loop)
            sweep = cls(loop, connections, timeout)
            loop.call_later(sweep.interval, sweep.run)

    def __init__(
        self, loop: asyncio.AbstractEventLoop, connections: Iterable[object], timeout: float
    ) -> None:
        self.loop, self.connections, self.number = loop, connections, 0
        self.interval = min(1.0, timeout / 4)
        self.sweeps = math.ceil(timeout / self.interval)

    def run(self) -> None:
        self.number += 1
        for protocol in list(self.connections):
            if isinstance(protocol, Swept):
                protocol.swept(self.number, self.sweeps)
        if not self.loop.is_closed():
            self.loop.call_later(self.interval, self.run)
