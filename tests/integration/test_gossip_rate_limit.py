"""Issue 12 item 1, "rate limits count bytes": the per-peer gossip limit charges payload bytes too.

Before, a peer's budget was 2,000 messages/s whatever their size: one peer
could push 1 MiB messages at that rate. Real py-libp2p on 127.0.0.1 with a
small byte budget so that the limit shows within a few messages.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.transport import PeerId, topic
from tests.unit.gossip.cluster import collect_libp2p_garbage, connect_line, wait_until

T = topic("rate", "proofs")
SIZE = 20_000
SENT = 20


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: PeerId, data: bytes) -> None:
    pass


async def test_a_peer_over_its_byte_budget_is_dropped_not_its_message_count() -> None:
    clock = Clock()
    # 2,000 messages/s would let all 20 through; 100 KB of burst lets about 5 of 20 KB through.
    config = Libp2pConfig(rate_limit_bytes_per_second=1_000, rate_limit_bytes_burst=100_000)
    sender = Libp2pTransport(KeyPair.from_seed(b"S" * 32), network_id="rate", clock=clock)
    receiver = Libp2pTransport(KeyPair.from_seed(b"R" * 32), network_id="rate", clock=clock, config=config)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await nursery.start(receiver.run)
        await sender.subscribe(T, accept)
        sub = await receiver.subscribe(T, accept)
        await connect_line([receiver, sender])
        await wait_until(lambda: sender.topic_peers(T) == {receiver.peer_id})
        for i in range(SENT):
            await sender.publish(T, bytes([i]) * SIZE)
        await wait_until(lambda: receiver.counters.delivered + receiver.counters.dropped_rate_limited >= SENT)
        got = 0
        while True:
            try:
                sub.receive_nowait()
            except trio.WouldBlock:
                break
            got += 1
        nursery.cancel_scope.cancel()
    assert 1 <= got <= 100_000 // SIZE + 1
    assert receiver.counters.dropped_rate_limited == SENT - got
