"""Issue 18, "Yamux receive windows": reading gossip does not send a window update per read.

py-libp2p 0.8.1 credits a Yamux stream's receive window back after every
read, and a pubsub RPC is read as its varint length (byte by byte) and then
its body: three or four WINDOW_UPDATE frames per message, each Noise-encrypted
and sent on its own. Our pubsub streams credit in halves of the window, as
go-yamux does. Real py-libp2p on 127.0.0.1: the sender's view of its send
window shows how much credit the receiver returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pTransport
from depin_p2p.gossip.transport import PeerId, topic
from tests.unit.gossip.cluster import collect_libp2p_garbage, connect_line, wait_until

T = topic("window", "proofs")
SMALL = 1_000
BIG = 200_000


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: PeerId, data: bytes) -> None:
    pass


def send_window(sender: Libp2pTransport, to: Libp2pTransport) -> int:
    """The sender's remaining credit on its pubsub stream to ``to`` (py-libp2p internals)."""
    streams: dict[Any, Any] = sender._pubsub.peers
    (stream,) = [s for pid, s in streams.items() if pid.to_base58() == to.peer_id]
    window: int = stream.muxed_stream.send_window
    return window


async def test_small_reads_return_no_credit_until_half_the_window_is_read() -> None:
    clock = Clock()
    sender = Libp2pTransport(KeyPair.from_seed(b"S" * 32), network_id="window", clock=clock)
    receiver = Libp2pTransport(KeyPair.from_seed(b"R" * 32), network_id="window", clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await nursery.start(receiver.run)
        await sender.subscribe(T, accept)
        sub = await receiver.subscribe(T, accept)
        await connect_line([receiver, sender])
        await wait_until(lambda: sender.topic_peers(T) == {receiver.peer_id})
        before = send_window(sender, receiver)
        for i in range(20):
            await sender.publish(T, bytes([i]) * SMALL)
        await wait_until(lambda: receiver.counters.delivered >= 20)
        # 20 small messages read: no credit back yet (per-read credit would have refilled it).
        assert send_window(sender, receiver) <= before - 20 * SMALL
        # Past half the window (py-libp2p grew it while the streams were negotiated), credit
        # comes back and nothing stalls.
        big = (before + 2 * BIG) // BIG
        for i in range(big):
            await sender.publish(T, bytes([i % 256]) * BIG)
        await wait_until(lambda: receiver.counters.delivered >= 20 + big)
        assert send_window(sender, receiver) > before - 20 * SMALL - big * BIG
        got = 0
        while True:
            try:
                sub.receive_nowait()
            except trio.WouldBlock:
                break
            got += 1
        nursery.cancel_scope.cancel()
    assert got == 20 + big
