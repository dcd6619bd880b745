"""Proof gossip throughput and latency: bundles vs one proof per GossipSub message.

Runs the same topology twice in one go: ``--nodes`` OS processes on
127.0.0.1, fully connected, each offering ``--rate`` proofs/s for
``--seconds``. First with :class:`depin_p2p.gossip.service.ProofGossip`
(bundles), then "bare": one proof per GossipSub message through the same
libp2p transport (same py-libp2p GossipSub, same validation of every proof).
Prints ONE JSON object::

    .venv/bin/python bench/gossip.py [--nodes 5] [--rate 200] [--seconds 10] [--size 300]

``delivered_proofs_per_s`` counts proof deliveries divided by (nodes - 1),
i.e. proofs that reached every other node, per second of the run (from the
first publish to the last delivery, or to the end of the grace period).
Latency is wall time from creation to acceptance at a receiver. With
``--verify-threads N`` ``batch`` checks signatures on N worker threads per
node (:class:`depin_p2p.verifiers.ThreadVerifier`) and ``batch_inline`` is
the same run with every check inline on the trio loop (the node's setting,
and ``batch`` without the option), measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depin_p2p.gossip.service import BatchConfig
from tests.integration.gossip_proc import cluster, percentile


def run(
    mode: str,
    nodes: int,
    rate: float,
    seconds: float,
    size: int,
    grace: float,
    flush_ms: int,
    verify_threads: int = 0,
    heartbeat: int | None = None,
    degree: int | None = None,
) -> dict[str, Any]:
    count = int(rate * seconds)
    expected = (nodes - 1) * count * nodes
    seed = 1 if mode == "batch" else 101
    with cluster(
        nodes,
        mode=mode,
        first_seed=seed,
        flush_ms=flush_ms,
        verify_threads=verify_threads,
        heartbeat=heartbeat,
        degree=degree,
    ) as procs:
        start = time.monotonic()
        for p in procs:
            p.call({"cmd": "publish", "count": count, "rate": rate, "size": size})
        last_total, last_change = 0, time.monotonic()
        deadline = start + seconds + grace
        while time.monotonic() < deadline:
            total = sum(p.call({"cmd": "count"}, timeout=60)["received"] for p in procs)
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            if total >= expected:
                break
            time.sleep(0.2)
        elapsed = max(last_change - start, seconds)
        stats = [p.call({"cmd": "stats"}, timeout=60) for p in procs]
    latencies = [ms for s in stats for ms in s["latencies_ms"]]
    received = sum(s["received"] for s in stats)
    return {
        "mode": mode,
        "verify_threads": verify_threads,
        "offered_proofs_per_s": rate * nodes,
        "published": count * nodes,
        "deliveries": received,
        "deliveries_expected": expected,
        "delivered_fraction": round(received / expected, 4),
        "delivered_proofs_per_s": round(received / (nodes - 1) / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "gossip_messages": sum(s["transport"]["published"] for s in stats),
        "dropped_unresponsive": sum(s["transport"]["peers_dropped_unresponsive"] for s in stats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0, help="proofs/s offered by each node")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=300, help="approximate bytes per signed proof")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds to wait for stragglers")
    parser.add_argument("--flush-ms", type=int, default=BatchConfig().flush_ms, help="bundle flush interval")
    parser.add_argument(
        "--verify-threads",
        type=int,
        default=0,
        help="signature threads per node in 'batch' (0, inline: the node's setting); >0 also runs "
        "'batch_inline' with 0 for comparison",
    )
    parser.add_argument("--heartbeat", type=int, help="GossipSub heartbeat, s (default: the node's)")
    parser.add_argument("--degree", type=int, help="GossipSub mesh degree D (default: the node's)")
    parser.add_argument("--no-bare", action="store_true", help="skip the one-proof-per-message run")
    args = parser.parse_args()
    common = (args.nodes, args.rate, args.seconds, args.size, args.grace, args.flush_ms)
    mesh = {"heartbeat": args.heartbeat, "degree": args.degree}
    batch = run("batch", *common, verify_threads=args.verify_threads, **mesh)
    inline = run("batch", *common, **mesh) if args.verify_threads else None
    bare = None if args.no_bare else run("bare", *common, **mesh)
    result = {
        "bench": "gossip",
        "nodes": args.nodes,
        "proof_bytes": args.size,
        "flush_ms": args.flush_ms,
        "gossipsub": mesh,
        "batch": batch,
        "batch_inline": inline,
        "bare": bare,
        "throughput_ratio": None
        if bare is None
        else round(batch["delivered_proofs_per_s"] / max(bare["delivered_proofs_per_s"], 1e-9), 2),
        "p99_ratio": None if bare is None else round(batch["p99_ms"] / max(bare["p99_ms"], 1e-9), 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
