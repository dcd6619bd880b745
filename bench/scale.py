"""Scale: do many real node processes on this machine commit, ban nobody and stay small? ONE JSON object.

Run: ``.venv/bin/python bench/scale.py [--sizes 8,16,32] [--validators-share 0.5] [--epochs 10]
[--sim-sizes 16,64,128] [--sim-epochs 1] [--keep DIR]``
(``--keep``: run each devnet in ``DIR/devnet-N`` and keep its logs, ledgers and each node's last
``/status`` as ``status.json``).

For each size in ``--sizes``, a ``depin-devnet up`` devnet (one ``depin-p2p
run`` process per node on 127.0.0.1, simulated radio and compute devices,
each node beyond the target degree knowing only 2 bootstrap peers, a seed
node and its predecessor, the rest found by peer exchange) runs until every node has
committed ``--epochs`` epochs or ``--timeout-s`` passes. Then the nodes are
stopped and each node's ledger is read back: every epoch 1..E must hold one
certificate, the same on every node. The epoch length is chosen per size
(``--epoch-seconds``, default: max(5, N / 2) s, so 16 s at 32 nodes) and
stated in each row. Then the simulator (``bench/sim.py``'s engine) at
``--sim-sizes``, skipping a size predicted to cost more than ``--sim-budget-s``.

Keys (stable): ``processes``, a list of rows, one per size:

* issue 13's names: ``nodes``, ``epochs_committed`` (the fewest any node
  committed), ``agreement`` (bool: every node holds the same certificate
  for every epoch 1..``epochs_committed``, read from LMDB after the stop),
  ``honest_peers_banned`` (``gossip.peer.banned`` lines in all node logs:
  every peer here is honest, so any is a false positive), ``rss_mb_max``
  (the largest VmRSS of any node, sampled every 10 s);
* ``validators``, ``epoch_seconds``, ``epochs_target``;
  ``epochs_committed_per_node`` (``last_epoch`` of each node's ``/status``);
  ``offences`` (``gossip.peer.penalised`` / ``gossip.peer.banned`` by
  ``code``), ``offences_total``; ``crashed`` (nodes that exited, with their
  last log lines); ``rss_mb_per_node``;
* ``wall_s``, ``first_commit_s`` (from genesis time to every node holding
  epoch 1), ``epoch_interval_s`` (median seconds between the network's commits,
  all nodes), ``epoch_interval_over_epoch_length``: that median over the
  epoch length, 1.0 when the network keeps up with its clock;
* ``commit_rounds``: the round each epoch's certificate was made in, from node
  0's ledger (above 0: rounds timed out, so slow epochs are consensus waiting,
  not only proofs arriving late);
* ``commit_latency_s_p50``, ``commit_latency_s_p99``: seconds from each epoch's end by the
  clock to each node's ``consensus.epoch.committed`` log line, over every node and epoch
  1..``epochs_committed`` (the floor is the grace for late proofs, a tenth of an epoch, at most 1 s);
* ``proposal_delay_s_p50``, ``proposal_delay_s_p99``, ``proposals_heard``: seconds from a
  proposer's ``consensus.vote.signed`` line for a proposal to each other node's
  ``consensus.proposal.heard`` line for it, over every proposal of the run (above the propose
  timeout, ``Timeouts.for_epoch``: 4 s + 0.5 s per round at 16 s epochs, the round times out
  waiting for it; a node's first line per proposal only);
* ``cpu_s_per_node`` (user + system CPU seconds, from ``/proc``, sampled with the RSS) and
  ``cpu_cores_per_node_median``: the median of those over the run's wall time;
* ``inbound_mb_per_node_by_topic``: per topic kind (``proofs``, ``consensus``, ...), the median over
  the nodes of the pubsub payload MB each read off the wire, duplicates included (the transport's
  ``inbound_bytes_by_topic``, from the last ``/status`` before the stop);
* ``load_average``: the 1-minute load average at the start and the end (the
  machine is shared: a high one explains slow epochs).

``simulator``: rows of ``nodes``, ``seconds_per_epoch`` (CPU seconds per
simulated epoch, full stack); ``simulator_skipped``; ``growth_exponent``
(least-squares slope of log seconds per epoch over log nodes).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from bench.sim import fit, measure_sizes
from bench.soak import rss_bytes
from depin_p2p import wire
from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.ledger.store import LedgerStore
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up

MB = 1_000_000
OFFENCES = ("gossip.peer.penalised", "gossip.peer.banned")
SAMPLE_S = 10.0


def _offences(home: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for doc in _log_lines(home, OFFENCES):
        key = f"{doc['event']}:{doc.get('code', '?')}"
        out[key] = out.get(key, 0) + 1
    return out


def _commit_latencies(home: Path, genesis_s: float, epoch_s: float, upto: int) -> list[float]:
    """Seconds from each epoch's end by the clock to this node's ``consensus.epoch.committed`` line."""
    out: list[float] = []
    for doc in _log_lines(home, ("consensus.epoch.committed",)):
        try:
            epoch = int(doc["epoch"])
            at = _at(doc)
        except (ValueError, KeyError, TypeError):
            continue
        if 1 <= epoch <= upto:
            out.append(at - (genesis_s + epoch * epoch_s))
    return out


def _log_lines(home: Path, events: tuple[str, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    path = home / "node.log"
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if not any(e in line for e in events):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("event") in events:
            out.append(doc)
    return out


def _at(doc: dict[str, Any]) -> float:
    """A log line's time, in seconds since the epoch."""
    return datetime.datetime.fromisoformat(str(doc["timestamp"])).timestamp()


