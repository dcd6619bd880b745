"""The memory network's perturbations: seeded loss, duplication, reordering, latency, partitions."""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork, open_stream
from depin_p2p.gossip.transport import GossipMessage, PeerId, topic

T = topic("sim", "proofs")


def accept(peer: PeerId, data: bytes) -> None:
    pass


async def run_pair(
    seed: int, link: LinkProfile, count: int, *, dispatch: bool = False
) -> tuple[list[bytes], list[float], int]:
    """Publish ``count`` messages a -> b; return what b got (in order), arrival times, duplicates seen.

    ``dispatch``: the network's one delivery task runs (as in the simulator) instead of each node's own.
    """
    net = MemoryNetwork(seed=seed, default_link=link)
    a, b = net.create_node("a"), net.create_node("b")
    got: list[bytes] = []
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        if dispatch:
            await nursery.start(net.run)
        await nursery.start(a.run)
        await nursery.start(b.run)
        sub: trio.MemoryReceiveChannel[GossipMessage] = await b.subscribe(T, accept)
        await a.subscribe(T, accept)
        await a.connect(b.listen_addrs()[0])
        start = trio.current_time()
        for i in range(count):
            await a.publish(T, b"m%04d" % i)
        await trio.sleep(5)
        while True:
            try:
                got.append(sub.receive_nowait().data)
            except trio.WouldBlock:
                break
        times.append(trio.current_time() - start)
        nursery.cancel_scope.cancel()
    return got, times, b.counters.duplicates


