"""A validator cut off while its peers commit catches up when the link heals, without a restart.

Seen in the crash test under load: a validator that resumed one epoch behind
ran that epoch's instance alone (the others had committed it and moved on),
missed the certificate's one gossip, and dropped every later certificate as
"not the next one": it stayed behind for good, because catch-up over
``/sync/1`` ran only at start. Here one of four validators is partitioned
away while the other three (a quorum) commit, then the partition heals.
"""

from __future__ import annotations

import trio
import trio.testing

from tests.sim import cluster
from tests.sim.test_consensus_cluster import chain


async def test_a_validator_cut_off_for_epochs_catches_up_after_the_heal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    lonely = c.transports[3].peer_id
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            while min(led.last_epoch() for led in c.ledgers) < 1:
                await trio.sleep(1)
            cut_at = c.ledgers[3].last_epoch()
            c.network.partition([lonely])
            while min(led.last_epoch() for led in c.ledgers[:3]) < cut_at + 3:
                await trio.sleep(1)
            assert c.ledgers[3].last_epoch() <= cut_at + 1  # no quorum alone
            c.network.heal()
            healed_at = max(led.last_epoch() for led in c.ledgers[:3])
            # Within two epochs of the heal it holds everything the others had, and follows.
            await c.clock.sleep_until_ms(c.schedule.end_of(healed_at + 2) + 5_000)
            nursery.cancel_scope.cancel()
    assert c.ledgers[3].last_epoch() >= healed_at + 1, (c.ledgers[3].last_epoch(), healed_at)
    upto = c.ledgers[3].last_epoch()
    assert chain(c.ledgers[3], upto) == chain(c.ledgers[0], upto)
