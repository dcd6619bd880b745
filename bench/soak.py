"""Soak: does a node's memory level off? A devnet of real processes under steady load.

Run: ``.venv/bin/python bench/soak.py [--nodes 6] [--minutes 20] [--epoch-seconds 10]``.
Prints one JSON object.

A ``depin-devnet up``-style devnet (one ``depin-p2p run`` process per node on
127.0.0.1, every node a validator, simulated radio and compute devices, so
every epoch carries beacons, witness reports and compute attestations) runs
for ``--minutes`` while this process submits ``--tx-per-second`` signed
transfers between the node accounts through the nodes' APIs, and the last
node churns: it is SIGKILLed every ``--churn-seconds`` and restarted on its
home ``--down-seconds`` later. Every ``--sample-seconds`` (a minute) the
resident set size of every node process is read from ``/proc``.

Keys:

* ``rss_mb``: per node, one sample per minute (MB = 10^6 bytes);
  ``rss_anon_mb``: the anonymous part (Python heap, not LMDB's file pages);
* ``data_file_mb``: per node, the size of its LMDB data file (``data.mdb``)
  at each sample: LMDB maps it, so the pages a node reads count in its RSS
  as file-backed pages (``rss_mb`` minus ``rss_anon_mb``), growing with the
  ledger; the kernel can drop them at any time, unlike the anonymous part;
* ``slope_mb_per_min_last_half``: per node, the least-squares slope of its
  samples in the last half of the run (null for the churning node, whose
  process restarts, and for a node that crashed); ``slope_mb_per_min_last_half_max``:
  the largest over the steady nodes; ``slope_anon_mb_per_min_last_half`` and
  ``slope_anon_mb_per_min_last_half_max``: the same for ``rss_anon_mb``, the
  memory the node itself allocates (what a leak grows);
* ``crashed``: steady nodes that exited during the run (minute, status, last
  log lines); the soak goes on measuring the others;
* ``epochs_committed`` (per node, from ``/status`` at the end) and
  ``last_epoch_per_sample``: a slope only means something while the network
  commits (an idle network's pools hold every uncommitted epoch);
  ``txs_submitted``, ``txs_refused``, ``churn_restarts``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from depin_p2p import heapdump, wire
from depin_p2p.api import request_json
from depin_p2p.ledger.state import Transfer
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up

START_MARGIN_MS = 60_000  # epoch 1 starts after every node is up, even on a loaded machine
STARTUP_TIMEOUT_S = 120.0  # a loaded 2-core machine takes a while to import libp2p 6 times
MB = 1_000_000


def rss_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process in bytes; (0, 0) when it is gone."""
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    except OSError:
        return 0, 0
    return rss, anon


def data_file_bytes(home: Path) -> int:
    """The size of a node's LMDB data file (0 before it exists)."""
    try:
        return (home / "data" / "data.mdb").stat().st_size
    except OSError:
        return 0


