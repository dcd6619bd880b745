"""The signature-check amplification attacker of issue 12, item 1, on real py-libp2p.

Shared by ``tests/adversarial/test_gossip_amplification.py`` and
``bench/amplification.py``. An attacker owns a registered radio (node 3's in
a devnet laid out by :func:`devnet.genesis.plan_devnet`, or the last node's
when there are fewer), so its items pass the registry check:

* ``far``: a pre-signed pool of 48 attestations for epoch 10^12, reshuffled
  into new bundles of 32; when the target bans it, it returns under a new
  peer id (a sybil).
* ``fresh``: unique, validly signed attestations for the running epoch.
"""

from __future__ import annotations

import hashlib
import itertools
import time

import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.service import ProofBundle
from depin_p2p.gossip.transport import PROOFS, topic
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness.compute import Attestation, Outcome
from devnet.genesis import Devnet

FAR = 10**12
BUNDLE = 32


def _attestation(key: KeyPair, provider: bytes, epoch: int, i: int, network_id: str) -> bytes:
    tag = hashlib.blake2b(b"throw-away %d" % i, digest_size=32).digest()
    att = Attestation(key.public_key, provider, epoch, tag, Outcome.PASSED, 100 + i, 64, tag)
    return wire.encode(wire.seal(att, key, network_id))


class Attacker:
    """One sender: a fresh libp2p identity per ban, publishing bundles at one target."""

    def __init__(self, devnet: Devnet, target: str, schedule: EpochSchedule, mode: str, salt: int) -> None:
        radio = next(d for d in devnet.devices_of(min(3, devnet.plan.nodes - 1)) if d.kind == "radio")
        self.key, self.network_id = radio.key, devnet.network_id
        self.provider = next(d for d in devnet.devices if d.kind == "compute").key.public_key
        self.target, self.schedule, self.mode = target, schedule, mode
        self.pool = [_attestation(self.key, self.provider, FAR, i, self.network_id) for i in range(48)]
        self.counter = itertools.count(salt * 10**9)
        self.bundles = self.items = self.identities = 0

    def _bundle(self, shift: int) -> bytes:
        if self.mode == "far":
            k = shift % len(self.pool)
            return wire.encode(ProofBundle(tuple((self.pool[k:] + self.pool[:k])[:BUNDLE])))
        epoch = self.schedule.epoch_at(int(time.time() * 1000))
        items = tuple(
            _attestation(self.key, self.provider, epoch, next(self.counter), self.network_id)
            for _ in range(BUNDLE)
        )
        return wire.encode(ProofBundle(items))

    async def run(self) -> None:
        shift = 0
        while True:  # one identity per loop: a ban costs the attacker a new peer id, nothing more
            self.identities += 1
            host = Libp2pTransport(
                KeyPair.generate(), network_id=self.network_id, clock=Clock(), config=Libp2pConfig()
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(host.run)
                t = topic(self.network_id, PROOFS)
                await host.subscribe(t, lambda peer, data: None)
                try:
                    with trio.fail_after(10):
                        peer = await host.connect(self.target, redial=False)
                except (trio.TooSlowError, Exception):  # noqa: BLE001 -- refused while banned: next identity
                    nursery.cancel_scope.cancel()
                    await trio.sleep(0.5)
                    continue
                while peer in host.peers():
                    await host.publish(t, self._bundle(shift))
                    shift += 7
                    self.bundles += 1
                    self.items += BUNDLE
                    await trio.sleep(0.002)
                nursery.cancel_scope.cancel()
