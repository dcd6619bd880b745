"""The node's signature cache and the consensus conflict watch level off (issue 12 item 7).

Both were bounded by count only (16 384 verified signatures, 8 192 vote
positions): at a 6-validator devnet's ~13 signed messages per epoch they
grew with every epoch for hours. Bounded by epochs as well, they stop
growing a few epochs after the start while signatures keep being checked.
"""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p.consensus.driver import WATCH_EPOCHS
from tests.sim import cluster


async def test_the_signature_cache_and_conflict_watch_stop_growing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    sizes: dict[int, tuple[int, int, int]] = {}
    keep_commits = 8  # wire.SignatureCache's default
    early = max(keep_commits, WATCH_EPOCHS) + 4
    with trio.fail_after(3_600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            for epoch in (early, 3 * early):
                while c.ledgers[0].last_epoch() < epoch:
                    await c.clock.sleep_until_ms(c.clock.now_ms() + 1_000)
                driver, cache = c.consensus[0].driver, c.nodes[0].signatures
                sizes[epoch] = (len(cache), len(driver.watch), cache.verified)
            nursery.cancel_scope.cancel()
    (cache_early, watch_early, verified_early), (cache_late, watch_late, verified_late) = (
        sizes[early],
        sizes[3 * early],
    )
    assert verified_late > 2 * verified_early  # signatures kept coming all along
    assert 0 < cache_late <= cache_early * 1.25, sizes
    assert 0 < watch_late <= watch_early * 1.25, sizes
