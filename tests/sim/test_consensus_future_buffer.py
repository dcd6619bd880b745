"""Messages for an epoch that has not started yet are buffered, then every one is replayed.

Regression (issue 11): a validly signed vote from a *non-validator* for the
next epoch went into the future buffer; when that epoch started, replaying it
raised inside the replay loop and every buffered message after it was lost.
"""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.state import Candidate, Precommit, Proposal, ValidatorSet, proposer_for, value_id_of
from depin_p2p.consensus.value import ValueParams, build_content
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.transport import CONSENSUS, topic
from depin_p2p.ledger.state import validator_set
from tests.sim import cluster


def _decision_messages(c: cluster.Cluster) -> list[wire.Envelope]:
    """A proposal for epoch 1 and precommits for it from validators 1-3 (not node 0): a decision."""
    net = c.devnet.network_id
    view = c.ledgers[1]
    keys = {k.public_key: k for k in c.devnet.node_keys}
    validators = ValidatorSet.of(validator_set(view))
    prev = view.last_certificate_hash()
    me = c.devnet.node_keys[0].public_key
    round_ = next(r for r in range(16) if proposer_for(validators, prev, 1, r) != me)
    built = build_content(
        view,
        epoch=1,
        beacons=(),
        reports=(),
        attestations=(),
        txs=(),
        evidence=(),
        params=ValueParams(network_id=net, emission_per_epoch=c.emission()),
    )
    candidate = Candidate(1, prev, wire.encode(built.content))
    proposer = keys[proposer_for(validators, prev, 1, round_)]
    msgs = [wire.seal(Proposal(1, round_, candidate, None), proposer, net)]
    for key in c.devnet.node_keys[1:4]:
        msgs.append(wire.seal(Precommit(1, round_, value_id_of(candidate)), key, net))
    return msgs


async def test_a_non_validator_vote_for_the_next_epoch_does_not_stop_the_replay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    net = c.devnet.network_id
    outsider = KeyPair.from_seed(bytes(range(32)))  # validly signs, but holds no stake
    assert ValidatorSet.of(validator_set(c.ledgers[0])).power_of(outsider.public_key) == 0
    injector = c.transports[1]  # node 1's network endpoint; its services stay down
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await nursery.start(c.transports[0].run)
            await nursery.start(injector.run)
            await injector.connect(c.transports[0].listen_addrs()[0])
            await nursery.start(c.consensus[0].run)
            # Mid-epoch 1: its instance starts only once the epoch is over, so all of this is buffered.
            await c.clock.sleep_until_ms(cluster.T0 + cluster.EPOCH_MS // 2)
            stray = wire.seal(Precommit(1, 0, None), outsider, net)
            for env in (stray, *_decision_messages(c)):
                await injector.publish(topic(net, CONSENSUS), wire.encode(env))
            await c.clock.sleep_until_ms(c.schedule.end_of(1) + 2_000)
            committed = c.ledgers[0].last_epoch()
            nursery.cancel_scope.cancel()
    # The buffered proposal and precommits alone decide epoch 1 (no other validator runs).
    assert committed == 1, "the buffered messages after the non-validator's vote were never replayed"


async def test_a_bad_consensus_message_is_not_forwarded_and_costs_the_peer_that_sent_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    net = c.devnet.network_id
    injector, node, beyond = c.transports[1], c.transports[0], c.transports[2]
    outsider = KeyPair.from_seed(bytes(range(32)))
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            for t in (node, injector, beyond):
                await nursery.start(t.run)
            await injector.connect(node.listen_addrs()[0])
            await beyond.connect(node.listen_addrs()[0])  # reaches the injector only through node 0
            await nursery.start(c.consensus[0].run)
            await nursery.start(c.consensus[2].run)
            await c.clock.sleep_until_ms(cluster.T0 + 1_000)
            for r in range(10):
                good = wire.seal(Precommit(1, r, None), c.devnet.node_keys[3], net)
                forged = wire.Envelope(good.network_id, good.signer, bytes(64), good.body)
                stray = wire.seal(Precommit(1, r, None), outsider, net)  # validly signed, not a validator
                for env in (forged, stray):
                    await injector.publish(topic(net, CONSENSUS), wire.encode(env))
            await c.clock.sleep_until_ms(cluster.T0 + 2_000)
            nursery.cancel_scope.cancel()
    # Ten rejections ban the sender (then it is disconnected and the rest never arrive).
    assert set(node.counters.reject_codes) == {"bad_signature", "unknown_validator"}
    assert sum(node.counters.reject_codes.values()) == 10
    assert node.is_banned(injector.peer_id)
    assert beyond.counters.delivered == 0 and beyond.counters.reject_codes == {}  # nothing forwarded
