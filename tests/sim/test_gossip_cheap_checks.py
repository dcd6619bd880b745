"""Cheap checks before the signature on the proofs topic, through the node's own assembly (issue 12, item 1).

The attack found on a devnet: validly signed throw-away attestations for an
absurd epoch, from a pre-signed pool reshuffled into new bundles. Each one
cost the target an Ed25519 check before it was dropped as ``wrong_epoch``,
for free, forever. Now the epoch, the time window, the claimed signer and
the registry are checked before the signature, replays are seen, and items
far outside any window cost their sender, item by item, until it is banned.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import AsyncIterator

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.memory import MemoryTransport
from depin_p2p.gossip.service import BatchConfig, ProofBundle
from depin_p2p.gossip.transport import PROOFS, topic
from depin_p2p.witness.compute import Attestation, Outcome
from tests.sim import cluster
from tests.sim.test_verify_once import _recording

FAR = 10**12


def _attestation(key: KeyPair, provider: bytes, epoch: int, i: int, network_id: str) -> bytes:
    tag = hashlib.blake2b(b"throw-away %d" % i, digest_size=32).digest()
    att = Attestation(key.public_key, provider, epoch, tag, Outcome.PASSED, 100 + i, 64, tag)
    return wire.encode(wire.seal(att, key, network_id))


@contextlib.asynccontextmanager
async def _attacked(c: cluster.Cluster) -> AsyncIterator[MemoryTransport]:
    """The cluster running with an attacker connected to node 0; everything stops when the block ends."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            attacker = c.network.create_node("attacker")
            await nursery.start(attacker.run)
            await attacker.subscribe(topic(c.devnet.network_id, PROOFS), lambda peer, data: None)
            await attacker.connect(c.transports[0].listen_addrs()[0])
            await trio.sleep(2)
            yield attacker
            nursery.cancel_scope.cancel()


def _witness_key(c: cluster.Cluster) -> tuple[KeyPair, bytes]:
    """A registered radio's key (the attacker owns a device, as a sybil would) and a provider id."""
    radio = next(d for d in c.devnet.devices_of(1) if d.kind == "radio")
    provider = next(d for d in c.devnet.devices if d.kind == "compute")
    return radio.key, provider.key.public_key


async def test_far_epoch_attestations_reshuffled_cost_no_signature_check_and_the_sender_is_banned(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=2)
    checks = [Counter[bytes]() for _ in c.nodes]
    for node, counted in zip(c.nodes, checks, strict=True):
        node.signatures.check = _recording(counted)
    key, provider = _witness_key(c)
    pool = [_attestation(key, provider, FAR, i, c.devnet.network_id) for i in range(48)]
    sigs = {wire.decode_as(item, wire.Envelope).signature for item in pool}
    async with _attacked(c) as attacker:
        for shift in range(0, 48 * 5, 7):
            if c.transports[0].is_banned(attacker.peer_id):
                break
            k = shift % 48
            bundle = ProofBundle(tuple((pool[k:] + pool[:k])[:32]))
            await attacker.publish(topic(c.devnet.network_id, PROOFS), wire.encode(bundle))
            await trio.sleep(0.2)
        await trio.sleep(2)

    target, other = c.nodes[0].gossip.counters, c.nodes[1].gossip.counters
    assert sum(checks[0][s] for s in sigs) == 0  # not one Ed25519 check for the whole pool
    assert target.ignore_codes.get("far_out_of_window") == 48  # each distinct item judged once
    assert target.items_far > 48  # replays counted against the sender too, unchecked
    assert target.items_far_charged == target.items_far - 16  # all but the tolerance, one point each
    assert c.transports[0].is_banned(attacker.peer_id)
    # Nothing of it went further: the target never relays a bundle that would cost it downstream.
    assert other.items_far == 0 and sum(checks[1][s] for s in sigs) == 0
    assert c.nodes[1].gossip.counters.reject_codes == {}


async def test_a_bundle_with_far_items_is_not_relayed_but_its_fresh_items_are(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=2)
    key, provider = _witness_key(c)
    async with _attacked(c) as attacker:
        epoch = c.nodes[0].pool.current_epoch
        fresh = _attestation(key, provider, epoch, 1, c.devnet.network_id)
        near = _attestation(key, provider, epoch + 2, 2, c.devnet.network_id)  # off, not far
        far = [_attestation(key, provider, epoch + 5, i, c.devnet.network_id) for i in range(3, 6)]
        bundle = ProofBundle((far[0], near, fresh, *far[1:]))
        await attacker.publish(topic(c.devnet.network_id, PROOFS), wire.encode(bundle))
        # The fresh item leaves in node 0's next partial bundle: at most one bundle interval.
        await trio.sleep(BatchConfig.for_epoch(cluster.EPOCH_MS).min_interval_ms / 1000 + 1)

    target, other = c.nodes[0].gossip.counters, c.nodes[1].gossip.counters
    assert target.bundles_rebundled == 1 and target.items_far == 3
    assert target.items_far_charged == 0  # within the tolerance: one bad bundle is no ban
    assert target.ignore_codes.get("wrong_epoch") == 1  # one epoch off is no offence at all
    held = c.nodes[0].pool.collect(epoch).attestations + c.nodes[1].pool.collect(epoch).attestations
    assert sum(1 for env in held if wire.encode(env) == fresh) == 2  # delivered here and sent on
    assert other.items_far == 0 and other.reject_codes == {}


