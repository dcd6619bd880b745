"""The simulator shares Ed25519 arithmetic and decoding between its nodes, not their accounting."""

from __future__ import annotations

from depin_p2p import wire
from devnet.manifest import parse_manifest
from devnet.sim import Simulation


def test_nodes_count_their_own_checks_while_the_process_runs_each_once() -> None:
    sim = Simulation(parse_manifest("[network]\nnodes = 4\nepochs = 2\nepoch_seconds = 10\n"), 1)
    record = sim.run()
    assert all(len(n.epochs) >= 2 for n in record.nodes)
    per_node = [n.services.signatures.verified for n in sim.nodes if n.services is not None]
    assert len(per_node) == 4 and min(per_node) > 0
    # Every node ran (and counted) its own checks; the memo did each distinct one once.
    assert 0 < sim.signature_check.checks < sum(per_node)
    assert sim.signature_check.checks >= max(per_node)
    assert wire._DECODE_MEMO is None  # switched off again after the run
