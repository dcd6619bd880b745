"""Sixteen ``depin-p2p run`` processes on this machine, each knowing 2 bootstrap peers (issue 13).

The run is ``bench/scale.py``'s own (``run_size``: the devnet's layout, real
processes on 127.0.0.1, ``/status`` polled, every ledger read back after the
stop), at the benchmark's rules for 16 nodes: 8 validators, 8 s epochs, and
one radio per node, as the issue's 32-process acceptance run has it (at the
devnet's default 3 radios, 16 processes are about all this 2-core machine
carries: 4 min 40 s alone, epochs 2.3x their length, RSS up to 214 MB right
after the suite; with 1 radio, 2 min, 1.02x and 122 MB). The benchmark runs 32.

Found here before this test: every node spent its share of the 2 cores on
py-libp2p's per-RPC work (a small bundle per proof or two, each received
about 10 times) and not one epoch committed in 3 minutes.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest
import trio

from bench.scale import run_size

# 16 processes saturate both cores: beside other tests it took 344 s in CI and starved them.
pytestmark = [pytest.mark.slow, pytest.mark.whole_machine]

NODES = 16
EPOCHS = 10


def test_sixteen_nodes_from_two_bootstrap_peers_commit_ten_epochs_and_blame_nobody(tmp_path: Path) -> None:
    args = argparse.Namespace(
        epochs=EPOCHS,
        validators_share=0.5,
        epoch_seconds=None,  # the benchmark's rule: max(5, N / 2) s
        radios_per_node=1,  # see the module docstring
        timeout_s=420.0,
        seed="scale-test",
        start_margin_s=30.0,
        keep=None,  # the devnet lives in tmp_path; no status files beside it
        log_level="info",
    )
    root = tmp_path / "devnet"
    row = trio.run(run_size, args, NODES, root)
    print(f"\n16 processes: {row}")

    homes = sorted(root.glob("node-*/node.toml"))
    bootstraps = [len(tomllib.loads(p.read_text())["network"]["bootstrap"]) for p in homes]
    assert len(bootstraps) == NODES and max(bootstraps) <= 2
    assert row["crashed"] == {}
    assert row["epochs_committed"] >= EPOCHS, row["epochs_committed_per_node"]
    assert row["agreement"]  # one certificate per epoch 1..E, the same in every node's LMDB
    assert row["offences"] == {}  # nobody penalised or banned anybody
    assert row["proposals_heard"] >= EPOCHS * (NODES - 1) // 2  # consensus.proposal.heard is logged
    assert row["rss_mb_max"] < 150  # issue 13's bound (122 MB alone here, 1 radio per node)
