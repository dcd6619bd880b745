"""Peer exchange on real libp2p (127.0.0.1, port 0): three nodes that know only one seed find each other.

The peer managers are the node's own (``gossip/peers.py``) on real
``Libp2pTransport`` hosts in this process; every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.degree import DegreePolicy
from depin_p2p.gossip.libp2p import Libp2pTransport
from depin_p2p.gossip.peers import PeerManager
from tests.unit.gossip.cluster import collect_libp2p_garbage, wait_until

pytestmark = pytest.mark.slow
NET = "px-test"


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


async def test_three_nodes_knowing_one_seed_discover_each_other_and_reach_on_demand() -> None:
    clock = Clock()
    hosts = [
        Libp2pTransport(KeyPair.from_seed(bytes([7, i]) * 16), network_id=NET, clock=clock) for i in range(4)
    ]
    seed, *others = hosts
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for h in hosts:
                    await nursery.start(h.run)
                seed_addr = seed.listen_addrs()[0]
                managers = [PeerManager(seed, network_id=NET, clock=clock)] + [
                    PeerManager(h, network_id=NET, clock=clock, bootstrap=[seed_addr], policy=DegreePolicy())
                    for h in others
                ]
                for m in managers:
                    await nursery.start(m.run)
                ids = {h.peer_id for h in hosts}
                # Nobody but the seed was named to anyone: the rest came from PX.
                await wait_until(lambda: all(h.peers() == ids - {h.peer_id} for h in hosts), timeout=30)
                # ... and each knows every other's announced address (the dialled side learns it
                # from the dialler's PX request, which may still be in flight).
                pairs = [(m, h) for m, me in zip(managers, hosts, strict=True) for h in hosts if h is not me]
                await wait_until(lambda: all(m.book.get(h.peer_id) is not None for m, h in pairs), timeout=10)
                a, b = others[0], others[1]
                entry = managers[1].book.get(b.peer_id)
                # What A dials B at is what B announced (its listen address), not a port B dialled from.
                assert entry is not None and entry.addrs == b.listen_addrs()
                assert all(h.counters.peers_banned == 0 for h in hosts)

                # A lets B go (no penalty, B off A's re-dial book); reach brings it back on demand.
                await a.disconnect(b.peer_id)
                # A's side only: B may hold its end a while longer (py-libp2p sometimes misses the
                # close; B's pings then find it dead, 3 s + lag each, three misses in a row).
                await wait_until(lambda: b.peer_id not in a.peers())
                assert await managers[1].reach(b.peer_id, timeout=10)
                assert b.peer_id in a.peers() and not b.is_banned(a.peer_id)

                # py-libp2p's own auto-connector must not re-dial whom we let go (it did, after
                # ~70 s): drive the swarm's own trigger with its back-offs cleared.
                await a.disconnect(b.peer_id)
                await wait_until(lambda: b.peer_id not in a.peers())
                swarm: Any = a._host.get_network()
                swarm.auto_connector._recent_disconnects.clear()
                swarm._last_auto_connect_trigger = 0.0
                swarm._schedule_auto_connect()
                await trio.sleep(1.5)
                assert b.peer_id not in a.peers()
                # The stock auto-connector, had it run, would have brought B back (the test can fail).
                await type(swarm.auto_connector).maybe_connect(swarm.auto_connector)
                await wait_until(lambda: b.peer_id in a.peers())
                nursery.cancel_scope.cancel()
    finally:
        collect_libp2p_garbage()
