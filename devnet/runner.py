"""Start, watch and stop the node processes of a local devnet.

Every node is a real ``python -m depin_p2p run --home DIR`` process whose
stdout and stderr go to ``DIR/stdout.log``. Stopping sends SIGTERM, waits a
bounded time, then SIGKILLs whatever is left: no process outlives the runner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from depin_p2p import wire
from depin_p2p.api import fetch_json
from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.consensus.value import EpochContent
from depin_p2p.ledger.store import LedgerStore
from devnet.layout import Layout, NodeLayout

STOP_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 20


@dataclass
class NodeProcess:
    layout: NodeLayout
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.layout.home / "stdout.log"

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "depin_p2p", "run", "--home", str(self.layout.home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()

    @property
    def exited(self) -> int | None:
        """The exit status if the process has ended, else None."""
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the node's output (its log and any traceback)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)


def stop_all(nodes: list[NodeProcess], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every node, wait up to ``timeout``, then SIGKILL the rest (by PID)."""
    for n in nodes:
        n.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for n in nodes:
        if n.process is None:
            continue
        try:
            n.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            n.signal(signal.SIGKILL)
            n.process.wait(timeout=timeout)


async def fetch_status(node: NodeLayout) -> dict[str, Any] | None:
    """The node's /status document, or None when it does not answer (yet)."""
    try:
        return await fetch_json(node.api_port, timeout=2.0)
    except (OSError, TimeoutError, ValueError, TypeError):
        return None


def summarize(layout: Layout, epochs: int, statuses: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Per node: the certificate hash of every committed epoch; proofs; rewards; supply.

    Reads each node's ledger directly (call after the nodes stopped).
    """
    genesis = json.loads(layout.genesis_file.read_text())
    genesis_supply = sum(genesis["accounts"].values()) + sum(v["stake"] for v in genesis["validators"])
    nodes = []
    for node, status in zip(layout.nodes, statuses, strict=True):
        with LedgerStore.open(node.home / "data", readonly=True) as store, store.view() as view:
            last = view.last_epoch()
            certs: dict[str, str] = {}
            proofs = {"beacons": 0, "reports": 0, "attestations": 0}
            rewards = 0
            for epoch in range(1, last + 1):
                raw = view.get_certificate(epoch)
                if raw is None:
                    break
                cert = wire.decode_as(raw, Certificate)
                certs[str(epoch)] = certificate_hash(cert).hex()
                content = wire.decode_as(cert.candidate.value, EpochContent)
                proofs["beacons"] += len(content.beacons)
                proofs["reports"] += len(content.reports)
                proofs["attestations"] += len(content.attestations)
                rewards += sum(r.amount for r in content.ledger.rewards)
            meta = view.get_meta()
        gossip = (status or {}).get("gossip_counters", {})
        nodes.append(
            {
                "index": node.index,
                "address": node.address,
                "last_epoch": last,
                "certificates": certs,
                "proofs_accepted": proofs,
                "proofs_rejected_by_code": gossip.get("reject_codes", {}),
                "proofs_ignored_by_code": gossip.get("ignore_codes", {}),
                "rewards_paid": rewards,
                "total_supply": meta.total_supply,
            }
        )
    agreed = all(
        len({n["certificates"].get(str(e)) for n in nodes if str(e) in n["certificates"]}) <= 1
        for e in range(1, epochs + 1)
    )
    return {
        "network_id": genesis["network_id"],
        "epochs": epochs,
        "genesis_supply": genesis_supply,
        "emission_per_epoch": genesis["emission_per_epoch"],
        "agreement": agreed,
        "nodes": nodes,
    }


async def wait_until_up(nodes: list[NodeProcess], timeout: float) -> None:
    """Wait until every node answers /status; raise RuntimeError naming a node that died or hung."""
    pending = list(nodes)
    with trio.move_on_after(timeout):
        while pending:
            for n in list(pending):
                if n.exited is not None:
                    raise RuntimeError(
                        f"node {n.layout.index} exited with status {n.exited}; its last output:\n{n.tail()}"
                    )
                if await fetch_status(n.layout) is not None:
                    pending.remove(n)
            if pending:
                await trio.sleep(0.2)
    if not pending:
        return
    slow = [n.layout.index for n in pending]
    raise RuntimeError(f"nodes {slow} did not answer within {timeout:.0f} s:\n{pending[0].tail()}")
