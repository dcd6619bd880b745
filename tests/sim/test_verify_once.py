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
from depin_p2p.errors import Reject
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
    beacons = [env for env in content.beacons if isinstance(wire.decode(env.body), Beacon)]
    assert len(beacons) == 12  # gossiped, pooled, proposed and re-checked on every node
    for i, node in enumerate(c.nodes):
        for env in beacons:
            assert checks[i][env.signature] == 1, (i, checks[i][env.signature])
        # Nothing else that reached the shared cache was checked twice either...
        assert max(checks[i].values()) == 1
        # ...and the memory answered more checks than Ed25519 ran (each was a run before it).
        assert node.signatures.verified == sum(checks[i].values())
        assert node.signatures.cached > node.signatures.verified
        print(f"node {i}: {node.signatures.verified} verified, {node.signatures.cached} from memory")


def test_a_good_signature_on_other_bytes_is_checked_again_and_fails() -> None:
    key = cluster.plan_devnet(cluster.DevnetPlan(nodes=1, seed=b"sig"), genesis_time_ms=0).node_keys[0]
    cache = wire.SignatureCache(capacity=2)
    sig = key.sign(b"one")
    cache.verify(key.public_key, b"one", sig)
    cache.verify(key.public_key, b"one", sig)
    assert (cache.verified, cache.cached) == (1, 1)
    try:
        cache.verify(key.public_key, b"two", sig)
    except Reject as exc:
        assert exc.code == "bad_signature"
    else:
        raise AssertionError("a signature moved onto other bytes passed")
    for data in (b"a", b"b", b"c"):  # capacity 2: the oldest goes
        cache.verify(key.public_key, data, key.sign(data))
    assert len(cache) == 2
    cache.verify(key.public_key, b"one", sig)
    assert cache.verified == 6  # "one" was forgotten, so checked again
