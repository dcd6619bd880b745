"""`depin-devnet attacks --sim [--json]`: the whole adversary catalogue, one manifest per role.

Runs every ``devnet/manifests/attacks/<role>.toml`` in the simulator (the
manifest's own seed), checks the invariants, and prints one row per role:
what the adversary did, the detection codes its role's attack raised on
honest nodes, the time from its first attack message to the first honest
record of one (sampled every 100 ms of virtual time), its penalty, and
whether every invariant held. Exit 1 if any role went undetected or broke
an invariant, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devnet.adversaries.registry import CATALOGUE
from devnet.invariants import check_all
from devnet.manifest import load_manifest
from devnet.report import attack_rows
from devnet.scenario import _quiet_logs
from devnet.sim import Simulation

ATTACKS_DIR = Path(__file__).parent / "manifests" / "attacks"
EXIT_FAILED = 1
EXIT_USER_ERROR = 2


def add_parser(sub: Any) -> None:
    """Register ``attacks`` on the ``depin-devnet`` sub-command parser."""
    p = sub.add_parser(
        "attacks",
        help="run the adversary catalogue (one manifest per role) and print what caught each",
        description="Run every devnet/manifests/attacks/<role>.toml and print, per role, what the "
        "adversary did, the detection codes seen on honest nodes, the time to the first detection, "
        "the penalty and whether every invariant held. Exit 1 if any role went undetected.",
        allow_abbrev=False,
    )
    p.add_argument("--sim", action="store_true", required=True, help="in the simulator (the only mode)")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON list")
    p.add_argument("--role", action="append", default=None, help="only this role (repeatable)")
    p.set_defaults(handler=cmd_attacks)


def run_attack(path: Path) -> dict[str, Any]:
    """Run one attack manifest in the simulator; return its row (one adversary per manifest)."""
    manifest = load_manifest(path)
    run = Simulation(manifest, manifest.network.seed).run()
    verdicts = check_all(run)
    rows = attack_rows(run, verdicts)
    if len(rows) != 1:
        raise ValueError(f"{path}: an attack manifest has exactly one [[adversary]], not {len(rows)}")
    failed = sorted(name for name, v in verdicts.items() if not v.ok)
    return rows[0] | {"manifest": path.name, "invariants_failed": failed}


def cmd_attacks(args: argparse.Namespace) -> int:
    _quiet_logs("error")
    roles = args.role or sorted(CATALOGUE)
    unknown = sorted(set(roles) - set(CATALOGUE))
    if unknown:
        print(f"depin-devnet: error: unknown role {', '.join(unknown)}", file=sys.stderr)
        return EXIT_USER_ERROR
    missing = [r for r in roles if not (ATTACKS_DIR / f"{r}.toml").exists()]
    if missing:
        print(f"depin-devnet: error: no manifest for {', '.join(missing)} in {ATTACKS_DIR}", file=sys.stderr)
        return EXIT_USER_ERROR
    console = Console(stderr=True)
    rows = []
    for role in roles:
        with console.status(f"attack {role}"):
            rows.append(run_attack(ATTACKS_DIR / f"{role}.toml"))
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
    else:
        _print_table(rows)
    bad = [r["role"] for r in rows if not r["detected"] or not r["invariants_ok"]]
    if bad:
        print(f"depin-devnet: not caught or invariant broken: {', '.join(bad)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _penalty(p: dict[str, Any]) -> str:
    parts = []
    if p["rejected"]:
        parts.append(f"{p['rejected']} rejected")
    if p["attested_failed"]:
        parts.append(f"{p['attested_failed']} failed attestations")
    if p["banned_by"]:
        parts.append(f"banned by {p['banned_by']}")
    if p["slashed_micro"]:
        parts.append(f"slashed {p['slashed_micro'] / 1e6:g}")
    parts.append(
        f"reward {p['reward_micro'] / 1e6:.2f} vs honest {p['honest_median_reward_micro'] / 1e6:.2f}"
    )
    return ", ".join(parts)


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="adversary catalogue (simulator)")
    for col in ("role", "family", "did", "detected by", "ttd ms", "penalty", "invariants"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["role"],
            r["family"],
            ", ".join(f"{k} {v}" for k, v in r["did"].items()),
            ", ".join(r["detection_codes"]) if r["detected"] else "[red]NOT DETECTED[/red]",
            "-" if r["time_to_detect_ms"] is None else str(r["time_to_detect_ms"]),
            _penalty(r["penalty"]),
            "ok" if r["invariants_ok"] else "[red]" + ", ".join(r["invariants_failed"]) + "[/red]",
        )
    Console(width=200).print(table)
