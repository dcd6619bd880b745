"""Consensus commit latency: in the simulator (message delays) and on a 4-process loopback cluster (ms).

Prints ONE JSON object::

    .venv/bin/python bench/consensus.py [--epochs 24] [--epoch-seconds 2] [--sim-seeds 0-19]

* ``simulator``: :func:`devnet.fuzz.measure_latency`, 4
  validators on a clean simulated network (every message 10 ms, then
  10 ± 5 ms): first honest start of an epoch's instance to the first honest
  decision, in one-way message delays.
* ``cluster``: a devnet of 4 validator processes (``depin-p2p run``) on
  127.0.0.1. Per epoch, from the first ``consensus.epoch.started`` to the
  first ``consensus.epoch.committed`` logged by any node (wall-clock
  timestamps in ``node-i/node.log``; same machine, same clock): the
  simulator's definition. Also per node: its own start to its own commit.
  Epoch 1 (connections still warming up) is left out.
* ``links``: the one-way delay of one signed message over the same kind of
  link, measured while the cluster runs: two extra processes
  (``tests/integration/gossip_proc.py``, bare mode) with the node's libp2p
  transport (TCP + Noise + Yamux + GossipSub on 127.0.0.1) each publish
  ~300-byte signed envelopes, one per GossipSub message, at 10/s; a sample is
  the wall time from creating the message to its delivery at the other
  process after the topic validator checked its signature. The lower bound
  of the three-step protocol is three such delays (proposal, prevotes,
  precommits).
* ``steps``: each step of an instance as the nodes timed it
  (``consensus.epoch.timed`` in their logs, :mod:`depin_p2p.consensus.steps`),
  pooled over the 4 nodes and the measured epochs: the work steps (value
  build, re-check, one sign-state write, the commit's write) and the phases
  (instance start to first prevote, to first precommit, to the commit).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from depin_p2p.consensus.steps import STEPS
from devnet.fuzz import measure_latency
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import Layout, write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up
from tests.integration.gossip_proc import cluster, percentile

NODES = 4
GENESIS_MARGIN_MS = 10_000  # four process starts on a loaded machine
LINK_RATE = 10.0  # messages/s per probe process: far below what loads the link
LINK_SIZE = 300  # bytes, about a vote envelope


def _seed_range(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 0.5), 1),
        "p99": round(percentile(values, 0.99), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


Events = tuple[dict[int, float], dict[int, tuple[float, int]], dict[int, float]]
Timed = dict[int, dict[str, list[float]]]  # epoch -> step -> ms (one node)


def _timed(log: Path) -> Timed:
    """Epoch -> step -> durations (ms) from ``consensus.epoch.timed``, live instances only."""
    out: Timed = {}
    for line in log.read_text(errors="replace").splitlines():
        if "consensus.epoch.timed" not in line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "consensus.epoch.timed" and doc.get("live"):
            out.setdefault(int(doc["epoch"]), doc["steps"])
    return out


def step_times(layout: Layout, first: int, last: int) -> dict[str, dict[str, float | int]]:
    pooled: dict[str, list[float]] = {name: [] for name in STEPS}
    for node in layout.nodes:
        for epoch, steps in _timed(node.home / "node.log").items():
            if first <= epoch <= last:
                for name, values in steps.items():
                    pooled.setdefault(name, []).extend(values)
    return {
        name: {
            "p50_ms": round(percentile(v, 0.5), 2),
            "p99_ms": round(percentile(v, 0.99), 2),
            "samples": len(v),
        }
        for name, v in pooled.items()
        if v
    }


def _events(log: Path) -> Events:
    """Epoch -> start time, epoch -> (commit time, round), epoch -> value built (as proposer)."""
    started: dict[int, float] = {}
    committed: dict[int, tuple[float, int]] = {}
    built: dict[int, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        event = doc.get("event")
        if event not in ("consensus.epoch.started", "consensus.epoch.committed", "consensus.value.built"):
            continue
        at = datetime.fromisoformat(doc["timestamp"]).timestamp()
        if event == "consensus.epoch.started":
            started.setdefault(int(doc["epoch"]), at)
        elif event == "consensus.value.built":
            built.setdefault(int(doc["epoch"]), at)
        else:
            committed.setdefault(int(doc["epoch"]), (at, int(doc["round"])))
    return started, committed, built


async def _wait_epoch(nodes: list[NodeProcess], epoch: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        while True:
            for n in nodes:
                if n.exited is not None:
                    raise RuntimeError(f"node {n.layout.index} exited with {n.exited}:\n{n.tail()}")
            statuses = [await fetch_status(n.layout) for n in nodes]
            if all(s is not None and int(s["last_epoch"]) >= epoch for s in statuses):
                return
            await trio.sleep(0.5)


def run_cluster(root: Path, epochs: int, epoch_seconds: float) -> tuple[Layout, list[float]]:
    """Run the devnet to ``epochs + 1`` committed epochs; one-way link samples taken meanwhile."""
    plan = DevnetPlan(nodes=NODES, epoch_seconds=epoch_seconds, seed=b"bench-consensus")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + GENESIS_MARGIN_MS)
    layout = write_layout(devnet, root)
    procs = [NodeProcess(n) for n in layout.nodes]
    budget = GENESIS_MARGIN_MS / 1000 + (epochs + 3) * epoch_seconds * 2 + 60
    try:
        for p in procs:
            p.start()
        trio.run(wait_until_up, procs, 60.0)
        trio.run(_wait_epoch, procs, 1, 60.0 + GENESIS_MARGIN_MS / 1000)
        with cluster(2, mode="bare", first_seed=201) as probes:
            count = int(LINK_RATE * epochs * epoch_seconds * 0.5)
            for probe in probes:
                probe.call({"cmd": "publish", "count": count, "rate": LINK_RATE, "size": LINK_SIZE})
            trio.run(_wait_epoch, procs, epochs + 1, budget)
            stats = [probe.call({"cmd": "stats"}, timeout=60) for probe in probes]
            samples = [ms for st in stats for ms in st["latencies_ms"]]
    finally:
        stop_all(procs)
    return layout, samples


def cluster_latency(layout: Layout, first: int, last: int) -> dict[str, Any]:
    logs = [_events(n.home / "node.log") for n in layout.nodes]
    first_to_first: list[float] = []
    per_node: list[float] = []
    build: list[float] = []
    rounds: list[int] = []
    for epoch in range(first, last + 1):
        starts = [s[epoch] for s, _, _ in logs if epoch in s]
        commits = [c[epoch] for _, c, _ in logs if epoch in c]
        build += [(b[epoch] - s[epoch]) * 1000 for s, _, b in logs if epoch in b and epoch in s]
        if not starts or not commits:
            continue
        first_to_first.append((min(t for t, _ in commits) - min(starts)) * 1000)
        rounds.append(max(r for _, r in commits))
        per_node += [(c[epoch][0] - s[epoch]) * 1000 for s, c, _ in logs if epoch in s and epoch in c]
    return {
        "epochs_measured": len(first_to_first),
        "epochs": [first, last],
        "commit_latency_ms": _stats(first_to_first),
        "per_node_commit_latency_ms": _stats(per_node),
        "epochs_decided_after_round_0": sum(1 for r in rounds if r > 0),
        # Inside the latency: the proposer builds the value from its proof pool (every
        # proof re-checked, rewards, state root); every validator re-checks it before its prevote.
        "proposer_value_build_ms": _stats(build) if build else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=24, help="cluster epochs measured (after a warm-up epoch)"
    )
    parser.add_argument("--epoch-seconds", type=float, default=2.0)
    parser.add_argument("--sim-seeds", default="0-19", help="simulator seeds, A-B")
    parser.add_argument("--keep", type=Path, help="run the devnet in this new directory and keep its logs")
    args = parser.parse_args()

    seeds = _seed_range(args.sim_seeds)
    sim = {
        "exact": measure_latency(NODES, seeds, delay_ms=10, jitter_ms=0),
        "jittered": measure_latency(NODES, seeds, delay_ms=10, jitter_ms=5),
    }
    for figures in sim.values():
        figures.pop("loopback_cluster", None)  # a placeholder of the simulator's CLI: measured below

    with TemporaryDirectory(prefix="bench-consensus-") as tmp:
        root = args.keep if args.keep is not None else Path(tmp) / "devnet"
        layout, link_samples = run_cluster(root, args.epochs, args.epoch_seconds)
        measured = cluster_latency(layout, 2, args.epochs + 1)
        steps = step_times(layout, 2, args.epochs + 1)
    one_way = _stats(link_samples)
    lower_bound = round(3 * one_way["p50"], 1)
    result = {
        "bench": "consensus",
        "simulator": sim,
        "cluster": {"processes": NODES, "epoch_seconds": args.epoch_seconds, **measured},
        "steps": steps,
        "links": {
            "measured": "one-way delay of a ~300 B signed message, one per GossipSub message, between two "
            "processes on the node's libp2p transport (TCP+Noise+Yamux, 127.0.0.1), during the cluster run",
            "samples": len(link_samples),
            "one_way_ms": one_way,
        },
        "lower_bound_ms": lower_bound,
        "lower_bound": "3 x p50 one-way delay (proposal, prevote, precommit)",
        "p50_over_lower_bound": round(measured["commit_latency_ms"]["p50"] / max(lower_bound, 1e-9), 1),
        "p99_over_lower_bound": round(measured["commit_latency_ms"]["p99"] / max(lower_bound, 1e-9), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
