"""Signature-check amplification (issue 12, item 1) on the node's own assembly, memory network.

An attacker holds a pool of validly signed attestations (a registered
device's key) for an epoch far from ours and reshuffles them into new
bundles. Before, each copy cost an Ed25519 check and was dropped as
``wrong_epoch`` afterwards, never penalised. Now the epoch and the signer's
registration are checked before the signature: the items cost no check at
all, the far epoch is the sender's offence (``far_epoch``) and it is banned,
while the validators go on committing.
"""

from __future__ import annotations

import random

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.gossip.service import ProofBundle
from depin_p2p.gossip.transport import PROOFS, topic
from depin_p2p.witness.compute import Attestation, Outcome
from tests.sim import cluster


async def test_far_epoch_items_cost_no_signature_check_and_ban_their_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    net = c.devnet.network_id
    key = c.devnet.devices_of(1)[0].key  # a registered device: its signatures are good
    me = key.public_key
    far = [Attestation(me, me, 10**12 + i, bytes(32), Outcome.PASSED, 1, 16, bytes(32)) for i in range(40)]
    pool = [wire.encode(wire.seal(att, key, net)) for att in far]
    attack_sigs = {wire.decode_as(item, wire.Envelope).signature for item in pool}
    checked: list[bytes] = []
    target = c.nodes[0]
    real_check = target.signatures.check

    def check(public_key: bytes, data: bytes, signature: bytes) -> None:
        checked.append(signature)
        real_check(public_key, data, signature)

    target.signatures.check = check
    attacker = c.network.create_node("attacker")
    rng = random.Random(12)
    bundles = 0
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            await nursery.start(attacker.run)
            await attacker.connect(c.transports[0].listen_addrs()[0])
            await c.clock.sleep_until_ms(c.schedule.start_of(1) + 2_000)
            while not c.transports[0].is_banned(attacker.peer_id) and bundles < 100:
                rng.shuffle(pool)
                await attacker.publish(topic(net, PROOFS), wire.encode(ProofBundle(tuple(pool[:32]))))
                bundles += 1
                await trio.sleep(0.05)
            while min(led.last_epoch() for led in c.ledgers) < 2:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()

    assert c.transports[0].is_banned(attacker.peer_id)
    assert bundles <= 12, bundles  # banned after ten rejected bundles (10 points each, threshold 100)
    assert target.gossip.counters.reject_codes.get("far_epoch", 0) >= 10
    assert not attack_sigs & set(checked)  # not one Ed25519 check for the attacker's items
    assert c.transports[0].counters.peers_banned == 1  # the attacker only
    assert all(t.counters.peers_banned == 0 for t in c.transports[1:])
