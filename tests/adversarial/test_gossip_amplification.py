"""Issue 12, item 1, through real py-libp2p: signature-check amplification against a node process.

A devnet of two validator processes on 127.0.0.1; an attacker (our own
libp2p transport, owning one of node 1's registered radios) connects to
node 0 and sends bundles reshuffled from 48 pre-signed attestations for
epoch 10^12, coming back under a new peer id each time it is banned. Before
the fix every item cost node 0 an Ed25519 check and nothing else, forever.
Now: node 0 checks none of them (its signature count moves only with honest
traffic), bans every identity within a few hundred items, keeps its honest
peer, and both nodes keep committing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from depin_p2p.schedule import EpochSchedule
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up
from tests.adversarial.amplifier import Attacker
from tests.unit.gossip.cluster import collect_libp2p_garbage

pytestmark = pytest.mark.slow

EPOCH_S = 2.0


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


async def _status(node: NodeProcess) -> dict[str, Any]:
    with trio.fail_after(20):
        while (doc := await fetch_status(node.layout)) is None:
            await trio.sleep(0.2)
    return doc


async def _wait_epoch(nodes: list[NodeProcess], epoch: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        while min([int((await _status(n))["last_epoch"]) for n in nodes]) < epoch:
            await trio.sleep(0.3)


def test_reshuffled_far_epoch_proofs_cost_no_signature_check_and_every_sender_is_banned(
    tmp_path: Path,
) -> None:
    plan = DevnetPlan(nodes=2, epoch_seconds=EPOCH_S, seed=b"test-amplification")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + 6_000)
    layout = write_layout(devnet, tmp_path / "devnet")
    nodes = [NodeProcess(n) for n in layout.nodes]
    schedule = EpochSchedule(int(devnet.genesis["genesis_time_ms"]), int(EPOCH_S * 1000))  # type: ignore[call-overload]

    async def scenario() -> dict[str, Any]:
        await wait_until_up(nodes, 60.0)
        await _wait_epoch(nodes, 1, 60.0)
        before = await _status(nodes[0])
        attacker = Attacker(devnet, layout.nodes[0].multiaddr, schedule, "far", salt=0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attacker.run)
            with trio.fail_after(90):
                while attacker.identities < 4:  # three bans at least, a fourth identity sending
                    await trio.sleep(0.2)
            after = await _status(nodes[0])
            await _wait_epoch(nodes, int(after["last_epoch"]) + 2, 60.0)  # commits go on meanwhile
            nursery.cancel_scope.cancel()
        return {"before": before, "after": after, "attacker": attacker, "peer1": layout.nodes[1].peer_id}

    try:
        for n in nodes:
            n.start()
        got = trio.run(scenario)
    finally:
        stop_all(nodes)
    before, after, attacker = got["before"], got["after"], got["attacker"]
    gossip = after["gossip_counters"]
    assert attacker.items >= 3 * 128
    assert gossip["ignore_codes"].get("far_out_of_window") == 48, gossip["ignore_codes"]  # judged once each
    banned = after["transport_counters"]["peers_banned"]
    assert banned >= 3
    # Each identity is banned within the tolerance (16), 100 points at 1 a far item, and one
    # bundle in flight; after the ban its messages stop at the blacklist, unread.
    assert 116 * banned <= gossip["items_far"] <= (116 + 32) * (banned + 1), (gossip["items_far"], banned)
    assert gossip["reject_codes"] == {}, gossip["reject_codes"]
    assert got["peer1"] in after["peers"], after["peers"]  # the honest peer is kept
    # Not one Ed25519 check for the attack: node 0's count moves only with honest traffic.
    spent = after["signatures"]["verified"] - before["signatures"]["verified"]
    honest = after["gossip_counters"]["items_accepted"] - before["gossip_counters"]["items_accepted"]
    assert spent <= honest + 40, (spent, honest)
