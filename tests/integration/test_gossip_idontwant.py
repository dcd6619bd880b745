"""IDONTWANT for big messages only (real py-libp2p router, three nodes on 127.0.0.1).

A 500 kB proposal used to reach each node once from every mesh peer that
forwarded it; an IDONTWANT from a peer that already has it saves the copy.
For a few-kB message the control frame costs more than it saves (measured on
a 5-process mesh), so none is sent below ``_GossipSub.idontwant_min_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from depin_p2p.gossip.transport import message_id, topic
from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage, wait_until

T = topic("test", "consensus")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: object, data: bytes) -> None:
    pass


async def test_a_peer_says_it_does_not_want_a_big_message_it_has_and_nothing_for_a_small_one() -> None:
    big = b"p" * 100_000  # a small proposal
    small = b"s" * 3_000  # a bundle
    async with cluster("libp2p", 3) as nodes:
        subs = [await n.subscribe(T, accept) for n in nodes]
        for i, j in ((0, 1), (1, 2), (0, 2)):
            await nodes[i].connect(nodes[j].listen_addrs()[0])
        routers = [n._router for n in nodes]  # type: ignore[attr-defined]
        await wait_until(lambda: all(len(r.mesh.get(T, ())) == 2 for r in routers))
        # What the publisher is told, recorded as it arrives (py-libp2p's own record of it is
        # cleared at every heartbeat).
        told: list[tuple[str, bytes]] = []
        original = routers[0].handle_idontwant

        async def record(msg: Any, sender: Any) -> None:
            told.extend((str(sender), bytes(mid)) for mid in msg.messageIDs)
            await original(msg, sender)

        routers[0].handle_idontwant = record
        await nodes[0].publish(T, small)
        await nodes[0].publish(T, big)
        with trio.fail_after(10):
            for sub in subs[1:]:
                assert {(await sub.receive()).data for _ in range(2)} == {small, big}
            await wait_until(lambda: {peer for peer, _ in told} == {nodes[1].peer_id, nodes[2].peer_id})
        # Both peers said it of the big message, and neither of the small one (sent first).
        assert {mid for _, mid in told} == {message_id([T], big)}
