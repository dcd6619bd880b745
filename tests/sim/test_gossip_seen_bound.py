"""The proofs topic's seen set levels off in a long run (issue 12 item 7, memory creep).

Every proof id a node sees is remembered so that a repeat is dropped before
its signature is checked. Remembered by count only (200 000 ids), the set
grew with every epoch for hours (~140 bytes a proof); remembered for as long
as a repeat could still matter, it stops growing after a few epochs.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.sim import cluster


async def test_the_seen_set_stops_growing_after_its_ttl(autojump_clock: trio.testing.MockClock) -> None:
    c = cluster.make_cluster()
    sizes: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        await c.start(nursery)
        for epoch in (9, 18):
            await c.clock.sleep_until_ms(c.schedule.end_of(epoch))
            sizes[epoch] = len(c.gossips[0]._seen._items)
        nursery.cancel_scope.cancel()
    accepted = c.gossips[0].counters.items_accepted
    assert accepted > 500  # proofs kept flowing all along
    # 9 epochs of 20 s already span the 120 s memory; twice as many epochs add nothing.
    assert sizes[18] <= sizes[9] * 1.25, sizes
