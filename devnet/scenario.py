"""`depin-devnet sim MANIFEST` and `depin-devnet run MANIFEST`: run a scenario, judge it by the invariants.

``sim`` runs it in one process, in virtual time (:mod:`devnet.sim`); the same
manifest and seed give the same ``report.json`` bytes. ``run`` runs it on real
``depin-p2p run`` processes, each in its own network namespace when root
(:mod:`devnet.procrun`). Both write the same report. The exit status is 0
when every invariant holds, 1 when one fails (named on stderr), 2 for a bad
manifest or argument, or a manifest `run` cannot honour here.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from devnet import netns
from devnet.invariants import RunRecord, Verdict, check_all
from devnet.manifest import Manifest, load_manifest, with_epoch_seconds
from devnet.report import build_report, report_json, write_report
from devnet.sim import Simulation

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

EXIT_INVARIANT_FAILED = 1


def add_parsers(sub: Any) -> None:
    """Register ``sim`` on the ``depin-devnet`` sub-command parser."""
    sim = sub.add_parser(
        "sim",
        help="run a scenario manifest in the simulator (one process, virtual time)",
        description="Run MANIFEST's network, devices, perturbations and adversaries in one process on the "
        "memory network in virtual time, through the node's own assembly; check the invariants and print "
        "their verdicts. The same manifest and seed give the same report, byte for byte.",
        allow_abbrev=False,
    )
    sim.add_argument("manifest", type=Path, help="the scenario (TOML; see devnet/manifests/)")
    sim.add_argument("--seed", type=int, default=None, help="run seed (default: the manifest's network.seed)")
    sim.add_argument(
        "--epoch-seconds",
        type=float,
        default=None,
        metavar="S",
        help="run the manifest with epochs of S seconds instead of its network.epoch_seconds",
    )
    sim.add_argument("--out", type=Path, default=None, help="write report.json and report.html here")
    sim.add_argument("--json", action="store_true", help="print report.json to stdout")
    sim.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="error",
        help="the simulated nodes' log level (default error; their logs go to stderr)",
    )
    sim.set_defaults(handler=cmd_sim)

    run = sub.add_parser(
        "run",
        help="run a scenario manifest on real node processes (network namespaces as root)",
        description="Run MANIFEST on real `depin-p2p run` processes, in wall-clock time: kill is SIGKILL, "
        "restart and join start the process on its home, pause/resume are SIGSTOP/SIGCONT, transfer/stake/"
        "unstake go through the node's API. As root, each node runs in its own network namespace "
        "(10.77.0.N) on a veth mesh, one link per node pair, and disconnect/partition set real links down "
        "(each cut's byte counters are in the report). Without root or iproute2's `ip`, the nodes run on "
        "127.0.0.1 with a warning, and a manifest with disconnect/partition is refused (exit 2). The "
        "kernel here has no netem: [links] delay, jitter and loss are refused (they are sim-only). "
        "Then the same invariants and report as `sim`; the seed fixes keys, devices and genesis, but "
        "processes are not deterministic, so only the verdicts are comparable across runs.",
        allow_abbrev=False,
    )
    run.add_argument("manifest", type=Path, help="the scenario (TOML; see devnet/manifests/)")
    run.add_argument("--seed", type=int, default=None, help="key seed (default: the manifest's network.seed)")
    run.add_argument(
        "--epoch-seconds",
        type=float,
        default=None,
        metavar="S",
        help="run the manifest with epochs of S seconds instead of its network.epoch_seconds",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write report.json and report.html here, and keep the node homes and logs in OUT/nodes",
    )
    run.add_argument("--json", action="store_true", help="print report.json to stdout")
    run.add_argument(
        "--loopback",
        action="store_true",
        help="run the nodes on 127.0.0.1 even as root (no namespaces; manifests that cut links are refused)",
    )
    run.set_defaults(handler=cmd_run)


def _quiet_logs(level: str) -> None:
    """The simulated nodes log through structlog like real ones; keep only ``level`` and above."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())))


def _load(args: argparse.Namespace) -> Manifest:
    """The manifest named on the command line, with ``--epoch-seconds`` applied (one line if bad)."""
    manifest = load_manifest(args.manifest)
    if args.epoch_seconds is None:
        return manifest
    return with_epoch_seconds(manifest, args.epoch_seconds, source=str(args.manifest))


