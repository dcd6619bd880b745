"""Issue 12 item 5: a node started before its bootstrap peer listens connects once that peer is up.

Before the fix a failed bootstrap dial was never retried (an address entered
the re-dial book only after a successful connect), so the late node stayed
apart until the other side happened to dial it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up

pytestmark = pytest.mark.slow

# Our re-dial back-off is capped at 5 s and a dial times out after 5 s: a
# bound well inside the 60 s that libp2p's own reconnect and negative dial cache
# would take, with room for a loaded 2-core machine.
CONNECT_BOUND_S = 30.0


async def _peers(node: NodeProcess) -> list[str]:
    status = await fetch_status(node.layout)
    return list(status.get("peers", [])) if status else []


async def _scenario(early: NodeProcess, late: NodeProcess) -> float:
    await wait_until_up([early], 60.0)
    # Let the early node's first bootstrap dial (to a closed port) fail.
    await trio.sleep(2.0)
    assert await _peers(early) == []
    late.start()
    await wait_until_up([late], 60.0)
    up = trio.current_time()
    with trio.fail_after(CONNECT_BOUND_S):
        while late.layout.peer_id not in await _peers(early):
            await trio.sleep(0.2)
    return trio.current_time() - up


def test_a_node_started_before_its_bootstrap_peer_connects_once_it_listens(tmp_path: Path) -> None:
    plan = DevnetPlan(nodes=2, epoch_seconds=2, seed=b"late-bootstrap")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + 4_000)
    layout = write_layout(devnet, tmp_path / "devnet")
    # Node 1 bootstraps to node 0; node 0 dials nobody.
    late, early = (NodeProcess(n) for n in layout.nodes)
    try:
        early.start()
        waited = trio.run(_scenario, early, late)
    finally:
        stop_all([early, late])
    print(f"connected {waited:.2f} s after the bootstrap peer answered /status")
    assert waited < CONNECT_BOUND_S
