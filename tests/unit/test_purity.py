"""The pure core imports no I/O, clock or randomness (DESIGN.md, "[pure]")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every module DESIGN.md marks [pure]. Listed ones that do not exist yet are skipped.
PURE = {
    "depin_p2p.wire",
    "depin_p2p.model",
    "depin_p2p.ledger.state",
    "depin_p2p.ledger.merkle",
    "depin_p2p.gossip.validation",
    "depin_p2p.gossip.liveness",
    "depin_p2p.witness.radio",
    "depin_p2p.witness.compute",
    "depin_p2p.witness.assign",
    "depin_p2p.witness.rewards",
    "depin_p2p.witness.candidates",
    "depin_p2p.witness.world",
    "depin_p2p.witness.verdicts",
    "depin_p2p.consensus.state",
    "depin_p2p.consensus.transition",
    "depin_p2p.consensus.value",
    "depin_p2p.consensus.driver",
    "depin_p2p.schedule",
    "depin_p2p.syncprogress",
    "depin_p2p.gossip.penalty",
    "depin_p2p.gossip.degree",
    "devnet.invariants",
}
# Project modules a pure module may import besides other pure ones.
PURE_SAFE = {"depin_p2p.errors", "depin_p2p", "depin_p2p.ledger", "depin_p2p.witness",
             "depin_p2p.gossip", "depin_p2p.consensus", "devnet"}
FORBIDDEN = {"trio", "libp2p", "lmdb", "structlog", "time", "random", "secrets", "os", "datetime",
             "asyncio", "socket", "threading", "uuid", "anyio", "multiaddr"}


def _path(module: str) -> Path:
    rel = Path(*module.split("."))
    pkg = ROOT / rel / "__init__.py"
    return pkg if pkg.exists() else ROOT / rel.with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


EXISTING = sorted(m for m in PURE if _path(m).exists())


def test_the_scan_sees_something() -> None:
    assert "depin_p2p.wire" in EXISTING


@pytest.mark.parametrize("module", EXISTING)
def test_pure_module_imports(module: str) -> None:
    bad = []
    for name in imported_modules(_path(module)):
        top = name.split(".")[0]
        if top in FORBIDDEN:
            bad.append(name)
        elif top in ("depin_p2p", "devnet") and name not in PURE | PURE_SAFE:
            parent = name.rsplit(".", 1)[0]
            # `from depin_p2p.x import name` adds "depin_p2p.x.name"; judge it by its module.
            if parent not in PURE | PURE_SAFE:
                bad.append(name)
    assert not bad, f"{module} is [pure] but imports {sorted(bad)}"


def test_scanner_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import time\nfrom trio import sleep\nfrom depin_p2p.ledger import store\n")
    assert {"time", "trio", "depin_p2p.ledger.store"} <= imported_modules(sample)
