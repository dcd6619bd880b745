"""Only a proven offence costs a peer: py-libp2p's teardown and load paths, driven for real.

Each test runs real py-libp2p hosts in this process on 127.0.0.1 and
reproduces a way an honest peer used to be banned, or the node used to end,
on a loaded devnet (issue 13):

- a joining peer read an honest publisher's big messages interleaved
  (py-libp2p's replay of recent messages and its sending loop wrote to one
  stream at once), failed to parse them (``DecodeError``), banned the
  publisher as ``malformed_rpc``, and the ban's teardown then ended the node
  with a ``KeyError`` in ``Pubsub._teardown_if_connected``;
- a ban of a peer we were busy sending to: the sending loop, failing on the
  reset stream, removes the peer while the teardown awaits, and the
  teardown's own ``del peers[peer_id]`` raised ``KeyError``;
- a pubsub service stopping while a peer floods: the read loop could not
  schedule work any more (``RuntimeError('Nursery is closed to new
  arrivals')``), which counted as ``malformed_rpc``, and the ban's own
  scheduling raised the same error out of the stream handler;
- a frame cut short by a connection going away.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog.testing
import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pTransport
from depin_p2p.gossip.transport import PeerId, Transport, topic
from tests.adversarial.test_gossip_crash_frames import raw_peer
from tests.unit.gossip.cluster import collect_libp2p_garbage, wait_until

pytestmark = pytest.mark.slow

T = topic("test", "proofs")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept_all(peer: PeerId, data: bytes) -> None:
    return None


def transport(seed: int, clock: Clock) -> Libp2pTransport:
    return Libp2pTransport(KeyPair.from_seed(bytes([seed, 0x7E]) * 16), network_id="test", clock=clock)


def penalties(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] in ("gossip.peer.penalised", "gossip.peer.banned")]


async def mesh_formed(a: Transport, b: Transport) -> None:
    await wait_until(lambda: a.topic_peers(T) == {b.peer_id} and b.topic_peers(T) == {a.peer_id}, 20)


async def test_big_messages_replayed_to_a_joining_peer_are_not_malformed() -> None:
    """An honest publisher of 240 KB messages is never banned by the peers that join it.

    Before the fix the first joiner banned the publisher (``malformed_rpc``,
    a ``DecodeError`` on interleaved frames) and then died in
    ``_teardown_if_connected`` with a ``KeyError``.
    """
    clock = Clock()
    publisher = transport(1, clock)
    with structlog.testing.capture_logs() as logs, trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.run)
            await publisher.subscribe(T, accept_all)
            published = 0

            async def publish_forever() -> None:
                nonlocal published
                while True:
                    published += 1
                    await publisher.publish(T, published.to_bytes(4, "big") * 60_000)
                    await trio.sleep(0.02)

            nursery.start_soon(publish_forever)
            for i in range(3):
                joiner = transport(10 + i, clock)
                async with trio.open_nursery() as inner:
                    await inner.start(joiner.run)
                    received = await joiner.subscribe(T, accept_all)
                    await joiner.connect(publisher.listen_addrs()[0])
                    with trio.fail_after(30):
                        for _ in range(20):
                            msg = await received.receive()
                            assert len(msg.data) == 240_000
                            assert msg.data == msg.data[:4] * 60_000  # whole and unmixed
                    assert joiner.counters.malformed_frames == 0
                    assert not joiner.is_banned(publisher.peer_id)
                    assert publisher.peer_id in joiner.peers()
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    assert penalties(logs) == []


class _SlowClosedStream(INotifee):
    """Stream-closed events that take 200 ms, as on a starved event loop.

    py-libp2p awaits every notifee inside ``NetStream.reset``; a slow one
    holds ``Pubsub._teardown_if_connected`` inside its ``await stream.reset()``,
    the window in which the sending loop fails on the reset stream and
    removes the peer first. On a 2-core machine running 16 nodes that window
    opens on its own; here it opens every time.
    """

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.sleep(0.2)

    async def connected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()


async def test_banning_a_peer_we_are_sending_to_does_not_end_the_node() -> None:
    """Before the fix: ``KeyError`` in ``Pubsub._teardown_if_connected`` out of ``trio.run``."""
    clock = Clock()
    a, b, c = transport(1, clock), transport(2, clock), transport(3, clock)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for t in (a, b, c):
                await nursery.start(t.run)
            subs = {t.peer_id: await t.subscribe(T, accept_all) for t in (a, b, c)}
            await b.connect(a.listen_addrs()[0])
            await mesh_formed(a, b)
            a._host.get_network().register_notifee(_SlowClosedStream())
            for k in range(8):
                await a.publish(T, bytes([k]) * 100_000)
            a.ban(b.peer_id, 60)
            await wait_until(lambda: b.peer_id not in a.peers(), 20)
            await trio.sleep(1)  # the teardown and the sending loop have both finished by now
            # a still runs and still gossips with a fresh peer.
            await c.connect(a.listen_addrs()[0])
            await mesh_formed(a, c)
            await a.publish(T, b"after the ban")
            with trio.fail_after(20):
                while (await subs[c.peer_id].receive()).data != b"after the ban":
                    pass
            assert ID.from_base58(b.peer_id) not in a._pubsub.peers
            nursery.cancel_scope.cancel()


async def test_a_stopping_pubsub_service_blames_no_peer() -> None:
    """The victim's pubsub stops while an honest peer floods it: no penalty, no escape.

    The race is narrow (the read loop must hit the moment the service's
    task nursery has closed but the service still counts as running), so
    the scenario runs several times; before the fix about one run in five
    logged ``malformed_rpc`` with ``RuntimeError('Nursery is closed to new
    arrivals')`` and the ban's own scheduling raised it out of the stream
    handler, ending the host.
    """
    with structlog.testing.capture_logs() as logs, trio.fail_after(240):
        for run in range(8):
            clock = Clock()
            victim, flooder = transport(20 + run, clock), transport(40 + run, clock)
            async with trio.open_nursery() as nursery:
                await nursery.start(victim.run)
                await nursery.start(flooder.run)
                await victim.subscribe(T, accept_all)
                await flooder.subscribe(T, accept_all)
                await flooder.connect(victim.listen_addrs()[0])
                await mesh_formed(victim, flooder)

                async def flood(flooder: Libp2pTransport = flooder) -> None:
                    k = 0
                    while True:
                        k += 1
                        await flooder.publish(T, k.to_bytes(8, "big") * 10)
                        await trio.sleep(0)

                nursery.start_soon(flood)
                await trio.sleep(0.3)
                victim._pubsub.manager.cancel()
                await trio.sleep(1)
                nursery.cancel_scope.cancel()
            assert victim.counters.malformed_frames == 0
    assert penalties(logs) == []


async def test_a_frame_cut_short_by_a_closing_connection_is_no_offence() -> None:
    """Half a frame, then the connection goes away: the sender is gone, not guilty."""
    clock = Clock()
    victim = transport(1, clock)
    with structlog.testing.capture_logs() as logs, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(victim.run)
            await victim.subscribe(T, accept_all)
            for seed, cut in ((51, "close"), (52, "reset")):
                async with raw_peer(seed, victim) as stream:
                    peer = PeerId(ID.from_pubkey(stream.key_pair.public_key).to_base58())
                    await wait_until(lambda peer=peer: peer in victim.peers())
                    # A varint length of 1000 and only 10 bytes of the frame.
                    await stream.write(b"\xe8\x07" + b"\x0a" * 10)
                    await trio.sleep(0.2)
                    if cut == "reset":
                        await stream.reset()
                    else:
                        await stream.raw_host.disconnect(ID.from_base58(victim.peer_id))
                await wait_until(lambda peer=peer: peer not in victim.peers(), 20)
                assert not victim.is_banned(peer)
            nursery.cancel_scope.cancel()
    assert victim.counters.malformed_frames == 0
    assert penalties(logs) == []