def cmd_sim(args: argparse.Namespace) -> int:
    _quiet_logs(args.log_level)
    manifest = _load(args)
    seed = manifest.network.seed if args.seed is None else args.seed
    if seed < 0:
        print("depin-devnet: error: --seed must be ≥ 0", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    sim = Simulation(manifest, seed)
    epochs = manifest.network.epochs
    with console.status(f"{manifest.name}: simulating {manifest.network.nodes} nodes") as status:
        sim.progress = lambda epoch: status.update(f"{manifest.name}: epoch {epoch}/{epochs}")
        run = sim.run()
    verdicts = check_all(run)
    doc = build_report(manifest, seed, run, verdicts)
    return _finish(args, console, manifest=manifest, run=run, verdicts=verdicts, doc=doc)


def cmd_run(args: argparse.Namespace) -> int:
    from devnet.procrun import NO_NETEM, Interrupted, ProcessRun  # noqa: PLC0415  (imports the node's stack)

    manifest = _load(args)
    seed = manifest.network.seed if args.seed is None else args.seed
    if seed < 0:
        print("depin-devnet: error: --seed must be ≥ 0", file=sys.stderr)
        return EXIT_USER_ERROR
    reason = manifest.sim_only_reason()
    if reason is not None:
        print(f"depin-devnet: error: {args.manifest}: {reason}", file=sys.stderr)
        return EXIT_USER_ERROR
    unavailable = "--loopback" if args.loopback else netns.unavailable_reason()
    if unavailable is None and manifest.network.nodes > netns.MAX_MESH_NODES:
        unavailable = f"at most {netns.MAX_MESH_NODES} nodes get a namespace each"
    if unavailable is not None and manifest.needs_link_cuts():
        fix = "drop --loopback" if args.loopback else f"{unavailable}: run as root"
        print(
            f"depin-devnet: error: {args.manifest} cuts links (disconnect/partition), which `run` does only "
            f"with one network namespace per node; {fix}, or use `depin-devnet sim`",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    console = Console(stderr=True)
    if unavailable is not None and not args.loopback:
        note = f"warning: {unavailable}: the nodes run on 127.0.0.1, without link isolation"
        console.print(note, highlight=False)
    console.print(f"warning: {NO_NETEM}", highlight=False)
    keep = args.out is not None
    homes = (args.out / "nodes") if keep else Path(tempfile.mkdtemp(prefix="depin-devnet-run-"))
    if keep and homes.exists():
        shutil.rmtree(homes)
    runner = ProcessRun(manifest, seed, homes, isolate=unavailable is None)
    try:
        with console.status(f"{manifest.name}: {manifest.network.nodes} node processes") as status:
            runner.progress = lambda line: status.update(f"{manifest.name}: {line}")
            run = runner.run()
    except RuntimeError as exc:  # a node did not come up
        print(f"depin-devnet: error: {exc}", file=sys.stderr)
        return EXIT_INVARIANT_FAILED
    except (Interrupted, KeyboardInterrupt) as exc:
        what = str(exc) or "interrupted"
        print(f"depin-devnet: {what}: every node process and namespace removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if not keep:
            shutil.rmtree(homes, ignore_errors=True)
    for line in runner.warnings:
        console.print(f"warning: {line}", highlight=False)
    verdicts = check_all(run)
    doc = build_report(manifest, seed, run, verdicts)
    doc["run"] = runner.run_section(run) | {"unsupported": [NO_NETEM]}
    return _finish(args, console, manifest=manifest, run=run, verdicts=verdicts, doc=doc)


def _finish(
    args: argparse.Namespace,
    console: Console,
    *,
    manifest: Manifest,
    run: RunRecord,
    verdicts: dict[str, Verdict],
    doc: dict[str, Any],
) -> int:
    if args.out is not None:
        json_path, html_path = write_report(args.out, doc, run, manifest)
        console.print(f"report: {json_path} and {html_path}")
    if args.json:
        sys.stdout.buffer.write(report_json(doc))
    for name, verdict in verdicts.items():
        mark = "[green]ok[/green]  " if verdict.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {name}: {verdict.detail}", highlight=False)
    failed = [name for name, v in verdicts.items() if not v.ok]
    if failed:
        print(f"depin-devnet: invariant failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_INVARIANT_FAILED
    return 0
