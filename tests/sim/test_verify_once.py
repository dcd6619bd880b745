"""Each envelope's signature is verified once per node, however many checks it goes through.

A beacon is checked when it arrives by gossip, again by the proof pool,
when the proposer builds the epoch value and when every validator re-checks
that value: one :class:`~depin_p2p.wire.SignatureCache` per node answers all
but the first from memory.
"""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate
from depin_p2p.consensus.value import EpochContent
from depin_p2p.witness.radio import Beacon
from tests.sim import cluster


def _recording(checks: Counter[bytes]) -> wire.Verifier:
    def check(public_key: bytes, data: bytes, signature: bytes) -> None:
        checks[signature] += 1
        wire.verify_signature(public_key, data, signature)

    return check


async def test_a_gossiped_beacon_is_verified_once_on_each_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    checks: list[Counter[bytes]] = []
    for node in c.nodes:
        checks.append(Counter())
        node.signatures.check = _recording(checks[-1])
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            while min(led.last_epoch() for led in c.ledgers) < 2:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()

    cert = wire.decode_as(c.ledgers[0].get_certificate(1) or b"", Certificate)
    content = wire.decode_as(cert.candidate.value, EpochContent)
    beacons = [(env, wire.decode_as(env.body, Beacon)) for env in content.beacons]
    assert len(beacons) == 12  # gossiped, pooled, proposed and re-checked on every node
    assert content.reports  # ...and so were the reports of those beacons
    for i, node in enumerate(c.nodes):
        mine = {d.key.public_key for d in c.devnet.devices_of(i)}
        for env, beacon in beacons:
            # Our own beacons are entered as verified when signed; every other one is checked once.
            assert checks[i][env.signature] == (0 if beacon.device in mine else 1), (i, beacon.device.hex())
        for env in content.reports:
            assert checks[i][env.signature] <= 1
        # Nothing else that reached the shared cache was checked twice either...
        assert max(checks[i].values()) == 1
        # ...the memory answered more checks than Ed25519 ran, and each checker's share adds up.
        assert node.signatures.verified == sum(checks[i].values())
        assert node.signatures.cached > node.signatures.verified
        assert node.signatures.marked > 0
        tallies = (
            node.gossip.counters.signatures,
            node.pool.signature_checks,
            node.consensus.value_signatures,
            node.consensus.counters.signatures,
        )
        assert sum(t.verified for t in tallies) == node.signatures.verified
        assert sum(t.cached for t in tallies) == node.signatures.cached
        # The value checks (build and re-check of epochs 1 and 2) ran on proofs gossip had checked.
        assert node.consensus.value_signatures.cached > 0
        assert node.consensus.value_signatures.verified == 0
        # Nor were the reports judged again: the pool's verdicts served the value checks.
        others = [env for env in content.reports if env.signer not in mine]
        assert node.pool.verdicts is not None and node.pool.verdicts.hits >= len(others) > 0, i
