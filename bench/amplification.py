"""Signature-check amplification on processes: commit latency with two attackers and without (issue 12).

Prints ONE JSON object::

    .venv/bin/python bench/amplification.py [--epochs 10] [--epoch-seconds 3] [--modes far,fresh]

A devnet of 4 validator processes (``depin-p2p run``) on 127.0.0.1 runs
``--epochs`` epochs unattacked, then the same number under each attack mode,
one after the other. Two attackers, each a real py-libp2p host of ours
(:class:`Libp2pTransport`) in this process, connect to node 0 and node 1 (two
validators) and publish proof bundles of 32 items as fast as their
transport lets them. Each owns a registered radio (node 3's: a sybil with a
device), so its items pass the registry check:

* ``far`` (the attack found on a devnet): a pre-signed pool of 48
  attestations for epoch 10^12, reshuffled into new bundles. Before the fix
  every item cost the target an Ed25519 check, forever, for free. When a
  target bans an attacker it comes back under a new peer id (a sybil).
* ``fresh``: unique, validly signed attestations for the running epoch, so
  no cheap check stops them: the per-peer check budget (16,384 checks, then
  4,096/s) bounds what each attacker costs its target.

Per phase: commit latency per epoch, first ``consensus.epoch.started`` to
first ``consensus.epoch.committed`` in the nodes' logs (as
``bench/consensus.py``), p50/p99, and the ratio of each attacked phase's p99
to the unattacked one measured in the same run (the acceptance bound is 2);
bundles and items sent, identities used, and the targets' penalty and ban
counts from ``/status``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog
import trio

from bench.consensus import _events, _stats, _wait_epoch
from depin_p2p.schedule import EpochSchedule
from devnet.genesis import Devnet, DevnetPlan, plan_devnet
from devnet.layout import Layout, write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up
from tests.adversarial.amplifier import Attacker

NODES = 4
GENESIS_MARGIN_MS = 10_000


async def _phase(
    procs: list[NodeProcess],
    devnet: Devnet,
    layout: Layout,
    mode: str | None,
    first: int,
    epochs: int,
    budget: float,
) -> dict[str, Any]:
    genesis_ms = int(devnet.genesis["genesis_time_ms"])  # type: ignore[call-overload]
    schedule = EpochSchedule(genesis_ms, int(devnet.plan.epoch_seconds * 1000))
    attackers = (
        [Attacker(devnet, layout.nodes[i].multiaddr, schedule, mode, salt=i) for i in (0, 1)] if mode else []
    )
    async with trio.open_nursery() as nursery:
        for a in attackers:
            nursery.start_soon(a.run)
        await _wait_epoch(procs, first + epochs, budget)
        nursery.cancel_scope.cancel()
    statuses = [await fetch_status(n.layout) for n in procs]
    return {
        "mode": mode or "none",
        "epochs": [first + 1, first + epochs],
        "bundles_sent": sum(a.bundles for a in attackers),
        "items_sent": sum(a.items for a in attackers),
        "identities_used": sum(a.identities for a in attackers),
        "targets": [_gossip_figures(s) for s in statuses[:2]],
    }


def _gossip_figures(status: dict[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {}
    g = status.get("gossip_counters", {})
    t = status.get("transport_counters", {})
    return {
        "peers_banned": t.get("peers_banned"),
        "items_far": g.get("items_far"),
        "ignore_codes": g.get("ignore_codes"),
        "reject_codes": g.get("reject_codes"),
        "items_over_budget": g.get("items_over_budget"),
        "signatures_verified": status.get("signatures", {}).get("verified"),
    }


def _latency(layout: Layout, first: int, last: int) -> list[float]:
    logs = [_events(n.home / "node.log") for n in layout.nodes]
    out = []
    for epoch in range(first, last + 1):
        starts = [s[epoch] for s, _, _ in logs if epoch in s]
        commits = [c[epoch][0] for _, c, _ in logs if epoch in c]
        if starts and commits:
            out.append((min(commits) - min(starts)) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="epochs per phase")
    parser.add_argument("--epoch-seconds", type=float, default=3.0)
    parser.add_argument("--modes", default="far,fresh")
    args = parser.parse_args()
    # The attackers' own transports log here: warnings only, to stderr (stdout is the JSON).
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    modes = [m for m in args.modes.split(",") if m]
    with TemporaryDirectory(prefix="bench-amplification-") as tmp:
        plan = DevnetPlan(nodes=NODES, epoch_seconds=args.epoch_seconds, seed=b"bench-amplification")
        devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + GENESIS_MARGIN_MS)
        layout = write_layout(devnet, Path(tmp))
        procs = [NodeProcess(n) for n in layout.nodes]
        budget = args.epochs * args.epoch_seconds * 6 + 120
        phases = []
        try:
            for p in procs:
                p.start()
            trio.run(wait_until_up, procs, 60.0)
            trio.run(_wait_epoch, procs, 2, 60.0 + GENESIS_MARGIN_MS / 1000)
            first = 2
            for mode in [None, *modes]:
                phase = trio.run(_phase, procs, devnet, layout, mode, first, args.epochs, budget)
                phase["commit_latency_ms"] = _stats(_latency(layout, first + 1, first + args.epochs))
                phases.append(phase)
                first += args.epochs
        finally:
            stop_all(procs)
    base = phases[0]["commit_latency_ms"]["p99"]
    ratios = {p["mode"]: round(p["commit_latency_ms"]["p99"] / base, 2) for p in phases[1:]}
    print(
        json.dumps(
            {
                "nodes": NODES,
                "epoch_seconds": args.epoch_seconds,
                "epochs_per_phase": args.epochs,
                "phases": phases,
                "p99_over_unattacked": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
