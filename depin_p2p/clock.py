"""Clock: the only source of time in the shell.

Reads ``trio.current_time()`` plus a wall-clock anchor taken once at start,
so ``trio.testing.MockClock`` drives whole clusters in tests, and the pure
core gets time only as an ``int`` of milliseconds passed to it.
"""

from __future__ import annotations

import time

import trio


class Clock:
    """Milliseconds since the Unix epoch, advancing with trio's clock.

    Create it inside a trio run. ``wall_anchor_ms`` pins the wall time at
    creation (tests pass a constant so runs are reproducible); by default it
    is read once from the system clock.
    """

    __slots__ = ("_trio_anchor", "_wall_anchor_ms")

    def __init__(self, wall_anchor_ms: int | None = None) -> None:
        self._trio_anchor = trio.current_time()
        self._wall_anchor_ms = time.time_ns() // 1_000_000 if wall_anchor_ms is None else wall_anchor_ms

    def now_ms(self) -> int:
        """Current time in integer milliseconds."""
        return self._wall_anchor_ms + int((trio.current_time() - self._trio_anchor) * 1000)

    def deadline_for(self, at_ms: int) -> float:
        """The trio deadline (for ``trio.sleep_until`` / cancel scopes) of wall time ``at_ms``."""
        return self._trio_anchor + (at_ms - self._wall_anchor_ms) / 1000

    async def sleep_until_ms(self, at_ms: int) -> None:
        """Sleep until wall time ``at_ms``; returns at once if it has passed.

        Cancellation: a plain trio checkpoint, cancelled like ``trio.sleep``.
        """
        await trio.sleep_until(self.deadline_for(at_ms))
