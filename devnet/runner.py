"""Start, watch and stop the node processes of a local devnet.

Every node is a real ``python -m depin_p2p run --home DIR`` process whose
stdout and stderr go to ``DIR/stdout.log``. Stopping sends SIGTERM, waits a
bounded time, then SIGKILLs whatever is left: no process outlives the runner.

``ROOT/devnet.json`` records the running devnet (each node's PID and ports,
and the PID of the ``depin-devnet up`` supervising it, if any), so
``depin-devnet status``, ``logs`` and ``down`` work from another terminal and
on a devnet started with ``--detach``. A PID is signalled only while its
command line is still that node's ``depin_p2p run --home``.
"""

from __future__ import annotations

import contextlib
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
from depin_p2p.config import load_config
from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.consensus.value import EpochContent
from depin_p2p.crypto import load_key_file
from depin_p2p.errors import ConfigError
from depin_p2p.ledger.store import LedgerStore
from devnet.layout import Layout, NodeLayout

STOP_TIMEOUT_S = 5.0
STATUS_TIMEOUT_S = 2.0
DEVNET_FILE = "devnet.json"
LOG_TAIL_LINES = 20


@dataclass
class NodeProcess:
    """One node's process.

    ``prefix`` is put before the Python command (``ip netns exec NS`` runs it in a
    network namespace); ``program`` is what Python runs before ``--home DIR``
    (a devnet adversary's entry point instead of ``depin_p2p run``).
    """

    layout: NodeLayout
    process: subprocess.Popen[bytes] | None = None
    prefix: tuple[str, ...] = ()
    program: tuple[str, ...] = ("-m", "depin_p2p", "run")
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.layout.home / "stdout.log"

    def start(self, *, detach: bool = False) -> None:
        """Start the node process; ``detach``: in its own session (it outlives this terminal)."""
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, *self.program, "--home", str(self.layout.home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

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


async def fetch_status(node: NodeLayout, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
    """The node's /status document, or None when it does not answer (yet)."""
    try:
        return await fetch_json(node.api_port, timeout=timeout)
    except (OSError, TimeoutError, trio.TooSlowError, ValueError, TypeError):
        # trio.TooSlowError: the node accepted but did not answer in time (busy, or stopped).
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


# --------------------------------------------------------------------- devnet.json


def write_devnet_file(
    root: Path, nodes: list[NodeProcess], *, supervisor_pid: int | None, started_at: float
) -> None:
    """Record the running devnet in ``root/devnet.json`` (atomically)."""
    doc = {
        "supervisor_pid": supervisor_pid,
        "started_at": started_at,
        "nodes": [
            {
                "index": n.layout.index,
                "home": str(n.layout.home),
                "pid": n.pid,
                "api_port": n.layout.api_port,
                "p2p_port": n.layout.p2p_port,
            }
            for n in nodes
        ],
    }
    path = root / DEVNET_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class RecordedNode:
    index: int
    home: Path
    pid: int | None
    api_port: int


@dataclass(frozen=True, slots=True)
class DevnetRecord:
    """What ``devnet.json`` says."""

    root: Path
    supervisor_pid: int | None
    started_at: float
    nodes: tuple[RecordedNode, ...]


def read_devnet_file(root: Path) -> DevnetRecord | None:
    """``root/devnet.json``, or None if there is none (or it is unreadable)."""
    try:
        doc = json.loads((root / DEVNET_FILE).read_text())
        nodes = tuple(
            RecordedNode(int(n["index"]), Path(n["home"]), n["pid"], int(n["api_port"])) for n in doc["nodes"]
        )
        return DevnetRecord(root, doc.get("supervisor_pid"), float(doc.get("started_at", 0)), nodes)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def node_pid_alive(pid: int | None, home: Path) -> bool:
    """Whether ``pid`` is still this home's ``depin_p2p run`` process (not a recycled PID)."""
    if pid is None:
        return False
    args = _cmdline(pid)
    named = str(home) in args or str(home.resolve()) in args
    return "depin_p2p" in args and "run" in args and named and _not_zombie(pid)


def supervisor_alive(pid: int | None, root: Path) -> bool:
    """Whether ``pid`` is still a ``devnet up`` process (not a recycled PID)."""
    if pid is None or pid == os.getpid():
        return False
    args = _cmdline(pid)
    return any(a.endswith("devnet") or a == "devnet" or a.endswith("depin-devnet") for a in args) and (
        "up" in args and _not_zombie(pid)
    )


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def stop_pids(pids: list[tuple[int, Path]], timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """SIGTERM each live node PID (checked against its home), wait up to ``timeout``, SIGKILL the rest.

    Returns the PIDs that had to be killed.
    """
    live = [(pid, home) for pid, home in pids if node_pid_alive(pid, home)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(node_pid_alive(p, h) for p, h in live):
        time.sleep(0.1)
    killed = []
    for pid, home in live:
        if node_pid_alive(pid, home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def load_layout(root: Path) -> Layout:
    """The layout of an existing devnet directory (for ``--resume``, ``status``, ``logs``, ``down``).

    Raises:
        ConfigError: ``root`` holds no devnet (no ``genesis.json`` and ``node-N`` homes),
            or a node home's config or key is unreadable.
    """
    root = root.resolve()
    genesis_file = root / "genesis.json"
    homes = sorted(
        (int(p.name.removeprefix("node-")), p)
        for p in (root.iterdir() if root.is_dir() else [])
        if p.is_dir() and p.name.startswith("node-") and p.name.removeprefix("node-").isdigit()
    )
    if not genesis_file.is_file() or not homes or [i for i, _ in homes] != list(range(len(homes))):
        raise ConfigError(f"{root} is not a devnet directory (no genesis.json and node-0/, node-1/, …)")
    nodes = []
    for index, home in homes:
        cfg = load_config(home)
        key = load_key_file(cfg.key_file)
        nodes.append(NodeLayout(index, home, cfg.listen.port, cfg.api_port, key.peer_id, key.address))
    return Layout(root, genesis_file, tuple(nodes))
