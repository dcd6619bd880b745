"""The devnet table: legend, tokens, elapsed time, highlights, no literal None, plurals."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from devnet.table import NodeView, devnet_table, duration, plural

MICRO = 1_000_000


def _status(last: int, peers: int, balance: int, **extra: Any) -> dict[str, Any]:
    return {
        "epoch_now": 12,
        "last_epoch": last,
        "peers": [f"p{i}" for i in range(peers)],
        "balance": balance,
        "total_supply": 403_000 * MICRO,
        "last_certificate": "ab" * 32,
        "consensus": {"running_epoch": None, "round": None},  # between instances: None on the wire
        "pending_proofs": {"beacons": 3, "reports": 9, "attestations": 1},
        **extra,
    }


def _text(table: Table) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(table)
    return " ".join(console.export_text().split())  # the caption wraps: compare words


def _cell(table: Table, column: str, row: int) -> Text:
    col = next(c for c in table.columns if c.header == column)
    cell = list(col.cells)[row]
    assert isinstance(cell, Text)
    return cell


def test_table_shows_tokens_legend_time_and_no_none() -> None:
    nodes = [
        NodeView(0, "up", _status(11, 3, 100_250 * MICRO + 500_000), genesis_balance=100_000 * MICRO),
        NodeView(1, "up", _status(11, 3, 100_000 * MICRO), genesis_balance=100_000 * MICRO),
        NodeView(2, "up", _status(8, 0, 100_000 * MICRO), genesis_balance=100_000 * MICRO),
        NodeView(3, "starting"),
    ]
    table = devnet_table(nodes, root="/tmp/dn", validators=4, elapsed_s=83, first_commit_s=21.4)
    text = _text(table)
    assert "None" not in text
    assert "4 nodes (4 validators)" in text
    assert "100,250.50" in text and "250.50" in text  # balance and rewards since genesis, in tokens
    assert "403,000.00" in text  # supply
    assert "elapsed 1 min 23 s" in text
    assert "first epoch committed 21.4 s after start" in text
    assert "Ctrl-C stops all nodes" in text
    assert "rewards (earned since genesis)" in text  # the legend
    assert "3/9/1" in text
    # Node 2 has no peers and is 3 epochs behind: both highlighted.
    assert _cell(table, "peers", 2).style == "bold red"
    assert _cell(table, "peers", 0).style == ""
    assert " behind" in _cell(table, "committed", 2).plain
    assert " behind" not in _cell(table, "committed", 1).plain


def test_singular_forms_and_a_node_that_is_down() -> None:
    nodes = [NodeView(0, "down", None, restarts=1, exit_status=-9)]
    text = _text(devnet_table(nodes, root="dn", validators=1, elapsed_s=5))
    assert "1 node (1 validator)" in text
    assert "down (exit -9), 1 restart" in text
    assert "no epoch committed yet" in text
    assert "None" not in text
    # A lone node has no one to peer with: 0 peers is not highlighted.
    lone = devnet_table([NodeView(0, "up", _status(3, 0, 0))], root="dn", validators=1)
    assert _cell(lone, "peers", 0).style == ""


def test_plural_and_duration() -> None:
    assert plural(1, "node") == "1 node"
    assert plural(0, "node") == "0 nodes"
    assert plural(2, "process", "processes") == "2 processes"
    assert duration(42) == "42 s"
    assert duration(125) == "2 min 05 s"
    assert duration(7260) == "2 h 01 min"
