"""IDONTWANT for big messages only (real py-libp2p router, three nodes on 127.0.0.1).

A 500 kB proposal used to reach each node once from every mesh peer that
forwarded it; an IDONTWANT from a peer that already has it saves the copy.
For a few-kB message the control frame costs more than it saves (measured on
a 5-process mesh), so none is sent below ``_GossipSub.idontwant_min_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator

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
    small = b"s" * 3_000
    async with cluster("libp2p", 3) as nodes:
        subs = [await n.subscribe(T, accept) for n in nodes]
        for i, j in ((0, 1), (1, 2), (0, 2)):
            await nodes[i].connect(nodes[j].listen_addrs()[0])
        await wait_until(lambda: all(len(n.topic_peers(T)) == 2 for n in nodes))
        publisher, router = nodes[0], nodes[0]._router  # type: ignore[attr-defined]

        def unwanted_by() -> set[str]:
            return {str(p) for p, ids in router.dont_send_message_ids.items() if ids}

        await publisher.publish(T, small)
        with trio.fail_after(10):
            for s in subs[1:]:
                assert (await s.receive()).data == small
        await trio.sleep(0.5)  # room for a wrongly sent IDONTWANT to arrive
        assert unwanted_by() == set()
        await publisher.publish(T, big)
        with trio.fail_after(10):
            for s in subs[1:]:
                assert (await s.receive()).data == big
            await wait_until(lambda: unwanted_by() == {nodes[1].peer_id, nodes[2].peer_id})
        mid = message_id([T], big)
        assert all(mid in ids for ids in router.dont_send_message_ids.values())
