"""`depin-devnet sim MANIFEST`: run a scenario manifest and judge it by the invariants.

``sim`` runs it in one process, in virtual time (:mod:`devnet.sim`); the same
manifest and seed give the same ``report.json`` bytes. The exit status is 0
when every invariant holds, 1 when one fails (named on stderr), 2 for a bad
manifest or argument.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from devnet.invariants import check_all
from devnet.manifest import load_manifest
from devnet.report import build_report, report_json, write_report
from devnet.sim import Simulation

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
    sim.add_argument("--out", type=Path, default=None, help="write report.json and report.html here")
    sim.add_argument("--json", action="store_true", help="print report.json to stdout")
    sim.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="error",
        help="the simulated nodes' log level (default error; their logs go to stderr)",
    )
    sim.set_defaults(handler=cmd_sim)


def _quiet_logs(level: str) -> None:
    """The simulated nodes log through structlog like real ones; keep only ``level`` and above."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())))


def cmd_sim(args: argparse.Namespace) -> int:
    _quiet_logs(args.log_level)
    manifest = load_manifest(args.manifest)
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
