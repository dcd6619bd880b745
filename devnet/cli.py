"""`depin-devnet`: a local multi-node devnet in one command.

``depin-devnet up`` writes keys, a genesis (validators, funded accounts,
simulated radio and compute devices) and node homes under ``--dir``, starts
one ``depin-p2p run`` process per node on 127.0.0.1, and shows a live table
until Ctrl-C, or until ``--epochs`` epochs are committed on every node. With
``--json`` it prints a summary instead: per node, the certificate hash of
every epoch, proofs accepted and rejected by code, rewards paid and supply.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from depin_p2p import __version__
from depin_p2p.errors import ConfigError, DepinError
from devnet import scenario
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import Layout, write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, summarize, wait_until_up

EXIT_USER_ERROR = 2
EXIT_NODE_FAILED = 1
# genesis time = now + this, so every process is normally up before epoch 1 starts (starting four
# processes took ~7 s on a loaded 2-core machine); one that comes up later still joins and signs
# from the next epoch to decide (depin_p2p.node.first_signing_epoch).
START_MARGIN_MS = 10_000
STARTUP_TIMEOUT_S = 60.0


def _table(layout: Layout, statuses: list[dict[str, Any] | None], epochs: int | None) -> Table:
    title = f"depin-devnet · {len(layout.nodes)} nodes · {layout.root}"
    if epochs:
        title += f" · until epoch {epochs}"
    table = Table(title=title)
    for col in ("node", "epoch", "committed", "round", "peers", "proofs (b/r/a)", "balance", "certificate"):
        table.add_column(col)
    for node, st in zip(layout.nodes, statuses, strict=True):
        if st is None:
            table.add_row(str(node.index), "-", "-", "-", "-", "-", "-", "starting…")
            continue
        pend = st.get("pending_proofs", {})
        cons = st.get("consensus", {})
        table.add_row(
            str(node.index),
            str(st.get("epoch_now")),
            str(st.get("last_epoch")),
            str(cons.get("round")),
            str(len(st.get("peers", []))),
            f"{pend.get('beacons')}/{pend.get('reports')}/{pend.get('attestations')}",
            f"{st.get('balance', 0) / 1_000_000:,.2f}",
            str(st.get("last_certificate", ""))[:16],
        )
    return table


async def _watch(
    layout: Layout,
    nodes: list[NodeProcess],
    epochs: int | None,
    live: Live | None,
    statuses: list[dict[str, Any] | None],
) -> list[dict[str, Any] | None]:
    """Poll every node's status (into ``statuses``, in place) until ``epochs`` are committed everywhere."""
    while True:
        for i, n in enumerate(nodes):
            if n.exited is not None:
                raise RuntimeError(f"node {i} exited with status {n.exited}; its last output:\n{n.tail()}")
            statuses[i] = await fetch_status(n.layout) or statuses[i]
        if live is not None:
            live.update(_table(layout, statuses, epochs))
        if epochs is not None and all(s is not None and s.get("last_epoch", 0) >= epochs for s in statuses):
            return statuses
        await trio.sleep(0.5)


async def _supervise(
    layout: Layout, nodes: list[NodeProcess], epochs: int | None, console: Console | None
) -> list[dict[str, Any] | None]:
    """Wait for the nodes, then watch them until done or until SIGINT/SIGTERM (then return what we saw).

    Raises RuntimeError when a node dies or never comes up.
    """
    result: list[dict[str, Any] | None] = [None] * len(nodes)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await wait_until_up(nodes, STARTUP_TIMEOUT_S)
            if console is None:
                result = await _watch(layout, nodes, epochs, None, result)
            else:
                with Live(_table(layout, result, epochs), console=console, refresh_per_second=2) as live:
                    result = await _watch(layout, nodes, epochs, live, result)
            nursery.cancel_scope.cancel()
    return result


def cmd_up(args: argparse.Namespace) -> int:
    root: Path = args.dir
    if root.exists() and any(root.iterdir()):
        if not args.force:
            raise ConfigError(f"{root} is not empty; use --force to replace it, or another --dir")
        shutil.rmtree(root)
    if args.nodes < 1 or not 1 <= (args.validators or args.nodes) <= args.nodes:
        raise ConfigError("--validators must be between 1 and --nodes")
    if args.epoch_seconds < 1:
        raise ConfigError("--epoch-seconds must be at least 1")
    seed = args.seed.encode() if args.seed else os.urandom(16)
    plan = DevnetPlan(
        nodes=args.nodes, validators=args.validators, epoch_seconds=args.epoch_seconds, seed=seed
    )
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + START_MARGIN_MS)
    layout = write_layout(devnet, root)
    nodes = [NodeProcess(n) for n in layout.nodes]
    console = Console(stderr=True)
    statuses: list[dict[str, Any] | None] = [None] * len(nodes)
    failure: str | None = None
    try:
        for n in nodes:
            n.start()
        statuses = trio.run(_supervise, layout, nodes, args.epochs, None if args.json else console)
    except* RuntimeError as group:  # a node died or never came up (raised inside trio's nursery)
        failure = str(group.exceptions[0])
    finally:
        stop_all(nodes)
    if failure is not None:
        print(f"depin-devnet: error: {failure}", file=sys.stderr)
        return EXIT_NODE_FAILED
    if args.json and args.epochs is not None:
        summary = summarize(layout, args.epochs, statuses)
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0 if summary["agreement"] else EXIT_NODE_FAILED
    console.print(f"stopped; node homes and logs are in {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depin-devnet", description="Local depin-p2p devnets for testers.")
    parser.add_argument("--version", action="version", version=f"depin-devnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = sub.add_parser(
        "up",
        help="start a local devnet",
        description="Write keys, a genesis and node homes under --dir, start one node process per node on "
        "127.0.0.1 with simulated radio and compute devices, and show a live table until Ctrl-C "
        "(or until --epochs epochs are committed everywhere).",
    )
    up.add_argument("--nodes", type=int, default=4, help="number of nodes (default 4)")
    up.add_argument("--validators", type=int, default=None, help="how many nodes validate (default: all)")
    up.add_argument("--epoch-seconds", type=float, default=10.0, help="epoch length in seconds (default 10)")
    up.add_argument("--epochs", type=int, default=None, help="stop after this many committed epochs")
    up.add_argument(
        "--dir", type=Path, default=Path("devnet-data"), help="where to write (default ./devnet-data)"
    )
    up.add_argument("--force", action="store_true", help="replace a non-empty --dir")
    up.add_argument("--seed", default=None, help="derive keys and placement from this seed (reproducible)")
    up.add_argument("--json", action="store_true", help="no live table; with --epochs, print a JSON summary")
    up.set_defaults(handler=cmd_up)
    scenario.add_parsers(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except DepinError as exc:
        print(f"depin-devnet: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
