"""Four nodes witness each other on the memory network, in virtual time."""

from __future__ import annotations

import hashlib

import pytest
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.value import ValueParams, build_content, check_content
from depin_p2p.errors import TransportError
from depin_p2p.gossip.transport import CHALLENGE, protocol
from depin_p2p.ledger.state import validator_set
from depin_p2p.model import DeviceKind
from depin_p2p.witness import compute
from depin_p2p.witness.assign import assign_compute_witnesses
from tests.sim import cluster

EPOCH_MS = cluster.EPOCH_MS


async def test_one_epoch_of_witnessing_fills_every_pool(autojump_clock: trio.testing.MockClock) -> None:
    c = cluster.make_cluster()
    async with trio.open_nursery() as nursery:
        await c.start(nursery)
        await c.clock.sleep_until_ms(c.schedule.end_of(1) - 1)
        nursery.cancel_scope.cancel()

    devices = tuple(c.ledgers[0].iter_devices())
    radios_total = sum(1 for d in devices if d.kind is DeviceKind.RADIO)
    providers = sum(1 for d in devices if d.kind is DeviceKind.COMPUTE)
    for pool in c.pools:
        got = pool.collect(1)
        assert len(got.beacons) == radios_total
        assert len(got.reports) >= radios_total  # every beacon is heard by someone
        assert len(got.attestations) == providers * 3
        passed = [wire.decode_as(a.body, compute.Attestation) for a in got.attestations]
        assert all(a.outcome is compute.Outcome.PASSED for a in passed)
    # All nodes hold the same proofs, and a value built from one node's pool checks on another's ledger.
    assert len({frozenset(wire.encode(e) for e in p.collect(1).reports) for p in c.pools}) == 1
    params = ValueParams(network_id=c.devnet.network_id, emission_per_epoch=1_000_000_000)
    got = c.pools[0].collect(1)
    built = build_content(
        c.ledgers[0],
        epoch=1,
        beacons=got.beacons,
        reports=got.reports,
        attestations=got.attestations,
        txs=(),
        evidence=(),
        params=params,
    )
    assert built.dropped == ()
    assert len(built.content.ledger.rewards) > 0
    assert check_content(c.ledgers[3], built.content, params).root == built.content.state_root
    assert all(s.challenges_answered > 0 for s in c.services)
    print(
        f"beacons={len(got.beacons)} reports={len(got.reports)} attestations={len(got.attestations)}",
        f"paid={len(built.content.ledger.rewards)} accounts",
    )


async def test_a_provider_answers_each_witness_once_per_epoch(autojump_clock: trio.testing.MockClock) -> None:
    c = cluster.make_cluster()
    net = c.devnet.network_id
    view = c.ledgers[0]
    table = assign_compute_witnesses(
        prev_cert_hash=view.last_certificate_hash(),
        epoch=1,
        devices=tuple(view.iter_devices()),
        validators=validator_set(view),
    )
    keys = {d.key.public_key: d.key for d in c.devnet.devices}
    owner_node = {k.public_key: i for i, k in enumerate(c.devnet.node_keys)}
    assignment = table[0]
    witness = keys[assignment.witnesses[0]]
    provider = view.get_device(assignment.provider)
    assert provider is not None
    target = c.transports[owner_node[provider.owner]].peer_id
    sender = c.transports[(owner_node[provider.owner] + 1) % 4]

    def challenge(epoch: int) -> bytes:
        now = c.clock.now_ms()
        seed = hashlib.blake2b(b"again", digest_size=32).digest()
        ch = compute.Challenge(
            witness.public_key,
            provider.device_id,
            epoch,
            seed,
            compute.challenge_size(provider.capacity),  # the right size: only the replay rule objects
            compute.MODULUS,
            now,
            now + 5_000,
        )
        return wire.encode(wire.seal(ch, witness, net))

    async with trio.open_nursery() as nursery:
        await c.start(nursery)
        # After the epoch's own challenges (a quarter in), the same witness is refused.
        await c.clock.sleep_until_ms(c.schedule.start_of(1) + EPOCH_MS // 2)
        with pytest.raises(TransportError):
            await sender.request(target, protocol(net, CHALLENGE), challenge(1), timeout=5)
        with pytest.raises(TransportError):
            await sender.request(target, protocol(net, CHALLENGE), challenge(5), timeout=5)
        nursery.cancel_scope.cancel()
    answered = sum(s.challenges_answered for s in c.services)
    assert answered == len(table) * 3  # the two extra challenges were not computed


async def test_a_challenge_left_unanswered_does_not_hold_the_pools_epoch_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With epochs shorter than the challenge timeout (10 s), a provider that never answers
    (its node frozen) used to hold each challenger's epoch loop for the whole timeout: the
    pool's running epoch fell behind the clock by more each epoch, until honest proofs of
    the running epoch looked far out of window and cost the peers that forwarded them."""
    c = cluster.make_cluster(nodes=4, epoch_ms=4_000, with_consensus=True)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            await c.clock.sleep_until_ms(c.schedule.start_of(1) + 1_000)
            c.network.pause(c.transports[3].peer_id)  # its provider answers no challenge from now on
            await c.clock.sleep_until_ms(c.schedule.start_of(12) + 1_000)
            running = c.schedule.epoch_at(c.clock.now_ms())
            epochs = [n.pool.current_epoch for n in c.nodes[:3]]
            far = [n.gossip.counters.items_far for n in c.nodes[:3]]
            nursery.cancel_scope.cancel()
    assert epochs == [running] * 3
    assert far == [0, 0, 0]
