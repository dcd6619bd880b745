"""Clock follows trio's clock, so MockClock drives it."""

from __future__ import annotations

import time

import trio
import trio.testing

from depin_p2p.clock import Clock


async def test_clock_follows_trio_time(autojump_clock: trio.testing.MockClock) -> None:
    clock = Clock(wall_anchor_ms=1_000_000)
    assert clock.now_ms() == 1_000_000
    await trio.sleep(2.5)
    assert clock.now_ms() == 1_002_500
    await clock.sleep_until_ms(1_010_000)
    assert clock.now_ms() == 1_010_000
    await clock.sleep_until_ms(0)  # in the past: returns at once
    assert clock.now_ms() == 1_010_000


async def test_default_anchor_is_wall_time() -> None:
    clock = Clock()
    assert abs(clock.now_ms() - time.time() * 1000) < 5_000
