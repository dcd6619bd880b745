"""Bounded degree on the memory network: 16 nodes that know only two seeds find each other through PX.

The same peer manager runs here as in a process (the node's own assembly);
consensus still commits and compute challenges still reach providers the
witness was not connected to (the witness dials them on demand).
"""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus.state import Certificate
from depin_p2p.consensus.value import EpochContent
from depin_p2p.gossip.degree import DegreePolicy
from depin_p2p.gossip.memory import MemoryNetwork
from depin_p2p.gossip.peers import PeerManager
from depin_p2p.witness import compute
from tests.sim import cluster
from tests.sim.test_consensus_cluster import chain
from tests.unit.gossip.cluster import wait_until

NODES = 16
TARGET = 6
SEEDS = (0, 1)


def seeds_of(i: int) -> list[int]:
    return [s for s in SEEDS if s != i]


async def test_sixteen_nodes_from_two_seeds_reach_the_target_degree_commit_and_answer_challenges(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = DegreePolicy(target=TARGET)
    c = cluster.make_cluster(
        nodes=NODES,
        with_consensus=True,
        validators=4,
        radios_per_node=1,
        bootstrap=seeds_of,
        degree=policy,
        seed=b"px-sim",
    )
    epochs = 3
    degrees: list[int] = []
    final: list[frozenset[str]] = []
    with trio.fail_after(900):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            # Before the first epoch ends, every node has found its peers through PX alone.
            await c.clock.sleep_until_ms(c.schedule.start_of(1) + 10_000)
            degrees = [len(t.peers()) for t in c.transports]
            while min(led.last_epoch() for led in c.ledgers) < epochs:
                await trio.sleep(1)
            final = [t.peers() for t in c.transports]
            nursery.cancel_scope.cancel()

    assert min(degrees) >= min(TARGET, NODES - 1), degrees
    # Validators keep a direct line to each other; followers stay near the target.
    validators = set(range(4))
    for i in validators:
        assert {c.transports[j].peer_id for j in validators if j != i} <= final[i], i
    followers = [d for i, d in enumerate(degrees) if i not in validators | set(SEEDS)]
    assert max(followers) < NODES - 1, degrees  # not a full mesh
    chains = [chain(led, epochs) for led in c.ledgers]
    assert all(ch == chains[0] for ch in chains)  # agreement on every node, epoch by epoch
    # Epochs 2 and 3 are challenged (assignments need the previous certificate): every provider
    # passes with every one of its witnesses, none is unanswered although no witness knew it at start.
    providers = {d.key.public_key for d in c.devnet.devices if d.kind == "compute"}
    for epoch in (2, 3):
        cert = wire.decode_as(c.ledgers[0].get_certificate(epoch) or b"", Certificate)
        content = wire.decode_as(cert.candidate.value, EpochContent)
        atts = [wire.decode_as(a.body, compute.Attestation) for a in content.attestations]
        assert {a.provider for a in atts} == providers, epoch
        assert all(a.outcome is compute.Outcome.PASSED for a in atts), [a.outcome for a in atts]
    assert all(t.counters.peers_banned == 0 for t in c.transports)
    reached = sum(n.peers.counters.reached for n in c.nodes)
    print(
        "degrees:",
        degrees,
        "final:",
        [len(f) for f in final],
        "reached:",
        reached,
        "pruned:",
        sum(n.peers.counters.pruned for n in c.nodes),
    )


async def test_concurrent_reaches_and_planned_dials_of_one_peer_share_one_dial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A node 5 crashed this way in a 16-process devnet: reach() and the plan dialled one peer at once.
    net = MemoryNetwork(seed=3)
    a, b = net.create_node("a"), net.create_node("b")
    clock = Clock(wall_anchor_ms=0)
    manager = PeerManager(a, network_id="t", clock=clock, bootstrap=[b.listen_addrs()[0]])
    results: list[bool] = []

    async def reach() -> None:
        results.append(await manager.reach(b.peer_id))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await nursery.start(PeerManager(b, network_id="t", clock=clock).run)
            await nursery.start(manager.run)  # its first plan dials b...
            for _ in range(5):
                nursery.start_soon(reach)  # ... while these want b too
            await wait_until(lambda: len(results) == 5)
            nursery.cancel_scope.cancel()
    assert results == [True] * 5
    assert manager.counters.dials == 1 and manager.counters.dial_failures == 0
