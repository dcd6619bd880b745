"""A compute device registered mid-run costs no honest peer anything (issue 10, item 1).

The README's flow: with the devnet running, a node runner registers a
compute device (``depin-p2p device register --kind compute``) and has not
(yet) restarted the node with its key. Once the registration commits, the
device is assigned witnesses, and they challenge the owner's node, which
runs no driver for it. That node used to answer every such challenge with
``Reject('unknown_provider')``: it penalised, then banned, all its honest
peers, dropped to zero peers and stalled.

Here the whole cluster (witnessing, gossip, tx pool, consensus) runs on the
memory network under virtual time, through the node's own services.
"""

from __future__ import annotations

import structlog.testing
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate
from depin_p2p.consensus.value import EpochContent
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.state import RegisterDevice, sign_device_binding
from depin_p2p.model import DeviceKind
from depin_p2p.witness.compute import Attestation
from tests.sim import cluster
from tests.sim.test_consensus_cluster import chain


def _register_compute(c: cluster.Cluster, owner: KeyPair, device: KeyPair, nonce: int) -> bytes:
    tx = RegisterDevice(
        nonce=nonce,
        device_id=device.public_key,
        kind=DeviceKind.COMPUTE,
        location=0,
        frequency_hz=0,
        tx_power_cdbm=0,
        gain_cdbi=0,
        capacity=8,
        device_signature=sign_device_binding(device, owner.public_key, c.devnet.network_id),
    )
    return wire.encode(wire.seal(tx, owner, c.devnet.network_id))


def _certificate(c: cluster.Cluster, node: int, epoch: int) -> Certificate:
    return wire.decode_as(c.ledgers[node].get_certificate(epoch) or b"", Certificate)


def _attested(c: cluster.Cluster, node: int, provider: bytes) -> list[Attestation]:
    """Attestations about ``provider`` in every value ``node`` committed."""
    found = []
    for epoch in range(1, c.ledgers[node].last_epoch() + 1):
        content = wire.decode_as(_certificate(c, node, epoch).candidate.value, EpochContent)
        for env in content.attestations:
            att = wire.decode_as(env.body, Attestation)
            if att.provider == provider:
                found.append(att)
    return found


async def test_registering_a_compute_device_mid_run_penalises_no_peer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    owner = c.devnet.node_keys[0]
    gpu = KeyPair.from_seed(b"gpu registered mid-run".ljust(32, b"."))
    n = len(c.transports)
    everyone = {t.peer_id for t in c.transports}
    with structlog.testing.capture_logs() as logs, trio.fail_after(3_000):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            # Let a couple of epochs commit first: the registration lands mid-run.
            while min(led.last_epoch() for led in c.ledgers) < 2:
                await trio.sleep(1)
            tx_id = await c.txs[0].submit(_register_compute(c, owner, gpu, nonce=0))
            while any(t.pool.outcome(tx_id) is None for t in c.txs):
                await trio.sleep(1)
            registered_in = c.txs[0].pool.outcome(tx_id)
            assert registered_in is not None and registered_in.code is None, registered_in
            # Every node knows the device from the epoch after its registration's.
            for led in c.ledgers:
                device = led.get_device(gpu.public_key)
                assert device is not None and device.owner == owner.public_key
            # Run several more epochs: the new provider is assigned and challenged each.
            target = registered_in.epoch + 5
            while min(led.last_epoch() for led in c.ledgers) < target:
                await trio.sleep(1)
            connected = [t.peers() for t in c.transports]
            nursery.cancel_scope.cancel()

    offences = [e for e in logs if e["event"] in ("gossip.peer.penalised", "gossip.peer.banned")]
    assert offences == [], offences[:5]
    for t, peers in zip(c.transports, connected, strict=True):
        assert peers == everyone - {t.peer_id}, t.peer_id
        assert all(t._standing.table.score(p, c.clock.now_ms()) == 0 for p in everyone)  # type: ignore[attr-defined]
    # One chain, still committing: every node reached the target with the same certificates.
    chains = [chain(led, target) for led in c.ledgers]
    assert all(ch == chains[0] for ch in chains)
    # The new provider was challenged once everyone had committed its registration: its
    # witnesses attested (no driver answers on node 0, so they record no response).
    attestations = _attested(c, 1, gpu.public_key)
    assert attestations, "the new provider was never challenged"
    assert min(a.epoch for a in attestations) <= registered_in.epoch + 2
    assert n == 4
