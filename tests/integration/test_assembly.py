"""A node process and a simulated node are built by the same function into the same service graph."""

from __future__ import annotations

import time
import typing
from pathlib import Path

import pytest
import trio

from depin_p2p import assemble as assembly
from depin_p2p.config import load_config
from depin_p2p.node import Node
from depin_p2p.views import NodeView
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from tests.sim import cluster

pytestmark = pytest.mark.slow


def test_a_process_and_the_simulator_build_the_same_node_through_assemble(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = assembly.assemble

    def counted(*args: object, **kwargs: object) -> assembly.NodeServices:
        calls.append(type(args[0]).__name__)  # the transport: which world called
        return real(*args, **kwargs)  # type: ignore[arg-type]

    # Count calls, do not replace them: both paths must go through this one function.
    monkeypatch.setattr(assembly, "assemble", counted)
    monkeypatch.setattr("depin_p2p.node.assemble", counted)
    monkeypatch.setattr(cluster, "assemble", counted)

    devnet = plan_devnet(DevnetPlan(nodes=1, seed=b"assembly"), genesis_time_ms=int(time.time() * 1000))
    layout = write_layout(devnet, tmp_path / "devnet")
    node = Node(load_config(layout.nodes[0].home))

    views: list[NodeView] = []

    async def run_briefly() -> cluster.Cluster:
        sim = cluster.make_cluster(nodes=4, with_consensus=True)  # its clock needs trio
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                views.append(await nursery.start(node.run))
                nursery.cancel_scope.cancel()
        return sim

    sim = trio.run(run_briefly)
    assert calls == ["MemoryTransport"] * 4 + ["Libp2pTransport"]
    # Built in one step: the running node is one view whose every part exists, none filled in later.
    assert set(vars(node)) == {"config", "key", "genesis", "schedule", "metrics"}
    hints = typing.get_type_hints(NodeView)
    assert all(type(None) not in typing.get_args(t) for t in hints.values()), hints
    process, simulated = views[0].services.graph(), sim.nodes[0].graph()
    # Same services, same types; only the I/O underneath differs.
    assert process.keys() == simulated.keys()
    differ = {k for k in process if process[k] != simulated[k]}
    assert differ == {"transport", "ledger"}, (process, simulated)
    assert (process["transport"], process["ledger"]) == ("Libp2pTransport", "LedgerStore")
    assert (simulated["transport"], simulated["ledger"]) == ("MemoryTransport", "MemoryLedger")