def _proposal_delays(homes: list[Path]) -> list[float]:
    """Seconds from each proposal's signing (its proposer's log) to each other node hearing it."""
    signed: dict[tuple[int, int], float] = {}
    heard: list[tuple[tuple[int, int], float]] = []
    for home in homes:
        first: dict[tuple[int, int], float] = {}  # a proposal heard again after the seen-TTL: not a delay
        for doc in _log_lines(home, ("consensus.vote.signed", "consensus.proposal.heard")):
            key = (int(doc["epoch"]), int(doc["round"]))
            if doc["event"] == "consensus.proposal.heard":
                first.setdefault(key, _at(doc))
            elif doc.get("kind") == "proposal":
                signed[key] = min(signed.get(key, _at(doc)), _at(doc))
        heard.extend(first.items())
    return [t - signed[k] for k, t in heard if k in signed]


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _certificates(home: Path, upto: int) -> list[Certificate | None]:
    with LedgerStore.open(home / "data", readonly=True) as store, store.view() as view:
        raws = [view.get_certificate(e) for e in range(1, upto + 1)]
    return [wire.decode_as(raw, Certificate) if raw else None for raw in raws]


async def _status(node: NodeProcess) -> dict[str, Any]:
    try:
        return await fetch_status(node.layout) or {}
    except (trio.TooSlowError, OSError):
        return {}


async def run_size(args: argparse.Namespace, size: int, root: Path) -> dict[str, Any]:
    """One process devnet of ``size`` nodes until ``args.epochs`` commit on all (or the timeout): its row."""
    load_start = os.getloadavg()[0]
    validators = max(1, round(size * args.validators_share))
    epoch_seconds = args.epoch_seconds or max(5.0, size / 2)
    margin_s = args.start_margin_s or max(60.0, 2.5 * size)  # every node imports py-libp2p first
    start_margin_ms = int(margin_s * 1000)
    plan = DevnetPlan(
        nodes=size,
        validators=validators,
        epoch_seconds=epoch_seconds,
        radios_per_node=args.radios_per_node,
        seed=args.seed.encode(),
    )
    genesis_ms = int(time.time() * 1000) + start_margin_ms
    devnet = plan_devnet(plan, genesis_time_ms=genesis_ms)
    layout = write_layout(devnet, root)
    if args.log_level != "info":  # debug: each node also logs every vote it hears (consensus.vote.heard)
        for n in layout.nodes:
            toml = n.home / "node.toml"
            toml.write_text(toml.read_text().replace('level = "info"', f'level = "{args.log_level}"'))
    nodes = [NodeProcess(n) for n in layout.nodes]
    started = time.monotonic()
    rss_max = [0] * len(nodes)
    cpu_s = [0.0] * len(nodes)
    crashed: dict[int, dict[str, Any]] = {}
    epochs = [0] * len(nodes)
    commits_seen: dict[int, float] = {}  # epoch -> wall time the last node reached it
    statuses: list[dict[str, Any]] = []
    try:
        for n in nodes:
            n.start()
        await wait_until_up(nodes, start_margin_ms / 1000)
        deadline = started + args.timeout_s
        last_sample = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - last_sample >= SAMPLE_S:
                last_sample = now
                for i, n in enumerate(nodes):
                    rss_max[i] = max(rss_max[i], rss_bytes(n.pid)[0] if n.pid is not None else 0)
                    cpu_s[i] = max(cpu_s[i], _cpu_seconds(n.pid) if n.pid is not None else 0.0)
            for i, n in enumerate(nodes):
                if n.exited is not None and i not in crashed:
                    crashed[i] = {"status": n.exited, "tail": n.tail(8)}
            statuses = [await _status(n) for n in nodes]
            for i, st in enumerate(statuses):
                epochs[i] = max(epochs[i], int(st.get("last_epoch", 0) or 0))
            low = min(epochs)
            wall = time.time()
            for e in range(1, low + 1):
                commits_seen.setdefault(e, wall)
            if low >= args.epochs or len(crashed) == len(nodes):
                break
            await trio.sleep(1.0)
    finally:
        ran_s = time.monotonic() - started
        for i, n in enumerate(nodes):
            cpu_s[i] = max(cpu_s[i], _cpu_seconds(n.pid) if n.pid is not None else 0.0)
        stop_all(nodes)
        if args.keep is not None:  # what each node said last, beside its log (why one fell behind)
            for n, st in zip(nodes, statuses, strict=False):
                (n.layout.home / "status.json").write_text(json.dumps(st, indent=1, sort_keys=True) + "\n")
    low = min(epochs)
    held = [_certificates(n.layout.home, low) for n in nodes] if low else []
    certs = [[certificate_hash(c).hex() if c else "missing" for c in node] for node in held]
    rounds = [c.round if c else None for c in held[0]] if held else []
    offences: dict[str, int] = {}
    for n in nodes:
        for k, v in _offences(n.layout.home).items():
            offences[k] = offences.get(k, 0) + v
    latencies = [
        x for n in nodes for x in _commit_latencies(n.layout.home, genesis_ms / 1000, epoch_seconds, low)
    ]
    delays = _proposal_delays([n.layout.home for n in nodes])
    times = [commits_seen[e] for e in sorted(commits_seen)]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    interval = statistics.median(intervals) if intervals else None
    banned = sum(v for k, v in offences.items() if k.startswith("gossip.peer.banned"))
    return {
        "nodes": size,
        "epochs_committed": low,
        "agreement": bool(certs) and all(c == certs[0] and "missing" not in c for c in certs),
        "honest_peers_banned": banned,
        "rss_mb_max": round(max(rss_max) / MB, 1),
        "validators": validators,
        "epoch_seconds": epoch_seconds,
        "epochs_target": args.epochs,
        "epochs_committed_per_node": epochs,
        "offences": offences,
        "offences_total": sum(offences.values()),
        "crashed": crashed,
        "rss_mb_per_node": [round(r / MB, 1) for r in rss_max],
        "wall_s": round(time.monotonic() - started, 1),
        "first_commit_s": round(commits_seen[1] - genesis_ms / 1000, 1) if 1 in commits_seen else None,
        "epoch_interval_s": None if interval is None else round(interval, 2),
        "epoch_interval_over_epoch_length": (
            None if interval is None else round(interval / epoch_seconds, 2)
        ),
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "commit_rounds": rounds,
        "commit_latency_s_p50": _percentile(latencies, 0.5),
        "commit_latency_s_p99": _percentile(latencies, 0.99),
        "proposal_delay_s_p50": _percentile(delays, 0.5),
        "proposal_delay_s_p99": _percentile(delays, 0.99),
        "proposals_heard": len(delays),
        "cpu_s_per_node": [round(c, 1) for c in cpu_s],
        "cpu_cores_per_node_median": round(statistics.median(cpu_s) / ran_s, 3) if ran_s > 0 else None,
        "inbound_mb_per_node_by_topic": _inbound_mb(statuses),
    }


