"""`depin-devnet`: a local multi-node devnet in one command.

``depin-devnet up`` writes keys, a genesis (validators, funded accounts,
simulated radio and compute devices) and node homes under ``--dir``, starts
one ``depin-p2p run`` process per node on 127.0.0.1, and shows a live table
until Ctrl-C, or until ``--epochs`` epochs are committed on every node. With
``--json`` (and ``--epochs``) it prints a summary instead: per node, the
certificate hash of every epoch, proofs accepted and rejected by code,
rewards paid and supply. A node that crashes is reported with its log tail
and restarted (``--no-restart``: kept down); the others keep running.

``up --detach`` starts the nodes in the background and returns;
``status DIR``, ``logs DIR`` and ``down DIR`` work on it (and on a devnet
running in the foreground elsewhere); ``up --resume DIR`` starts an existing
devnet again without wiping it.

Every argument is checked before anything is written or started; a bad
invocation is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import trio
from rich.console import Console
from rich.live import Live

from depin_p2p import __version__
from depin_p2p.errors import ConfigError, DepinError
from devnet import attacks, export, scenario
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import Layout, write_layout
from devnet.runner import (
    DEVNET_FILE,
    NodeProcess,
    fetch_status,
    load_layout,
    node_pid_alive,
    read_devnet_file,
    stop_all,
    stop_pids,
    summarize,
    supervisor_alive,
    wait_until_up,
    write_devnet_file,
)
from devnet.supervisor import Supervisor
from devnet.table import NodeView, devnet_table, duration, plural

EXIT_USER_ERROR = 2
EXIT_NODE_FAILED = 1
# genesis time = now + this, so every process is normally up before epoch 1 starts (starting four
# processes took ~7 s on a loaded 2-core machine); one that comes up later still joins and signs
# from the next epoch to decide (depin_p2p.node.first_signing_epoch).
START_MARGIN_MS = 10_000
STARTUP_TIMEOUT_S = 60.0
DOWN_SUPERVISOR_TIMEOUT_S = 15.0
DEFAULT_DIR = Path("devnet-data")
DEFAULTS: dict[str, Any] = {"nodes": 4, "epoch_seconds": 10.0}


class UsageError(DepinError):
    """A bad invocation: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """No abbreviations (``--validator`` is not ``--validators``); errors in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        print(f"depin-devnet: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


# ------------------------------------------------------------------ checks


def _check_up_args(args: argparse.Namespace) -> None:
    """Every check of ``up``'s arguments, before any side effect. Raises UsageError / ConfigError."""
    creating = {"--nodes": args.nodes, "--validators": args.validators, "--epoch-seconds": args.epoch_seconds}
    creating |= {"--seed": args.seed, "--dir": args.dir, "--force": args.force or None}
    if args.resume is not None:
        given = [flag for flag, value in creating.items() if value is not None]
        if given:
            raise UsageError(f"--resume restarts an existing devnet as it was; drop {', '.join(given)}")
    nodes = DEFAULTS["nodes"] if args.nodes is None else args.nodes
    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {nodes}")
    if args.validators is not None and not 1 <= args.validators <= nodes:
        raise UsageError(f"--validators must be between 1 and --nodes ({nodes}), got {args.validators}")
    seconds = DEFAULTS["epoch_seconds"] if args.epoch_seconds is None else args.epoch_seconds
    if not math.isfinite(seconds) or seconds < 1:
        raise UsageError(f"--epoch-seconds must be a number of seconds ≥ 1, got {seconds}")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}")
    if args.json and args.epochs is None:
        raise UsageError("--json needs --epochs N (the summary is printed once N epochs are committed)")
    if args.detach and (args.epochs is not None or args.json):
        raise UsageError("--detach returns at once; it cannot wait for --epochs or print --json")
    if args.detach and args.no_restart:
        raise UsageError("--no-restart has no effect with --detach (nothing supervises a detached devnet)")
    if args.resume is not None:
        layout = load_layout(args.resume)
        running = _running_nodes(layout)
        if running:
            raise UsageError(
                f"{args.resume}: {plural(len(running), 'node')} still running ({_indexes(running)}); "
                f"stop them with `depin-devnet down {args.resume}`"
            )
        return
    root: Path = args.dir or DEFAULT_DIR
    if root.exists() and not root.is_dir():
        raise UsageError(f"--dir {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not args.force:
            raise UsageError(f"--dir {root} is not empty; use --force to replace it, or another --dir")
        if _running_nodes_if_devnet(root):
            raise UsageError(f"--dir {root} holds a running devnet; `depin-devnet down {root}` first")


def _running_nodes_if_devnet(root: Path) -> list[int]:
    try:
        return _running_nodes(load_layout(root))
    except ConfigError:
        return []


def _node_pids(layout: Layout) -> dict[int, set[int]]:
    """Every PID recorded for each node: in ``devnet.json`` and in the node's own ``run.json``."""
    pids: dict[int, set[int]] = {n.index: set() for n in layout.nodes}
    record = read_devnet_file(layout.root)
    if record is not None:
        for rec in record.nodes:
            if rec.pid is not None and rec.index in pids:
                pids[rec.index].add(rec.pid)
    for n in layout.nodes:
        try:
            pid = json.loads((n.home / "run.json").read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(pid, int):
            pids[n.index].add(pid)
    return pids


def _running_nodes(layout: Layout) -> list[int]:
    pids = _node_pids(layout)
    return [n.index for n in layout.nodes if any(node_pid_alive(p, n.home) for p in pids[n.index])]


def _indexes(items: list[int]) -> str:
    return ", ".join(f"node {i}" for i in items)


def _genesis_balances(layout: Layout) -> dict[str, int]:
    try:
        accounts = json.loads(layout.genesis_file.read_text()).get("accounts", {})
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in accounts.items() if isinstance(v, int)}


def _validator_count(layout: Layout) -> int:
    try:
        return len(json.loads(layout.genesis_file.read_text()).get("validators", []))
    except (OSError, ValueError):
        return 0


# ------------------------------------------------------------------ up


def _process_age_s() -> float:
    """Seconds since this process started (Linux ``/proc``), or 0 where unknown."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))


async def _supervise(sup: Supervisor, layout: Layout, epochs: int | None, console: Console | None) -> None:
    """Watch until ``epochs`` are committed everywhere, or until SIGINT/SIGTERM. Raises RuntimeError."""
    balances = _genesis_balances(layout)
    validators = _validator_count(layout)

    def table(footer: str = "Ctrl-C stops all nodes") -> Any:
        return devnet_table(
            sup.views(balances),
            root=str(layout.root),
            validators=validators,
            elapsed_s=sup.elapsed_s,
            first_commit_s=sup.first_commit_s,
            until_epoch=epochs,
            footer=footer,
        )

    # SIGHUP: the terminal went away; stop the nodes as for Ctrl-C rather than die without cleaning up.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            if console is None:
                await sup.run(until_epoch=epochs)
            else:
                with Live(table(), console=console, refresh_per_second=2) as live:
                    try:
                        await sup.run(until_epoch=epochs, on_update=lambda: live.update(table()))
                    finally:
                        live.update(table(footer="stopping all nodes…"))
            nursery.cancel_scope.cancel()


def cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic() - _process_age_s()  # the elapsed time counts this process's imports
    _check_up_args(args)
    console = Console(stderr=True)
    if args.resume is not None:
        layout = load_layout(args.resume)
    else:
        root: Path = (args.dir or DEFAULT_DIR).resolve()  # node command lines name absolute homes
        if root.is_dir() and any(root.iterdir()):
            shutil.rmtree(root)
        seed = args.seed.encode() if args.seed else os.urandom(16)
        plan = DevnetPlan(
            nodes=DEFAULTS["nodes"] if args.nodes is None else args.nodes,
            validators=args.validators,
            epoch_seconds=DEFAULTS["epoch_seconds"] if args.epoch_seconds is None else args.epoch_seconds,
            seed=seed,
        )
        devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + START_MARGIN_MS)
        try:
            layout = write_layout(devnet, root)
        except OSError as exc:
            raise ConfigError(f"cannot write the devnet under {root}: {exc.strerror or exc}") from None
    nodes = [NodeProcess(n) for n in layout.nodes]
    if args.detach:
        return _up_detached(layout, nodes)
    started_at = time.time()

    def record() -> None:
        write_devnet_file(layout.root, nodes, supervisor_pid=os.getpid(), started_at=started_at)

    def report(message: str) -> None:
        # Plain lines (a log tail must not be re-wrapped); rich's Live prints them above the table.
        print(f"depin-devnet: {message}", file=sys.stderr, flush=True)

    sup = Supervisor(layout, nodes, restart=not args.no_restart, report=report, on_restart=record, started=t0)
    failure: str | None = None
    try:
        for n in nodes:
            n.start()
        record()
        trio.run(_supervise, sup, layout, args.epochs, None if args.json else console)
    except* RuntimeError as group:  # every node is down (raised inside trio's nursery)
        failure = str(group.exceptions[0])
    finally:
        stop_all(nodes)
        (layout.root / DEVNET_FILE).unlink(missing_ok=True)
    if failure is not None:
        print(f"depin-devnet: error: {failure}", file=sys.stderr)
        return EXIT_NODE_FAILED
    if args.json and args.epochs is not None:
        summary = summarize(layout, args.epochs, sup.statuses())
        summary["elapsed_s"] = round(sup.elapsed_s, 1)
        summary["first_commit_after_s"] = None if sup.first_commit_s is None else round(sup.first_commit_s, 1)
        for entry, watched in zip(summary["nodes"], sup.nodes, strict=True):
            entry["restarts"] = watched.restarts
            entry["state"] = watched.state
        down = [w.proc.layout.index for w in sup.nodes if w.state == "down"]
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0 if summary["agreement"] and not down else EXIT_NODE_FAILED
    console.print(
        f"stopped after {duration(sup.elapsed_s)}; node homes and logs are in {layout.root} "
        f"(start it again with `depin-devnet up --resume {layout.root}`)"
    )
    return 0


def _up_detached(layout: Layout, nodes: list[NodeProcess]) -> int:
    for n in nodes:
        n.start(detach=True)
    write_devnet_file(layout.root, nodes, supervisor_pid=None, started_at=time.time())
    try:
        trio.run(wait_until_up, nodes, STARTUP_TIMEOUT_S)
    except RuntimeError as exc:
        stop_all(nodes)
        (layout.root / DEVNET_FILE).unlink(missing_ok=True)
        print(f"depin-devnet: error: {exc}", file=sys.stderr)
        return EXIT_NODE_FAILED
    for n in nodes:
        print(f"node {n.layout.index}: pid {n.pid}, api 127.0.0.1:{n.layout.api_port}, home {n.layout.home}")
    root = layout.root
    print(
        f"{plural(len(nodes), 'node')} running in the background. "
        f"`depin-devnet status {root}` shows them, `depin-devnet logs {root} -f` follows their logs, "
        f"`depin-devnet down {root}` stops them.",
        file=sys.stderr,
    )
    return 0


# ------------------------------------------------------------------ status, logs, down


def cmd_status(args: argparse.Namespace) -> int:
    layout = load_layout(args.dir)
    record = read_devnet_file(layout.root)
    pids = _node_pids(layout)

    async def fetch_all() -> list[dict[str, Any] | None]:
        out: list[dict[str, Any] | None] = [None] * len(layout.nodes)

        async def one(i: int) -> None:
            out[i] = await fetch_status(layout.nodes[i])

        async with trio.open_nursery() as nursery:
            for i in range(len(layout.nodes)):
                nursery.start_soon(one, i)
        return out

    statuses = trio.run(fetch_all)
    balances = _genesis_balances(layout)
    views = []
    for n, st in zip(layout.nodes, statuses, strict=True):
        alive = any(node_pid_alive(p, n.home) for p in pids[n.index])
        state = "up" if st is not None else ("not answering" if alive else "down")
        views.append(NodeView(n.index, state, st, balances.get(n.address, 0)))
    if args.json:
        doc = {
            "dir": str(layout.root),
            "nodes": [
                {"index": v.index, "state": v.state, "pids": sorted(pids[v.index]), "status": v.status}
                for v in views
            ],
        }
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        elapsed = None if record is None or not record.started_at else time.time() - record.started_at
        supervised = record is not None and supervisor_alive(record.supervisor_pid, layout.root)
        footer = f"`depin-devnet down {layout.root}` stops all nodes"
        if supervised and record is not None:
            footer += f" · supervised by `depin-devnet up` (pid {record.supervisor_pid})"
        Console().print(
            devnet_table(
                views,
                root=str(layout.root),
                validators=_validator_count(layout),
                elapsed_s=elapsed,
                footer=footer,
            )
        )
    return 0 if all(v.state == "up" for v in views) else EXIT_NODE_FAILED


def _render_log_line(line: str) -> str:
    """A JSON log line as ``time level event key=value …``; anything else unchanged."""
    try:
        doc = json.loads(line)
    except ValueError:
        return line
    if not isinstance(doc, dict) or "event" not in doc:
        return line
    stamp = str(doc.pop("timestamp", ""))[11:23]
    level = str(doc.pop("level", ""))
    event = str(doc.pop("event"))
    rest = " ".join(f"{k}={v}" for k, v in sorted(doc.items()))
    return f"{stamp} {level:<7} {event} {rest}".rstrip()


def cmd_logs(args: argparse.Namespace) -> int:
    layout = load_layout(args.dir)
    if args.node is not None and not 0 <= args.node < len(layout.nodes):
        raise UsageError(f"--node must be between 0 and {len(layout.nodes) - 1}, got {args.node}")
    if args.lines < 0:
        raise UsageError(f"--lines must be ≥ 0, got {args.lines}")
    chosen = [n for n in layout.nodes if args.node is None or n.index == args.node]
    procs = [NodeProcess(n) for n in chosen]
    prefix = len(chosen) > 1

    def show(index: int, line: str) -> None:
        text = line if args.raw else _render_log_line(line)
        print(f"node-{index} | {text}" if prefix else text, flush=True)

    offsets: dict[int, int] = {}
    for p in procs:
        for line in p.tail(args.lines).splitlines() if args.lines else []:
            show(p.layout.index, line)
        offsets[p.layout.index] = p.log_path.stat().st_size if p.log_path.exists() else 0
    if not args.follow:
        return 0
    try:
        while True:
            for p in procs:
                offsets[p.layout.index] = _follow(p, offsets[p.layout.index], show)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0


def _follow(proc: NodeProcess, offset: int, show: Any) -> int:
    try:
        size = proc.log_path.stat().st_size
    except OSError:
        return offset
    if size < offset:  # the file was replaced (a fresh devnet in the same dir)
        offset = 0
    if size == offset:
        return offset
    with proc.log_path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(size - offset)
    complete, _, _ = data.rpartition(b"\n")
    if not complete and not data.endswith(b"\n"):
        return offset  # half a line: wait for the rest
    for line in complete.decode(errors="replace").splitlines():
        show(proc.layout.index, line)
    return offset + len(complete) + 1


def cmd_down(args: argparse.Namespace) -> int:
    layout = load_layout(args.dir)
    record = read_devnet_file(layout.root)
    running = _running_nodes(layout)
    if record is not None and supervisor_alive(record.supervisor_pid, layout.root):
        # The foreground `up` stops its own nodes (and would restart any we killed under it).
        assert record.supervisor_pid is not None
        os.kill(record.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_SUPERVISOR_TIMEOUT_S
        while time.monotonic() < deadline and supervisor_alive(record.supervisor_pid, layout.root):
            time.sleep(0.1)
    pids = _node_pids(layout)
    targets = [(pid, n.home) for n in layout.nodes for pid in sorted(pids[n.index])]
    killed = stop_pids(targets, timeout=10.0)
    (layout.root / DEVNET_FILE).unlink(missing_ok=True)
    if not running:
        print(f"no node of {layout.root} is running", file=sys.stderr)
        return 0
    msg = f"stopped {plural(len(running), 'node')} ({_indexes(running)})"
    if killed:
        msg += f"; {plural(len(killed), 'process', 'processes')} did not stop within 10 s and were killed"
    print(msg, file=sys.stderr)
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="depin-devnet", description="Local depin-p2p devnets for testers.")
    parser.add_argument("--version", action="version", version=f"depin-devnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    up = sub.add_parser(
        "up",
        help="start a local devnet",
        description="Write keys, a genesis and node homes under --dir, start one node process per node on "
        "127.0.0.1 with simulated radio and compute devices, and show a live table until Ctrl-C "
        "(or until --epochs epochs are committed everywhere). A node that crashes is reported and "
        "restarted; the others keep running.",
    )
    up.add_argument("--nodes", type=int, default=None, help="number of nodes (default 4)")
    up.add_argument("--validators", type=int, default=None, help="how many nodes validate (default: all)")
    up.add_argument("--epoch-seconds", type=float, default=None, help="epoch length in seconds (default 10)")
    up.add_argument("--epochs", type=int, default=None, help="stop after this many committed epochs")
    up.add_argument("--dir", type=Path, default=None, help=f"where to write (default ./{DEFAULT_DIR})")
    up.add_argument("--force", action="store_true", help="replace a non-empty --dir")
    up.add_argument("--seed", default=None, help="derive keys and placement from this seed (reproducible)")
    up.add_argument("--json", action="store_true", help="with --epochs: no table; print a JSON summary")
    up.add_argument(
        "--detach",
        action="store_true",
        help="start the nodes in the background, write DIR/devnet.json, return",
    )
    up.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="start the devnet in DIR again, without wiping it",
    )
    up.add_argument(
        "--no-restart", action="store_true", help="keep a crashed node down instead of restarting it"
    )
    up.set_defaults(handler=cmd_up)

    status = sub.add_parser("status", help="show the nodes of a devnet", description="Show each node of DIR.")
    status.add_argument("dir", type=Path, metavar="DIR")
    status.add_argument("--json", action="store_true", help="every node's state and /status document")
    status.set_defaults(handler=cmd_status)

    logs = sub.add_parser(
        "logs", help="show the nodes' logs", description="Print the end of each node's log."
    )
    logs.add_argument("dir", type=Path, metavar="DIR")
    logs.add_argument("--node", type=int, default=None, help="only this node (its index)")
    logs.add_argument("-n", "--lines", type=int, default=20, help="lines per node (default 20)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    logs.add_argument("--raw", action="store_true", help="the JSON lines as written")
    logs.set_defaults(handler=cmd_logs)

    down = sub.add_parser(
        "down",
        help="stop a devnet",
        description="Stop every node of DIR: SIGTERM by PID, wait up to 10 s, then SIGKILL what is left.",
    )
    down.add_argument("dir", type=Path, metavar="DIR")
    down.set_defaults(handler=cmd_down)
    scenario.add_parsers(sub)
    attacks.add_parser(sub)
    export.add_parser(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except DepinError as exc:
        print(f"depin-devnet: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside the supervisor's own handling (e.g. while writing keys)
        print("depin-devnet: interrupted", file=sys.stderr)
        return 130


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
