"""`depin-devnet attacks --sim [--json]`: the whole adversary catalogue, one manifest per role.

Runs every ``devnet/manifests/attacks/<role>.toml`` in the simulator (the
manifest's own seed), checks the invariants, and prints one row per role:
what the adversary did, the detection codes its role's attack raised on
honest nodes, the time from its first attack message to the first honest
record of one (sampled every 100 ms of virtual time), its penalty, and
whether every invariant held; for a radio or compute role also the honest
nodes' earnings against the same manifest and seed with the adversary
honest (:func:`run_attack`). Exit 1 if any role went undetected, broke an
invariant or cost honest earnings (or earned its false claims anything),
2 for a bad argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from devnet.adversaries.detect import chain_rewards
from devnet.adversaries.registry import CATALOGUE
from devnet.invariants import check_all
from devnet.manifest import Manifest, load_manifest
from devnet.report import attack_rows
from devnet.scenario import _quiet_logs
from devnet.sim import Simulation

ATTACKS_DIR = Path(__file__).parent / "manifests" / "attacks"
EARNING_FAMILIES = frozenset({"radio", "compute"})
# How far below 1 the honest nodes' earnings under a radio or compute attack may fall. Each epoch's
# emission is split pro rata over the shares earned, so an attacker refused its false claims leaves
# more for the honest nodes (a ratio >= 1); what can still lower it is an honest share the attack
# removed: an honest beacon that counted the attacker's (refused) report as a witness, or a reward
# lottery draw shifted by a different previous certificate. In the catalogue's manifests (at most
# 11 witnesses per beacon, under the lottery's K = 14) only the first applies.
EARNINGS_NOISE = 0.05
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
    """Run one attack manifest in the simulator; return its row (one adversary per manifest).

    For a radio or compute role the manifest also runs with its adversary honest (same genesis,
    devices and seed): ``honest_earnings_ratio`` is what the honest nodes earned under attack over
    what they earned then, ``attacker_false_earnings_micro`` what the adversary earned beyond its
    honest earnings, and ``earnings_ok`` says the first is at least 1 - EARNINGS_NOISE and the
    second 0. Other roles: None for all three.
    """
    manifest = load_manifest(path)
    sim = Simulation(manifest, manifest.network.seed)
    run = sim.run()
    verdicts = check_all(run)
    rows = attack_rows(run, verdicts)
    if len(rows) != 1:
        raise ValueError(f"{path}: an attack manifest has exactly one [[adversary]], not {len(rows)}")
    failed = sorted(name for name, v in verdicts.items() if not v.ok)
    row = rows[0] | {"manifest": path.name, "invariants_failed": failed}
    (adv,) = manifest.adversaries
    earnings: dict[str, Any] = {
        "honest_earnings_ratio": None, "attacker_false_earnings_micro": None, "earnings_ok": None
    }
    if CATALOGUE[adv.role].family in EARNING_FAMILIES:
        baseline = baseline_run(manifest)
        honest, theirs = _earnings(sim, adv.node, adv.from_epoch)
        honest0, theirs0 = _earnings(baseline, adv.node, adv.from_epoch)
        ratio = round(honest / honest0, 4) if honest0 else None
        false = max(0, theirs - theirs0)
        earnings = {
            "honest_earnings_ratio": ratio,
            "attacker_false_earnings_micro": false,
            "earnings_ok": ratio is not None and ratio >= 1 - EARNINGS_NOISE and false == 0,
        }
    return row | earnings


_BASELINES: dict[tuple[object, ...], Simulation] = {}
_BASELINES_CAP = 4


def baseline_run(manifest: Manifest) -> Simulation:
    """The manifest run with its adversaries honest, once per process for every manifest that
    differs only in its adversaries' roles (the roles sharing ``attack-radio``'s network, say).

    A neutral run reads of its adversaries only their nodes and the genesis accounts a ring role
    adds (:func:`devnet.sim.ring_devices`) and where a role registers its radios
    (:func:`devnet.sim.claim_near_cells`): those are in the key, the roles are not. The run is a
    function of the key alone (:func:`devnet.sim.run_seeded`), so a cached one is the one a fresh
    run would give.
    """
    key = (
        manifest.name, manifest.network, manifest.devices, manifest.links, manifest.perturbations,
        tuple((a.node, CATALOGUE[a.role].ring, CATALOGUE[a.role].claims_near) for a in manifest.adversaries),
    )
    sim = _BASELINES.get(key)
    if sim is None:
        sim = Simulation(manifest, manifest.network.seed, neutral=True)
        sim.run()
        if len(_BASELINES) >= _BASELINES_CAP:
            del _BASELINES[next(iter(_BASELINES))]
        _BASELINES[key] = sim
    return sim


def _earnings(sim: Simulation, adversary: int, from_epoch: int) -> tuple[int, int]:
    """(honest nodes' total, the adversary's) rewards from ``from_epoch`` on, as the honest node with
    the longest chain committed them; the adversary's are its ring's accounts' for a ring role."""
    honest = [n for n in sim.nodes if n.index != adversary]
    ref = max(honest, key=lambda n: n.ledger.last_epoch())
    rewards = chain_rewards([c[5] for c in ref.ledger.commits], from_epoch)
    adv = sim.nodes[adversary]
    ring = {
        d.owner
        for k in sim.devnet.devices_of(adversary)
        if (d := ref.ledger.get_device(k.key.public_key)) is not None and d.owner != adv.key.public_key
    }
    theirs = sum(rewards.get(o, 0) for o in ring) if ring else rewards.get(adv.key.public_key, 0)
    return sum(rewards.get(n.key.public_key, 0) for n in honest), theirs


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
    bad = [
        r["role"] for r in rows if not r["detected"] or not r["invariants_ok"] or r["earnings_ok"] is False
    ]
    if bad:
        print(
            f"depin-devnet: not caught, invariant broken or honest earnings hit: {', '.join(bad)}",
            file=sys.stderr,
        )
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
    if p.get("connections_pruned"):
        parts.append(f"{p['connections_pruned']} connections pruned")
    if p.get("rounds_skipped"):
        parts.append(f"{p['rounds_skipped']} slots skipped")
    parts.append(
        f"reward {p['reward_micro'] / 1e6:.2f} vs honest {p['honest_median_reward_micro'] / 1e6:.2f}"
    )
    return ", ".join(parts)


def _earnings_cell(r: dict[str, Any]) -> str:
    if r["earnings_ok"] is None:
        return "-"
    ratio = "-" if r["honest_earnings_ratio"] is None else f"x{r['honest_earnings_ratio']:.3f}"
    text = f"{ratio}, attacker +{r['attacker_false_earnings_micro'] / 1e6:g}"
    return text if r["earnings_ok"] else f"[red]{text}[/red]"


def _print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="adversary catalogue (simulator)")
    for col in ("role", "family", "did", "detected by", "ttd ms", "penalty", "honest earn", "invariants"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["role"],
            r["family"],
            ", ".join(f"{k} {v}" for k, v in r["did"].items()),
            ", ".join(r["detection_codes"]) if r["detected"] else "[red]NOT DETECTED[/red]",
            "-" if r["time_to_detect_ms"] is None else str(r["time_to_detect_ms"]),
            _penalty(r["penalty"]),
            _earnings_cell(r),
            "ok" if r["invariants_ok"] else "[red]" + ", ".join(r["invariants_failed"]) + "[/red]",
        )
    Console(width=200).print(table)
