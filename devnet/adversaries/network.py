"""Network roles: a node abusing the gossip layer itself.

- ``invalid-signature-flood``: every 100 ms publishes one of its own votes
  again with a corrupted signature (a new content id each time, so no
  de-duplication spares the receivers the check). Caught as
  ``bad_signature`` rejects; the forwarder is penalised and banned.
- ``oversized-frames``: once per epoch a vote of 300 kB (over the consensus
  topic's cap) and a proof bundle holding it: ``malformed`` / ``oversized``.
- ``crash-frames``: once per epoch payloads that decode as nothing on both
  topics: ``malformed`` / ``malformed_bundle``, the peer banned; on processes
  also a raw pubsub RPC frame that is not protobuf at all (the frame that
  kills a stock py-libp2p host), written on a new pubsub stream to every
  peer: ``malformed_rpc``, the peer banned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import trio

from depin_p2p import wire
from depin_p2p.consensus.state import Prevote
from depin_p2p.gossip.service import ProofBundle
from depin_p2p.gossip.transport import PROOFS, topic
from devnet.adversaries.base import Host, Role

SYBILS = 24  # eclipse: twice the victim's max_peers (DegreePolicy: target 8 + 4)
VICTIM = 0
# A pubsub RPC frame that is not protobuf: raised DecodeError out of a stock py-libp2p host.
NOT_PROTOBUF = b"\xff\xff\xff\xff\x0f not a protobuf \x00\x01"


class InvalidSignatureFlood(Role):
    name = "invalid-signature-flood"
    family = "network"
    summary = "votes with corrupted signatures at 10/s"
    codes = frozenset({"bad_signature"})
    validator_only = True  # a validator's key: receivers must check the signature to refuse it

    async def run(self, host: Host) -> None:
        n = 0
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 100)
            if not self.active(host):
                continue
            n += 1
            env = wire.seal(Prevote(host.current_epoch(), n % 4, None), host.key, host.network_id)
            sig = bytearray(env.signature)
            sig[0] ^= 0xFF
            forged = dataclasses.replace(env, signature=bytes(sig))
            host.attack.note("forged_signatures", host.clock.now_ms())
            try:
                await host.publish_raw(host.consensus_topic, wire.encode(forged))
            except trio.ClosedResourceError:
                return


class _OncePerEpoch(Role):
    """Sends ``burst`` at the start of each epoch from ``from_epoch`` on."""

    family = "network"

    async def burst(self, host: Host, epoch: int) -> None:
        raise NotImplementedError

    async def run(self, host: Host) -> None:
        sent = 0
        while True:
            now = host.clock.now_ms()
            epoch = host.schedule.epoch_at(now)  # by the clock (host.current_epoch() follows commits)
            if self.active(host) and epoch > sent:
                sent = epoch
                try:
                    await self.burst(host, epoch)
                except trio.ClosedResourceError:
                    return
            await host.clock.sleep_until_ms(max(now + 1, host.schedule.start_of(epoch + 1)))


class OversizedFrames(_OncePerEpoch):
    name = "oversized-frames"
    summary = "messages over the topics' size caps (a vote of 300 kB, a bundle holding it)"
    codes = frozenset({"oversized", "malformed", "malformed_bundle"})

    async def burst(self, host: Host, epoch: int) -> None:
        env = wire.seal(Prevote(epoch, 0, None), host.key, host.network_id)
        huge = dataclasses.replace(env, body=env.body + bytes(300_000))
        await host.publish_raw(host.consensus_topic, wire.encode(huge))
        await host.publish_raw(topic(host.network_id, PROOFS), wire.encode(ProofBundle((wire.encode(huge),))))
        host.attack.note("oversized_messages", host.clock.now_ms(), 2)


class CrashFrames(_OncePerEpoch):
    """Payloads that decode as nothing, and on processes raw RPC frames that are not protobuf (the
    simulator's memory network carries payloads, not py-libp2p frames: there it sends none)."""

    name = "crash-frames"
    summary = "frames that decode as nothing, on the consensus and proofs topics"
    codes = frozenset({"malformed", "malformed_bundle", "malformed_rpc"})

    async def burst(self, host: Host, epoch: int) -> None:
        for i in range(4):
            junk = bytes([0xC1, epoch % 256, i]) + b"\xff" * 16  # 0xc1: never used in msgpack
            await host.publish_raw(host.consensus_topic, junk)
            await host.publish_raw(topic(host.network_id, PROOFS), junk + b"\x00")
            host.attack.note("malformed_frames", host.clock.now_ms(), 2)
        sent = await host.send_frames((NOT_PROTOBUF,))
        if sent:
            host.attack.note("raw_rpc_frames", host.clock.now_ms(), sent)


class GossipSpam(_OncePerEpoch):
    """Valid-looking duplicates: its last own vote (good signature, this network, this epoch)
    published again ``COPIES`` times at once each epoch, byte for byte."""

    name = "gossip-spam"
    summary = "its last vote re-sent 5000 times at once, each epoch"
    codes = frozenset({"rate_limited"})
    validator_only = True  # its own votes are what it re-sends
    COPIES = 5_000  # over the per-peer burst of 4000 (depin_p2p.gossip.transport.RATE_BURST)

    def __init__(self) -> None:
        self._last: bytes | None = None

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        if topic_name == host.consensus_topic:
            item = wire.decode(data)
            if isinstance(item, wire.Envelope) and item.signer == host.key.public_key:
                self._last = data
        return ()

    async def burst(self, host: Host, epoch: int) -> None:
        if self._last is None:
            return
        for _ in range(self.COPIES):
            await host.publish_raw(host.consensus_topic, self._last)
        host.attack.note("duplicates_sent", host.clock.now_ms(), self.COPIES)


class Eclipse(Role):
    """Many peer ids dialling one victim, to fill its connections with the adversary's."""

    name = "eclipse"
    summary = f"{SYBILS} sybil peer ids dial node {VICTIM} and hold their connections"
    family = "network"
    codes = frozenset({"sybils_pruned"})

    async def run(self, host: Host) -> None:
        while not self.active(host):
            await host.clock.sleep_until_ms(host.clock.now_ms() + 500)
        await host.hold_sybil_connections(SYBILS, VICTIM)


class SlowLoris(Role):
    """Streams opened and held, sending nothing: four a second to every peer."""

    name = "slow-loris"
    summary = "opens a stream to every peer 4 times a second and holds it, sending nothing"
    family = "network"
    codes = frozenset({"excess_streams", "peer_banned"})

    async def run(self, host: Host) -> None:
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 250)
            if not self.active(host):
                continue
            held, refused = await host.open_streams()
            now = host.clock.now_ms()
            if held:
                host.attack.note("streams_held", now, held)
            if refused:
                host.attack.note("streams_reset", now, refused)


ROLES: tuple[type[Role], ...] = (
    InvalidSignatureFlood, OversizedFrames, CrashFrames, GossipSpam, Eclipse, SlowLoris)