async def test_latency_is_virtual_and_exact(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=1, default_link=LinkProfile(latency_ms=250))
    a, b = net.create_node("a"), net.create_node("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        sub = await b.subscribe(T, accept)
        await a.connect(b.listen_addrs()[0])
        start = trio.current_time()
        await a.publish(T, b"x")
        await sub.receive()
        assert trio.current_time() - start == 0.25
        nursery.cancel_scope.cancel()


async def test_loss_duplication_reordering_are_seeded(autojump_clock: trio.testing.MockClock) -> None:
    link = LinkProfile(
        latency_ms=10, jitter_ms=20, loss_ppm=200_000, duplicate_ppm=200_000, reorder_ppm=200_000
    )
    got1, _, dups1 = await run_pair(7, link, 500)
    got2, _, dups2 = await run_pair(7, link, 500)
    got3, _, _ = await run_pair(8, link, 500)
    assert got1 == got2 and dups1 == dups2  # same seed, same run
    assert got1 != got3
    assert 300 < len(got1) < 480  # ~20 % lost
    assert len(set(got1)) == len(got1)  # duplicates are de-duplicated...
    assert dups1 > 30  # ...but they did happen
    assert got1 != sorted(got1)  # reordered


async def test_one_delivery_task_delivers_what_each_nodes_own_loop_would(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = LinkProfile(
        latency_ms=10, jitter_ms=20, loss_ppm=200_000, duplicate_ppm=200_000, reorder_ppm=200_000
    )
    own = await run_pair(7, link, 300)
    shared = await run_pair(7, link, 300, dispatch=True)
    assert shared == own  # same messages, same order, same duplicates, same time
    assert len(own[0]) > 150


async def test_partition_and_heal(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(seed=3)
    nodes = [net.create_node(f"n{i}") for i in range(4)]
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await nursery.start(n.run)
        subs = [await n.subscribe(T, accept) for n in nodes]
        for a, b in zip(nodes[1:], nodes, strict=False):
            await a.connect(b.listen_addrs()[0])
        net.partition([nodes[0].peer_id, nodes[1].peer_id], [nodes[2].peer_id, nodes[3].peer_id])
        await nodes[0].publish(T, b"during")
        await trio.sleep(1)
        assert subs[1].receive_nowait().data == b"during"
        for sub in subs[2:]:
            assert sub.statistics().current_buffer_used == 0
        net.heal()
        await nodes[0].publish(T, b"after")
        await trio.sleep(1)
        assert [s.receive_nowait().data for s in subs[1:]] == [b"after"] * 3
        assert net.counters.partitioned == 1
        nursery.cancel_scope.cancel()


def _drain(sub: trio.MemoryReceiveChannel[GossipMessage]) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sub.receive_nowait().data)
        except trio.WouldBlock:
            return got


async def test_a_mesh_reaches_everyone_with_bounded_fan_out_and_reforms_around_a_cut(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sent_by_degree: dict[int | None, int] = {}
    for degree in (None, 3):
        net = MemoryNetwork(seed=3, default_link=LinkProfile(latency_ms=5), mesh_degree=degree)
        nodes = [net.create_node(f"m{i}") for i in range(16)]
        subs: list[trio.MemoryReceiveChannel[GossipMessage]] = []
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
                subs.append(await node.subscribe(T, accept))
            for i, a in enumerate(nodes):  # a full graph of connections, as the simulator makes
                for b in nodes[:i]:
                    await a.connect(b.listen_addrs()[0])
            for k in range(4):
                await nodes[k].publish(T, b"msg%d" % k)
            await trio.sleep(2)
            for i, sub in enumerate(subs):  # everyone got every message but its own, once
                assert sorted(_drain(sub)) == sorted(b"msg%d" % k for k in range(4) if k != i)
            sent_by_degree[degree] = net.counters.sent
            if degree is not None:
                mesh = {a.peer_id: net.gossip_targets(a.peer_id, T) for a in nodes}
                assert all(degree <= len(t) < 15 for t in mesh.values())  # at least D, not everyone
                assert all(a in mesh[b] for a, ts in mesh.items() for b in ts)  # links go both ways
                # Cut every node's preferred peers off from node 0: its mesh re-forms on the rest.
                cut = set(mesh[nodes[0].peer_id])
                net.partition([p.peer_id for p in nodes if p.peer_id not in cut])
                assert not set(net.gossip_targets(nodes[0].peer_id, T)) & cut
                await nodes[0].publish(T, b"after the cut")
                await trio.sleep(2)
                for i, sub in enumerate(subs[1:], start=1):
                    assert (b"after the cut" in _drain(sub)) == (nodes[i].peer_id not in cut)
            nursery.cancel_scope.cancel()
    assert sent_by_degree[3] < sent_by_degree[None] / 2  # the point: far fewer copies on the wire


async def test_gossip_over_a_peers_rate_is_dropped_and_counted_by_peer_not_charged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The libp2p transport's per-peer rate limit (4000 burst, 2000/s), charged before the
    seen-cache: a peer re-sending one message 5000 times at once gets 4000 through the limit
    (one delivered, 3999 duplicates), the rest dropped and counted against it, and no penalty."""
    net = MemoryNetwork(seed=1)
    a, b = net.create_node("a"), net.create_node("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        sub = await b.subscribe(T, accept)
        await a.connect(b.listen_addrs()[0])
        for _ in range(5000):
            await a.publish(T, b"same")
        await trio.sleep(1)
        assert sub.receive_nowait().data == b"same"
        assert b.counters.duplicates == 3999
        assert b.counters.dropped_rate_limited == 1000
        assert b.counters.rate_limited_peers == {a.peer_id: 1000}
        assert not b.is_banned(a.peer_id) and a.peer_id in b.peers()
        nursery.cancel_scope.cancel()


async def test_held_streams_beyond_a_peers_share_are_reset_then_charged_until_a_ban(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """libp2p's pubsub stream rule: 2 held per peer, each further one reset; past a tolerance of
    16 each costs excess_pubsub_streams (10 points of the 100 that ban)."""
    net = MemoryNetwork(seed=1)
    a, b = net.create_node("a"), net.create_node("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await a.connect(b.listen_addrs()[0])
        held = [await open_stream(a, b.peer_id) for _ in range(2 + 16)]
        assert held == [True, True] + [False] * 16
        assert not b.is_banned(a.peer_id)  # within the tolerance: reset, not charged
        for _ in range(10):
            assert await open_stream(a, b.peer_id) is False
        assert b.is_banned(a.peer_id) and a.peer_id not in b.peers()
        assert b.counters.excess_streams_peers == {a.peer_id: 26}
        nursery.cancel_scope.cancel()
