"""Certificates are gossiped as commit notices (no value); a node that never hears a proposal still commits.

The fifth node, a follower, drops every proposal at its topic validator, so it
never holds a decided value: each epoch it gets the votes and the other nodes'
commit notices, and must fetch each certificate over ``/sync/1`` once a
notice has waited ``NOTICE_WAIT_S`` for its proposal in vain. The
validators make every certificate back from the proposal they heard and
fetch nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate, CommitNotice, Proposal
from depin_p2p.errors import Ignore
from depin_p2p.gossip.transport import PeerId
from tests.sim import cluster
from tests.sim.test_consensus_cluster import chain


async def test_a_follower_that_never_hears_a_proposal_commits_every_epoch_from_the_notices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=5, validators=4, with_consensus=True)
    deaf = c.consensus[4]
    heard: list[type] = []
    validate = deaf.intake.validate

    def no_proposals(peer: PeerId, data: bytes) -> None:
        item = wire.decode(data)
        heard.append(type(item))
        if isinstance(item, wire.Envelope) and wire.peek_type_id(item.body) == wire.info_of(Proposal).type_id:
            raise Ignore("test_drops_proposals")
        validate(peer, data)

    deaf.intake.validate = no_proposals  # type: ignore[method-assign]
    fetched = [0] * 5  # epochs each node committed from certificates fetched over /sync/1

    def counting(i: int) -> None:
        sync = c.consensus[i].sync
        from_any = sync.from_any

        async def count(peers: Sequence[PeerId], up_to: int) -> int:
            got = await from_any(peers, up_to)
            fetched[i] += got
            return got

        sync.from_any = count  # type: ignore[method-assign]

    for i in range(5):
        counting(i)
    epochs = 4
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            while min(led.last_epoch() for led in c.ledgers) < epochs:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    assert chain(c.ledgers[4], epochs) == chain(c.ledgers[0], epochs)  # the same certificates
    assert CommitNotice in heard and Certificate not in heard  # no value travels as a certificate
    assert fetched[4] >= epochs  # each one fetched from a notice's sender
    assert fetched[:4] == [0, 0, 0, 0]  # the validators made theirs back from the proposal they heard