def slope(samples: list[float], minutes: list[float]) -> float | None:
    """Least-squares slope of ``samples`` against ``minutes`` (None with fewer than 2 points)."""
    n = len(samples)
    if n < 2:
        return None
    mx = sum(minutes) / n
    my = sum(samples) / n
    var = sum((x - mx) ** 2 for x in minutes)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(minutes, samples, strict=True)) / var


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        seed = args.seed.encode()
        plan = DevnetPlan(nodes=args.nodes, epoch_seconds=args.epoch_seconds, seed=seed)
        self.devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + START_MARGIN_MS)
        self.layout = write_layout(self.devnet, root)
        self.nodes = [NodeProcess(n) for n in self.layout.nodes]
        self.churn = args.nodes - 1 if args.churn_seconds > 0 else None
        self.rng = random.Random(args.seed)
        self.txs_submitted = 0
        self.txs_refused = 0
        self.churn_restarts = 0
        self.crashed: dict[int, dict[str, Any]] = {}
        self.rss: list[list[float]] = [[] for _ in self.nodes]
        self.anon: list[list[float]] = [[] for _ in self.nodes]
        self.data_file: list[list[float]] = [[] for _ in self.nodes]
        self.sample_minutes: list[float] = []
        self.epochs: list[list[int | None]] = [[] for _ in self.nodes]

    async def run(self) -> dict[str, Any]:
        for n in self.nodes:
            n.start()
        await wait_until_up(self.nodes, STARTUP_TIMEOUT_S)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tx_load)
            if self.churn is not None:
                nursery.start_soon(self._churn_loop)
            nursery.start_soon(self._watch_exits, start)
            await self._sample_loop(start)
            nursery.cancel_scope.cancel()
        if self.churn is not None and self.nodes[self.churn].exited is not None:
            self.nodes[self.churn].start()  # let it rejoin before the final status
        statuses = [await fetch_status(n.layout) for n in self.nodes]
        return self._result(statuses)

    async def _sample_loop(self, start: float) -> None:
        total_s = self.args.minutes * 60
        step = self.args.sample_seconds
        at = start
        while True:
            for i, n in enumerate(self.nodes):
                pid = n.process.pid if n.process is not None and n.exited is None else None
                rss, anon = rss_bytes(pid) if pid is not None else (0, 0)
                self.rss[i].append(round(rss / MB, 2))
                self.anon[i].append(round(anon / MB, 2))
                self.data_file[i].append(round(data_file_bytes(n.layout.home) / MB, 2))
                status = await fetch_status(n.layout) if pid is not None else None
                self.epochs[i].append(None if status is None else status.get("last_epoch"))
            self.sample_minutes.append(round((trio.current_time() - start) / 60, 3))
            print(
                f"soak: minute {self.sample_minutes[-1]:.1f} rss_mb {[r[-1] for r in self.rss]}"
                f" last_epoch {[e[-1] for e in self.epochs]}",
                file=sys.stderr,
                flush=True,
            )
            at += step
            if at - start > total_s + 1e-6:
                return
            await trio.sleep_until(at)

    async def _watch_exits(self, start: float) -> None:
        """Record a steady node that dies (a finding in itself); the others keep being measured."""
        while True:
            for i, n in enumerate(self.nodes):
                if i != self.churn and n.exited is not None and i not in self.crashed:
                    minute = round((trio.current_time() - start) / 60, 2)
                    self.crashed[i] = {"minute": minute, "exit": n.exited, "last_lines": n.tail(8)}
                    print(f"soak: node {i} exited with status {n.exited} at minute {minute}", file=sys.stderr)
            await trio.sleep(1)

    async def _churn_loop(self) -> None:
        assert self.churn is not None
        node = self.nodes[self.churn]
        while True:
            await trio.sleep(self.args.churn_seconds)
            node.signal(signal.SIGKILL)
            if node.process is not None:
                await trio.to_thread.run_sync(node.process.wait)
            await trio.sleep(self.args.down_seconds)
            node.start()
            self.churn_restarts += 1

    async def _tx_load(self) -> None:
        if self.args.tx_per_second <= 0:
            return
        keys = self.devnet.node_keys
        net = self.devnet.network_id
        period = 1 / self.args.tx_per_second
        while True:
            await trio.sleep(period)
            i = self.rng.randrange(len(keys))
            if i == self.churn:
                continue
            to = keys[(i + 1 + self.rng.randrange(len(keys) - 1)) % len(keys)].public_key
            port = self.layout.nodes[i].api_port
            try:
                status, account = await request_json(port, "GET", f"/account/{keys[i].public_key.hex()}")
                nonce = int(account.get("next_nonce", account.get("nonce", 0)))
                env = wire.seal(Transfer(nonce, to, 1_000), keys[i], net)
                status, _ = await request_json(port, "POST", "/tx", wire.encode(env))
            except (OSError, ValueError, TypeError):
                self.txs_refused += 1
                continue
            if status == 202:
                self.txs_submitted += 1
            else:
                self.txs_refused += 1

    def _result(self, statuses: list[dict[str, Any] | None]) -> dict[str, Any]:
        half = self.sample_minutes[-1] / 2
        last = [k for k, m in enumerate(self.sample_minutes) if m >= half]
        minutes = [self.sample_minutes[k] for k in last]

        def slopes_of(samples: list[list[float]]) -> list[float | None]:
            out: list[float | None] = []
            for i, series in enumerate(samples):
                measured = i != self.churn and i not in self.crashed
                s = slope([series[k] for k in last], minutes) if measured else None
                out.append(None if s is None else round(s, 4))
            return out

        slopes, anon_slopes = slopes_of(self.rss), slopes_of(self.anon)
        steady = [s for s in slopes if s is not None]
        steady_anon = [s for s in anon_slopes if s is not None]
        return {
            "nodes": self.args.nodes,
            "minutes": self.args.minutes,
            "epoch_seconds": self.args.epoch_seconds,
            "tx_per_second": self.args.tx_per_second,
            "churn_node": self.churn,
            "churn_seconds": self.args.churn_seconds,
            "sample_minutes": self.sample_minutes,
            "rss_mb": self.rss,
            "rss_anon_mb": self.anon,
            "slope_mb_per_min_last_half": slopes,
            "slope_mb_per_min_last_half_max": max(steady) if steady else None,
            "slope_anon_mb_per_min_last_half": anon_slopes,
            "slope_anon_mb_per_min_last_half_max": max(steady_anon) if steady_anon else None,
            "data_file_mb": self.data_file,
            "epochs_committed": [None if s is None else s.get("last_epoch") for s in statuses],
            "last_epoch_per_sample": self.epochs,
            "txs_submitted": self.txs_submitted,
            "txs_refused": self.txs_refused,
            "churn_restarts": self.churn_restarts,
            "crashed": {str(i): c for i, c in sorted(self.crashed.items())},
            "python": platform.python_version(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--epoch-seconds", type=float, default=10.0)
    parser.add_argument("--tx-per-second", type=float, default=2.0)
    parser.add_argument("--churn-seconds", type=float, default=120.0, help="0: no churning node")
    parser.add_argument("--down-seconds", type=float, default=10.0)
    parser.add_argument("--sample-seconds", type=float, default=60.0)
    parser.add_argument("--seed", default="soak")
    parser.add_argument("--dir", type=Path, default=None, help="keep the devnet here (default: a temp dir)")
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        default=None,
        help="debug: every node dumps a tracemalloc snapshot here each --sample-seconds (slows the nodes)",
    )
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    if args.tracemalloc is not None:  # inherited by every node process (depin_p2p/heapdump.py)
        os.environ[heapdump.ENV_DIR] = str(args.tracemalloc.resolve())
        os.environ[heapdump.ENV_EVERY_S] = str(args.sample_seconds)
    with tempfile.TemporaryDirectory(prefix="depin-soak-") as tmp:
        root = args.dir or Path(tmp)
        soak = Soak(args, root)
        try:
            result = trio.run(soak.run)
        finally:
            stop_all(soak.nodes)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
