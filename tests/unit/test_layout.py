"""DESIGN.md's shape: libp2p is imported in one place, and no class grows past 300 lines (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_purity import imported_modules

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "depin_p2p"
LIBP2P_PACKAGE = LIBRARY / "gossip" / "libp2p"
MAX_CLASS_LINES = 300


def _sources() -> list[Path]:
    return sorted(p for d in (LIBRARY, ROOT / "devnet") for p in d.rglob("*.py"))


def test_only_the_libp2p_transport_imports_libp2p() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if LIBP2P_PACKAGE not in path.parents
        and any(name.split(".")[0] in {"libp2p", "multiaddr"} for name in imported_modules(path))
    ]
    assert offenders == []
    assert any(
        name.split(".")[0] == "libp2p" for p in LIBP2P_PACKAGE.glob("*.py") for name in imported_modules(p)
    )


def test_no_class_in_the_library_is_over_300_lines() -> None:
    long = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(ROOT)}:{node.name}"
                if lines > MAX_CLASS_LINES:
                    long.append(f"{name} ({lines} lines)")
    assert long == []


def test_the_consensus_shell_stays_a_thin_loop() -> None:
    # The trio loop that feeds the driver and executes its requests (issue 11: under 250 lines).
    lines = (LIBRARY / "consensus" / "service.py").read_text().count("\n")
    assert lines < 250, lines
