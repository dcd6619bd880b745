"""Each node logs the proposals (info) and votes (debug) it hears: how late each reached it.

A round that times out says little by itself; beside each signer's
``consensus.vote.signed`` line, ``consensus.proposal.heard`` and
``consensus.vote.heard`` tell whether the proposal or the votes were late, and
at which node (how the 32-process devnet's rounds were read).
"""

from __future__ import annotations

import structlog
import trio
import trio.testing

from tests.sim import cluster


async def test_every_other_node_logs_the_proposal_once_and_the_votes_it_hears(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=4, validators=4, with_consensus=True)
    with structlog.testing.capture_logs() as logs, trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            while min(led.last_epoch() for led in c.ledgers) < 1:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()
    heard = [e for e in logs if e["event"] == "consensus.proposal.heard" and e["epoch"] == 1]
    round0 = [e for e in heard if e["round"] == 0]
    assert len({e["signer"] for e in round0}) == 1  # the round's one proposer
    assert len(round0) == 3  # each node but the proposer, once (a duplicate is not validated again)
    assert all(e["bytes"] > 0 and e["peer"] for e in round0)
    votes = [e for e in logs if e["event"] == "consensus.vote.heard" and e["epoch"] == 1]
    assert {e["kind"] for e in votes} == {"prevote", "precommit"}
    assert len({e["signer"] for e in votes}) == 4
