"""Clusters of transports for tests: the same shape over the memory and the libp2p backends."""

from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.libp2p import Libp2pTransport
from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork
from depin_p2p.gossip.penalty import PenaltyPolicy
from depin_p2p.gossip.transport import Transport

KINDS = ("memory", "libp2p")


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fails the test after ``timeout`` (virtual time under MockClock)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


@asynccontextmanager
async def cluster(
    kind: str,
    n: int,
    *,
    seed: int = 1,
    link: LinkProfile | None = None,
    penalty_policy: PenaltyPolicy | None = None,
) -> AsyncIterator[list[Transport]]:
    """Start ``n`` running transports of ``kind`` (not yet connected); cancelled on exit."""
    nodes: list[Transport]
    if kind == "memory":
        net = MemoryNetwork(seed=seed, default_link=link, penalty_policy=penalty_policy)
        nodes = [net.create_node(f"n{i}") for i in range(n)]
    else:
        clock = Clock()
        nodes = [
            Libp2pTransport(
                KeyPair.from_seed(bytes([seed, i]) * 16),
                network_id="test",
                clock=clock,
                penalty_policy=penalty_policy,
            )
            for i in range(n)
        ]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(node.run)
            yield nodes
            nursery.cancel_scope.cancel()
    finally:
        if kind != "memory":
            collect_libp2p_garbage()


def collect_libp2p_garbage() -> None:
    """py-libp2p 0.8.1 leaves closed connections' sockets to the garbage collector.

    Collect them here, where the warning is expected, instead of letting a
    ResourceWarning surface in whatever test happens to run the next GC.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def connect_line(nodes: list[Transport]) -> None:
    """Connect node i to node i-1: a path, so messages must be forwarded."""
    for a, b in zip(nodes[1:], nodes, strict=False):
        with trio.fail_after(10):
            await a.connect(b.listen_addrs()[0])
