"""A peer whose PRUNE reached us late is no GRAFT flooder (seen at 32 processes on 2 starved cores).

py-libp2p 0.8.1 marks a GRAFT as a flood, penalises the sender's score and
prunes it back when the GRAFT comes less than ``min(graft_flood_threshold,
prune_back_off)`` after we *received* that peer's PRUNE. The sender counts its
back-off from when it *sent* the PRUNE. With our 10 s back-off and the stock
10 s threshold the margin was zero: on a starved machine, where a PRUNE sits
in queues for seconds, honest peers that re-grafted right after their back-off
were logged "GRAFT flood detected ... applying penalty" hundreds of times per
node. go-libp2p flags a GRAFT within 10 s of a 60 s back-off (1/6 of it);
we flag one within 2 s of our 10 s back-off. Real py-libp2p router.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from libp2p.peer.id import ID

from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage

T = "/depin/test/proofs/1"


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


async def test_a_graft_seconds_after_a_late_prune_is_no_flood_an_immediate_one_is() -> None:
    async with cluster("libp2p", 1) as (node,):
        router = node._router  # type: ignore[attr-defined]
        peer = ID(b"\x00\x24\x08\x01\x12\x20" + bytes(32))
        # Its PRUNE reached us 3 s ago; its own 10 s back-off may have ended since (queued for 7 s).
        router.graft_flood_tracking[peer][T] = time.time() - 3.0
        assert router._check_graft_flood_protection(peer, T)
        # A GRAFT half a second after its PRUNE is a flood whatever the queues did.
        router.graft_flood_tracking[peer][T] = time.time() - 0.5
        assert not router._check_graft_flood_protection(peer, T)
        assert router.prune_back_off == 10