async def test_an_unregistered_signer_is_rejected_before_its_signature_is_checked(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(nodes=2)
    checks = Counter[bytes]()
    c.nodes[0].signatures.check = _recording(checks)
    stranger = KeyPair.from_seed(b"\x99" * 32)
    _, provider = _witness_key(c)
    async with _attacked(c) as attacker:
        epoch = c.nodes[0].pool.current_epoch
        item = _attestation(stranger, provider, epoch, 1, c.devnet.network_id)
        await attacker.publish(topic(c.devnet.network_id, PROOFS), wire.encode(ProofBundle((item,))))
        await trio.sleep(1)

    assert c.nodes[0].gossip.counters.reject_codes == {"unknown_device": 1}
    assert checks[wire.decode_as(item, wire.Envelope).signature] == 0


async def test_a_flood_of_valid_items_costs_at_most_the_peers_check_budget_and_no_penalty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rate limits count items, not messages: distinct, validly signed, in-window items cost one
    Ed25519 check each, so a peer's bundles may cost a burst and then a steady rate of checks.
    Beyond it items are left unchecked (another peer's copy still counts); the peer is no
    attacker by that alone: it is not charged."""
    c = cluster.make_cluster(nodes=2)
    checks = Counter[bytes]()
    c.nodes[0].signatures.check = _recording(checks)
    key, provider = _witness_key(c)
    budget = c.nodes[0].gossip.config.check_budget
    seconds = 0.5
    async with _attacked(c) as attacker:
        epoch = c.nodes[0].pool.current_epoch
        flood = [_attestation(key, provider, epoch, i, c.devnet.network_id) for i in range(24_000)]
        sigs = {wire.decode_as(item, wire.Envelope).signature for item in flood}
        started = trio.current_time()
        for i in range(0, len(flood), 64):
            await attacker.publish(
                topic(c.devnet.network_id, PROOFS), wire.encode(ProofBundle(tuple(flood[i : i + 64])))
            )
            await trio.sleep(seconds * 64 / len(flood))
        elapsed = trio.current_time() - started
        await trio.sleep(5)  # the budget comes back: a rate, not a ban
        flooded = c.nodes[0].gossip.counters.items_accepted
        now_epoch = c.nodes[0].pool.current_epoch
        later = _attestation(key, provider, now_epoch, len(flood), c.devnet.network_id)
        await attacker.publish(topic(c.devnet.network_id, PROOFS), wire.encode(ProofBundle((later,))))
        await trio.sleep(1)

    target = c.nodes[0].gossip.counters
    checked = sum(checks[s] for s in sigs)
    assert checked <= budget.items + int(elapsed * budget.refill_per_second) + 64
    assert flooded >= checked  # each check was for an item then delivered (honest ones beside)
    assert target.items_over_budget == len(flood) - checked > 0
    assert checks[wire.decode_as(later, wire.Envelope).signature] == 1  # judged again, not skipped
    assert not c.transports[0].is_banned(attacker.peer_id)
    assert target.reject_codes == {} and c.transports[0].counters.peers_banned == 0


async def test_proofs_far_too_old_cost_their_forwarder_nothing_and_go_no_further(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A proof many epochs late is what a starved sender's queue or a mesh backlog delivers, not
    proof of malice (16 processes on 2 cores banned honest peers for it): it is ignored before
    its signature, remembered, never relayed, and costs no one. Only far-future proofs cost."""
    c = cluster.make_cluster(nodes=2, start_ms=cluster.T0 + 8 * cluster.EPOCH_MS + 500)
    checks = Counter[bytes]()
    c.nodes[0].signatures.check = _recording(checks)
    key, provider = _witness_key(c)
    async with _attacked(c) as attacker:
        epoch = c.nodes[0].pool.current_epoch
        old = [_attestation(key, provider, epoch - 6, i, c.devnet.network_id) for i in range(48)]
        fresh = _attestation(key, provider, epoch, 99, c.devnet.network_id)
        for shift in range(0, 48 * 5, 7):
            k = shift % 48
            bundle = ProofBundle((*(old[k:] + old[:k])[:31], fresh))
            await attacker.publish(topic(c.devnet.network_id, PROOFS), wire.encode(bundle))
            await trio.sleep(0.2)
        await trio.sleep(2)

    target, other = c.nodes[0].gossip.counters, c.nodes[1].gossip.counters
    assert target.ignore_codes.get("far_too_old") == 48  # each judged once, replays are duplicates
    assert sum(checks[wire.decode_as(i, wire.Envelope).signature] for i in old) == 0
    assert target.items_far == 0 and target.items_far_charged == 0
    assert not c.transports[0].is_banned(attacker.peer_id)
    assert c.transports[0].counters.peers_banned == 0
    assert other.ignore_codes.get("far_too_old") is None  # none was relayed...
    held = c.nodes[1].pool.collect(epoch).attestations
    assert any(wire.encode(env) == fresh for env in held)  # ...but the fresh one was, in our bundle
