"""Each peer's heartbeat control frame holds its own GRAFTs, PRUNEs and IHAVEs only (real py-libp2p).

py-libp2p 0.8.1's ``GossipSub._emit_control_msgs`` builds its GRAFT, PRUNE
and IHAVE lists once, before the loop over the peers it grafts, and never
empties them: the second peer grafted in a heartbeat also got the first
one's GRAFTs, PRUNEs and IHAVEs, the third those of both, and so on. At 32
processes (``bench/scale.py --sizes 32 --sim-sizes '' --radios-per-node 1
--keep DIR``) the nodes logged 29,749 "GRAFT: ignoring request ... back off"
lines in 15 minutes, meshes were torn by PRUNEs meant for other peers, and
epoch 1 never committed (17 rounds, proposals missed). Three nodes on
127.0.0.1; what each receiver is told is recorded as it arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from depin_p2p.gossip.transport import topic
from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage, wait_until

T1 = topic("test", "proofs")
T2 = topic("test", "consensus")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: object, data: bytes) -> None:
    pass


def _record(router: Any, told: list[tuple[str, str]]) -> None:
    """Record each GRAFT, PRUNE and IHAVE ``router`` receives as (kind, topic), then handle it."""
    for kind in ("graft", "prune", "ihave"):
        original = getattr(router, f"handle_{kind}")

        async def handle(msg: Any, sender: Any, kind: str = kind, original: Any = original) -> None:
            told.append((kind, msg.topicID))
            await original(msg, sender)

        setattr(router, f"handle_{kind}", handle)


async def test_a_heartbeats_control_frame_to_a_peer_carries_only_what_is_meant_for_that_peer() -> None:
    async with cluster("libp2p", 3) as nodes:
        # Only the receivers subscribe: nothing but the frames under test goes from node 0 to them
        # on these topics (node 0 has no mesh there, so its heartbeat grafts nobody).
        for n in nodes[1:]:
            await n.subscribe(T1, accept)
            await n.subscribe(T2, accept)
        for j in (1, 2):
            await nodes[0].connect(nodes[j].listen_addrs()[0])
        routers = [n._router for n in nodes]  # type: ignore[attr-defined]
        await wait_until(lambda: all(len(routers[0].pubsub.peer_topics.get(t, ())) == 2 for t in (T1, T2)))
        told: list[list[tuple[str, str]]] = [[], []]
        for j in (1, 2):
            _record(routers[j], told[j - 1])
        first, second = (ID.from_base58(str(nodes[j].peer_id)) for j in (1, 2))
        # One heartbeat's decisions: GRAFT the first peer on T1 (and PRUNE it on T2, IHAVE on
        # T1), GRAFT the second on T2 only.
        await routers[0]._emit_control_msgs(
            {first: [T1], second: [T2]}, {first: [T2]}, {first: {T1: [b"m" * 20]}}
        )
        with trio.fail_after(10):
            await wait_until(lambda: ("graft", T2) in told[1] and ("graft", T1) in told[0])
            await trio.sleep(0.5)  # anything else sent to the second peer arrives by now
        assert sorted(told[0]) == [("graft", T1), ("ihave", T1), ("prune", T2)]
        assert told[1] == [("graft", T2)]
