"""Catch-up requests: one chase at a time, the latest request made meanwhile run after it; a notice's wait."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from depin_p2p.consensus.sync import CatchUp
from depin_p2p.gossip.transport import PeerId


class Peers:
    def peers(self) -> frozenset[PeerId]:
        return frozenset({PeerId("a"), PeerId("b")})


class Recording(CatchUp):
    """A CatchUp whose fetches are recorded and applied at once (epochs up to what a gate allows)."""

    def __init__(self) -> None:
        self.last = 0
        self.calls: list[tuple[PeerId, int]] = []
        self.gate = trio.Event()
        self.reachable = 10**9  # the highest epoch any peer has
        super().__init__(Peers(), "/sync", self._submit, lambda: self.last)  # type: ignore[arg-type]

    async def _submit(self, certs: Sequence[object], peer: PeerId) -> None:
        raise AssertionError("from_any is replaced")

    async def from_any(self, peers: Sequence[PeerId], up_to: int) -> int:
        self.calls.append((peers[0], up_to))
        await self.gate.wait()
        before, self.last = self.last, max(self.last, min(up_to, self.reachable))
        return self.last - before


async def test_a_request_made_while_a_chase_runs_is_run_after_it_the_latest_only() -> None:
    c = Recording()
    c.reachable = 0  # the first peer asked has not committed yet: the first chase applies nothing
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.chase, PeerId("a"), 1)
        await trio.testing.wait_all_tasks_blocked()
        await c.chase(PeerId("b"), 1)  # a notice from b while the chase runs: remembered
        await c.chase(PeerId("b"), 2)  # and a later one: only the latest is kept
        c.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        c.reachable = 10**9
    assert c.calls == [(PeerId("a"), 1), (PeerId("b"), 2)]


async def test_a_remembered_request_already_met_runs_no_second_chase() -> None:
    c = Recording()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.chase, PeerId("a"), 3)
        await trio.testing.wait_all_tasks_blocked()
        await c.chase(PeerId("b"), 2)
        c.gate.set()
    assert c.calls == [(PeerId("a"), 3)] and c.last == 3


async def test_chase_after_waits_once_per_epoch_and_not_at_all_if_settled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = Recording()
    c.gate.set()
    settled: list[bool] = []

    async def never() -> bool:
        settled.append(False)
        return False

    async def yes() -> bool:
        return True

    async with trio.open_nursery() as nursery:
        for _ in range(5):  # five notices for epoch 1: one wait
            nursery.start_soon(c.chase_after, PeerId("a"), 1, 2.0, never)
    assert settled == [False] and c.calls == [(PeerId("a"), 1)]
    await c.chase_after(PeerId("a"), 2, 2.0, yes)  # its proposal came meanwhile: nothing fetched
    assert c.calls == [(PeerId("a"), 1)]
    await c.chase_after(PeerId("a"), 1, 2.0, never)  # committed already: not even asked
    assert settled == [False]


async def test_a_nearer_request_made_during_a_chase_does_not_replace_a_further_one() -> None:
    # Review finding: notices for epoch 2, then a late vote showing epoch 1, while a chase for 1 ran.
    c = Recording()
    c.reachable = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(c.chase, PeerId("a"), 1)
        await trio.testing.wait_all_tasks_blocked()
        await c.chase(PeerId("b"), 2)
        await c.chase(PeerId("a"), 1)
        c.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        c.reachable = 10**9
    assert c.calls == [(PeerId("a"), 1), (PeerId("b"), 2)]  # the further one ran, not (a, 1) again