def _inbound_mb(statuses: list[dict[str, Any]]) -> dict[str, float]:
    """Median over the nodes of the pubsub payload MB each read off the wire, duplicates included,
    by topic kind (``/depin/<network>/<kind>/<version>``), from the last ``/status`` seen."""
    per_kind: dict[str, list[int]] = {}
    for st in statuses:
        counted = (st.get("transport_counters") or {}).get("inbound_bytes_by_topic") or {}
        for name, size in counted.items():
            parts = name.split("/")
            per_kind.setdefault(parts[3] if len(parts) > 3 else name, []).append(int(size))
    return {k: round(statistics.median(v) / MB, 2) for k, v in sorted(per_kind.items())}


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=[8, 16, 32], help="process devnet sizes")
    parser.add_argument(
        "--validators-share", type=float, default=0.5, help="share of the nodes that validate (default 0.5)"
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--epoch-seconds", type=float, default=None, help="epoch length for every size (default max(5, N/2))"
    )
    parser.add_argument("--radios-per-node", type=int, default=3)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per size")
    parser.add_argument("--seed", default="bench-scale")
    parser.add_argument(
        "--start-margin-s", type=float, default=None, help="genesis this long after start (max(60, 2.5 N))"
    )
    parser.add_argument("--log-level", choices=("debug", "info"), default="info", help="the nodes' log level")
    parser.add_argument("--sim-sizes", type=_sizes, default=[16, 64, 128], help="'' for none")
    parser.add_argument("--sim-epochs", type=int, default=1)
    parser.add_argument("--sim-budget-s", type=float, default=900.0, help="skip a bigger size")
    parser.add_argument("--keep", type=Path, help="run the devnets under this directory, keep their logs")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        if args.keep is not None:
            rows.append(trio.run(run_size, args, size, args.keep / f"devnet-{size}"))
        else:
            with tempfile.TemporaryDirectory(prefix="depin-scale-") as tmp:
                rows.append(trio.run(run_size, args, size, Path(tmp) / "devnet"))
        print(json.dumps(rows[-1], sort_keys=True), file=sys.stderr, flush=True)
    sim_rows, skipped = ([], []) if not args.sim_sizes else measure_sizes(
        args.sim_sizes, args.sim_epochs, args.sim_budget_s
    )
    exponent = fit(sim_rows)
    doc = {
        "processes": rows,
        "simulator": [{"nodes": r["nodes"], "seconds_per_epoch": r["seconds_per_epoch"]} for r in sim_rows],
        "simulator_skipped": skipped,
        "growth_exponent": None if exponent is None else round(exponent, 2),
    }
    print(json.dumps(doc, sort_keys=True))


if __name__ == "__main__":
    main()
