"""The devnet table: what ``depin-devnet up`` and ``depin-devnet status`` show.

Pure rendering from what the supervisor knows of each node (its state, its
last ``/status`` document, its restarts) into a rich ``Table``; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from depin_p2p.model import MICRO

# A node this many committed epochs behind the most advanced one is highlighted.
BEHIND_EPOCHS = 2

LEGEND = (
    "epoch: running by the clock · committed: last epoch in its ledger · round: of the running instance · "
    "peers: connected · proofs: beacons/witness reports/compute attestations held for the running "
    "epoch · balance, rewards (earned since genesis), supply: tokens · certificate: hash of the last one"
)


@dataclass(frozen=True, slots=True)
class NodeView:
    """What the supervisor knows of one node.

    ``state``: ``starting``, ``up``, ``not answering`` (running, but its last
    ``/status`` poll failed), ``restarting``, ``down`` (exited and kept down).
    """

    index: int
    state: str
    status: dict[str, Any] | None = None
    genesis_balance: int = 0
    restarts: int = 0
    exit_status: int | None = None


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 node``, ``2 nodes``; ``many`` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 01 min``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def tokens(micro: object) -> str:
    """Micro-units as tokens with two decimals, or ``-`` when unknown."""
    if not isinstance(micro, int):
        return "-"
    return f"{micro / MICRO:,.2f}"


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _state_text(node: NodeView) -> Text:
    label = node.state
    if node.state == "down" and node.exit_status is not None:
        label = f"down (exit {node.exit_status})"
    if node.restarts:
        label += f", {plural(node.restarts, 'restart')}"
    style = {"up": "green", "starting": "cyan", "not answering": "yellow", "restarting": "yellow"}
    return Text(label, style=style.get(node.state, "bold red"))


def devnet_table(
    nodes: list[NodeView],
    *,
    root: str,
    validators: int,
    elapsed_s: float | None = None,
    first_commit_s: float | None = None,
    until_epoch: int | None = None,
    footer: str | None = "Ctrl-C stops all nodes",
) -> Table:
    """The table of a devnet's nodes, with a title, a legend and a footer line."""
    title = f"depin-devnet · {plural(len(nodes), 'node')} ({plural(validators, 'validator')}) · {root}"
    if until_epoch is not None:
        title += f" · until epoch {until_epoch}"
    table = Table(title=title, caption_justify="left")
    table.add_column("node", justify="right", no_wrap=True)
    table.add_column("state")
    for col in ("epoch", "committed", "round", "peers"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("proofs", no_wrap=True)
    for col in ("balance", "rewards", "supply"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("certificate", no_wrap=True)
    committed = [
        int(n.status.get("last_epoch", 0)) for n in nodes if n.status is not None and n.state == "up"
    ]
    best = max(committed, default=0)
    for node in nodes:
        st = node.status
        if st is None:
            table.add_row(str(node.index), _state_text(node), *(["-"] * 9))
            continue
        cons = st.get("consensus") or {}
        pend = st.get("pending_proofs") or {}
        peers = len(st.get("peers") or [])
        last = st.get("last_epoch")
        balance = st.get("balance")
        rewards = balance - node.genesis_balance if isinstance(balance, int) else None
        behind = isinstance(last, int) and best - last >= BEHIND_EPOCHS
        peers_text = Text(str(peers), style="bold red" if peers == 0 and len(nodes) > 1 else "")
        last_text = Text(_cell(last) + (" behind" if behind else ""), style="bold yellow" if behind else "")
        proofs = "/".join(_cell(pend.get(k)) for k in ("beacons", "reports", "attestations"))
        table.add_row(
            str(node.index),
            _state_text(node),
            _cell(st.get("epoch_now")),
            last_text,
            _cell(cons.get("round")),
            peers_text,
            proofs,
            tokens(balance),
            tokens(rewards),
            tokens(st.get("total_supply")),
            str(st.get("last_certificate") or "-")[:8],
        )
    lines = [LEGEND]
    when = []
    if elapsed_s is not None:
        when.append(f"elapsed {duration(elapsed_s)}")
    if first_commit_s is not None:
        when.append(f"first epoch committed {first_commit_s:.1f} s after start")
    elif elapsed_s is not None:
        when.append("no epoch committed yet")
    if when:
        lines.append(" · ".join(when))
    if footer:
        lines.append(footer)
    table.caption = "\n".join(lines)
    return table
