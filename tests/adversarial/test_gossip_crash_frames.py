"""A raw libp2p peer sends every known remote-crash frame and a stream of forged proofs.

Defence under test (LIBP2P_NOTES.md, "Hazards"): the victim resets the stream,
penalises and bans the offender, logs the reason once per offender, and
keeps serving its honest peer both ways.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog.testing
import trio
from libp2p import new_host
from libp2p.crypto import ed25519, x25519
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as Noise
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils import encode_varint_prefixed
from multiaddr import Multiaddr

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.transport import GossipMessage, PeerId, Transport, topic
from depin_p2p.gossip.validation import validate_gossip_envelope
from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage, connect_line, wait_until
from tests.unit.gossip.messages import NETWORK, RULES, forged_proof, signed_proof

T = topic(NETWORK, "proofs")
MESHSUB = TProtocol("/meshsub/1.1.0")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    """Runs after the trio run ends, when libp2p's last closed sockets become garbage."""
    yield
    collect_libp2p_garbage()


def make_validator(clock: Clock) -> Any:
    def validator(peer: PeerId, data: bytes) -> None:
        validate_gossip_envelope(data, network_id=NETWORK, rules=RULES, now_ms=clock.now_ms())

    return validator


@asynccontextmanager
async def raw_peer(seed: int, victim: Transport) -> AsyncIterator[Any]:
    """A bare py-libp2p host connected to ``victim`` with one open /meshsub stream, no pubsub."""
    kp = ed25519.create_new_key_pair(bytes([seed]) * 32)
    host = new_host(
        key_pair=kp,
        sec_opt={NOISE: Noise(kp, noise_privkey=x25519.create_new_key_pair().private_key)},
        muxer_opt={YAMUX: Yamux},
    )
    try:
        async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(Multiaddr(victim.listen_addrs()[0]))
            with trio.fail_after(10):
                await host.connect(info)
                stream = await host.new_stream(info.peer_id, [MESHSUB])
            stream.raw_host = host
            stream.key_pair = kp
            yield stream
    finally:
        collect_libp2p_garbage()


def signed_pubsub_message(kp: Any, data: bytes, seqno: int) -> rpc_pb2.Message:
    """A pubsub message correctly signed at the libp2p layer (only our payload check can refuse it)."""
    from_id = ID.from_pubkey(kp.public_key).to_bytes()
    msg = rpc_pb2.Message(data=data, topicIDs=[T], from_id=from_id, seqno=seqno.to_bytes(8, "big"))
    msg.signature = kp.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = kp.public_key.serialize()
    return msg


async def send_rpc(stream: Any, rpc: rpc_pb2.RPC | bytes) -> None:
    raw = rpc if isinstance(rpc, bytes) else rpc.SerializeToString()
    await stream.write(encode_varint_prefixed(raw))


async def assert_still_serving(
    victim: Transport, honest: Transport, subs: dict[str, Any], tag: bytes
) -> None:
    key = KeyPair.from_seed(b"h" * 32)
    now = Clock().now_ms()
    to_victim, to_honest = signed_proof(key, now, b"h->v " + tag), signed_proof(key, now, b"v->h " + tag)
    await honest.publish(T, to_victim)
    await victim.publish(T, to_honest)
    with trio.fail_after(10):
        got_v: GossipMessage = await subs["victim"].receive()
        got_h: GossipMessage = await subs["honest"].receive()
    assert (got_v.data, got_h.data) == (to_victim, to_honest)


async def test_crash_frames_and_forged_stream_cost_only_the_offender() -> None:
    clock = Clock()
    async with cluster("libp2p", 2) as (victim, honest):
        subs = {
            "victim": await victim.subscribe(T, make_validator(clock)),
            "honest": await honest.subscribe(T, make_validator(clock)),
        }
        await connect_line([victim, honest])
        await wait_until(lambda: victim.topic_peers(T) == {honest.peer_id} == set(victim.peers()))
        await wait_until(lambda: honest.topic_peers(T) == {victim.peer_id})

        with structlog.testing.capture_logs() as logs:
            # 1. A frame that is not protobuf at all.
            async with raw_peer(11, victim) as stream:
                garbage_peer = PeerId(ID.from_pubkey(stream.key_pair.public_key).to_base58())
                await wait_until(lambda: garbage_peer in victim.peers())
                await send_rpc(stream, b"\xff\xff\xff\xff\x0f not a protobuf \x00\x01")
                await wait_until(lambda: victim.is_banned(garbage_peer))
                await wait_until(lambda: garbage_peer not in victim.peers())
            await assert_still_serving(victim, honest, subs, b"1")

            # 2. A message whose from_id hides no key and whose `key` field is garbage.
            async with raw_peer(12, victim) as stream:
                key_peer = PeerId(ID.from_pubkey(stream.key_pair.public_key).to_base58())
                await wait_until(lambda: key_peer in victim.peers())
                sha256_id = b"\x12\x20" + bytes(range(32))  # a peer id that is a hash, not an inlined key
                bad = rpc_pb2.Message(
                    data=b"x", topicIDs=[T], from_id=sha256_id, seqno=b"\0" * 8, signature=b"s" * 64,
                    key=b"\xff\xfe\xfd garbage key",
                )
                await send_rpc(stream, rpc_pb2.RPC(publish=[bad]))
                await wait_until(lambda: victim.is_banned(key_peer))
                await wait_until(lambda: key_peer not in victim.peers())
            await assert_still_serving(victim, honest, subs, b"2")

            # 3. A stream of forged proofs, each correctly signed at the pubsub layer.
            async with raw_peer(13, victim) as stream:
                forger = PeerId(ID.from_pubkey(stream.key_pair.public_key).to_base58())
                await wait_until(lambda: forger in victim.peers())
                device = KeyPair.from_seed(b"d" * 32)
                for i in range(30):
                    forged = forged_proof(device, clock.now_ms(), b"%d" % i)
                    msg = signed_pubsub_message(stream.key_pair, forged, i + 1)
                    try:
                        await send_rpc(stream, rpc_pb2.RPC(publish=[msg]))
                    except (StreamError, IOException):  # the victim cut us off: that is the point
                        break
                await wait_until(lambda: victim.is_banned(forger))
                await wait_until(lambda: forger not in victim.peers())
            await assert_still_serving(victim, honest, subs, b"3")

        assert victim.counters.reject_codes.get("bad_signature", 0) == 10  # banned at the 10th
        assert victim.counters.malformed_frames == 2
        assert victim.counters.peers_banned == 3
        expected = (
            (garbage_peer, "malformed_rpc"),
            (key_peer, "malformed_message"),
            (forger, "bad_signature"),
        )
        for offender, code in expected:
            penalised = [e for e in logs if e["event"] == "gossip.peer.penalised" and e["peer"] == offender]
            banned = [e for e in logs if e["event"] == "gossip.peer.banned" and e["peer"] == offender]
            assert [e["code"] for e in penalised] == [code], penalised
            assert len(banned) == 1, banned
            assert victim.counters.codes_by_peer[offender][code] >= 1  # what /status shows of it
        about_honest = [e for e in logs if e.get("peer") == honest.peer_id and "peer." in e["event"]]
        assert not about_honest
        # Nothing forged reached either subscriber.
        for sub in subs.values():
            assert sub.statistics().current_buffer_used == 0
        assert honest.counters.rejected == 0
