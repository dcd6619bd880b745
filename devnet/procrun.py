"""`depin-devnet run MANIFEST`: a scenario on real ``depin-p2p run`` processes.

The manifest's network (keys, devices, genesis from its name and seed, the
genesis time a few seconds from now) is written as node homes, and each node
runs as its own ``python -m depin_p2p run --home DIR`` process. As root,
every node runs in a network namespace of its own on a veth mesh
(:mod:`devnet.netns`): ``disconnect``/``reconnect`` and ``partition``/``heal``
set real links down and up, and each cut's byte counters go in the report.
Without root (or without ``ip``) the nodes run on 127.0.0.1 and a manifest
that cuts links is refused; the link table ``[links]`` (delay, jitter, loss)
is refused either way, since this kernel has no netem.

Perturbations happen at the start of their epoch, by the wall clock:
``kill`` is SIGKILL, ``restart`` and ``join`` start the process on its home,
``pause``/``resume`` are SIGSTOP/SIGCONT, and ``transfer``/``stake``/
``unstake`` are signed with the node's key and posted to its API. A node with
an adversary role runs ``python -m devnet.adversaries.proc`` instead.

At the end every process is stopped, and the record the invariants judge is
read from what the nodes left: each node's LMDB ledger (its certificates,
re-checked from the genesis on a fresh ledger, with the supply audited before
and after each epoch and against the node's own final supply), its JSON log
(when each epoch committed, every vote it signed) and its ``/status`` polled
each epoch (peers, proofs accepted and rejected by code, the evidence it
holds). Processes and namespaces are removed in a ``finally``: on success, on
failure and on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from depin_p2p import wire
from depin_p2p.api import fetch_json, request_json
from depin_p2p.clock import Clock
from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.consensus.value import EpochContent, ValueParams, check_content
from depin_p2p.errors import ConfigError, DepinError
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import Stake, Transfer, Unstake
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.schedule import EpochSchedule
from devnet import netns
from devnet.adversaries.base import AttackLog
from devnet.adversaries.detect import (
    Sightings,
    add_totals,
    attack_row,
    chain_rewards,
    failed_attestations,
    status_totals,
)
from devnet.adversaries.registry import PROCESS_ROLES, new_role
from devnet.genesis import Devnet
from devnet.invariants import NodeRecord, RunRecord, SignedRecord
from devnet.layout import Layout, NodeLayout, write_layout
from devnet.manifest import AdversarySpec, Manifest, Perturbation
from devnet.runner import NodeProcess, stop_all
from devnet.sim import LIVENESS_EPOCHS, SETTLE_EPOCHS, devnet_for, epoch_record, holdings, with_genesis

START_MARGIN_MS = 4_000  # genesis = now + this + PER_NODE_START_MS per node: processes start first
PER_NODE_START_MS = 1_500  # importing the node costs ~1.4 s of CPU per process (py-libp2p 0.9 s)
STARTUP_TIMEOUT_S = 90.0
STATUS_TIMEOUT_S = 3.0
POLL_INTERVAL_S = 1.0
DETECT_INTERVAL_S = 1.0  # how often the honest nodes' /status is read for what caught an adversary
NO_NETEM = (
    "links: this kernel has no netem, so `run` applies no link delay, jitter or loss "
    "(those run only in `depin-devnet sim`)"
)


class Interrupted(Exception):
    """SIGTERM or SIGHUP reached the runner: stop everything, as for Ctrl-C."""


@dataclass
class ProcNode:
    index: int
    layout: NodeLayout
    proc: NodeProcess
    honest: bool
    state: str = "down"  # absent | down | up | paused | disconnected
    offenders: set[str] = field(default_factory=set)
    status: dict[str, Any] | None = None
    crashed: int | None = None  # exit status of an exit the manifest did not ask for


@dataclass
class CutWindow:
    """A period with links down: which, and the bytes every link carried meanwhile."""

    action: str
    from_epoch: int
    from_ms: int  # from the genesis
    links: set[netns.Link]
    start: dict[netns.Link, int]
    to_epoch: int | None = None
    to_ms: int | None = None
    bytes_on_cut_links: int | None = None
    bytes_on_other_links: int | None = None

    def close(self, epoch: int, at_ms: int, now: dict[netns.Link, int]) -> None:
        delta = {link: now.get(link, 0) - self.start.get(link, 0) for link in now}
        self.to_epoch, self.to_ms = epoch, at_ms
        self.bytes_on_cut_links = sum(v for k, v in delta.items() if k in self.links)
        self.bytes_on_other_links = sum(v for k, v in delta.items() if k not in self.links)

    def as_json(self, run: RunRecord) -> dict[str, Any]:
        end = self.to_ms if self.to_ms is not None else run.end_ms
        committed = {
            str(n.node): [e.epoch for e in n.epochs if self.from_ms <= e.committed_at_ms < end]
            for n in run.nodes
        }
        return {
            "action": self.action,
            "from_epoch": self.from_epoch,
            "to_epoch": self.to_epoch,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "links": [list(p) for p in netns.pairs(self.links)],
            "bytes_on_cut_links": self.bytes_on_cut_links,
            "bytes_on_other_links": self.bytes_on_other_links,
            "committed_while_cut": committed,  # node -> epochs it committed meanwhile
        }


class ProcessRun:
    """One manifest on processes under ``root`` (node homes and logs stay there).

    Args:
        manifest: the scenario (``sim_only_reason()`` must be None).
        seed: derives keys, devices and genesis (processes themselves are not deterministic).
        root: an empty or absent directory for the node homes.
        isolate: one network namespace per node (root only); False: 127.0.0.1, no link cuts.
    """

    def __init__(self, manifest: Manifest, seed: int, root: Path, *, isolate: bool) -> None:
        reason = manifest.sim_only_reason()
        if reason is not None:
            raise ConfigError(reason)
        if not isolate and manifest.needs_link_cuts():
            raise ConfigError("this manifest cuts links, which `run` does only in network namespaces")
        self.manifest = manifest
        self.seed = seed
        self.root = root
        self.isolate = isolate
        self.mesh: netns.Mesh | None = None
        self.nodes: list[ProcNode] = []
        self.warnings: list[str] = []
        self.cuts: list[CutWindow] = []
        self.progress: Callable[[str], None] = lambda line: None
        self.partition: tuple[tuple[int, ...], ...] = ()
        self.faults_healed_at: list[int] = []
        self.peer_samples: list[tuple[int, int, int]] = []
        self.proof_verdicts: list[tuple[int, str, int]] = []
        self._last_counts: dict[tuple[int, str], int] = {}
        # (wall ms, adversary node -> the honest nodes' summed totals): read every DETECT_INTERVAL_S
        self.detect_samples: list[tuple[int, dict[int, dict[str, int]]]] = []
        self.genesis_time_ms = 0
        self.end_ms = 0

    # ------------------------------------------------------------ the run

    def run(self) -> RunRecord:
        """Run the scenario to its end on processes; return what it recorded.

        Raises:
            ConfigError: namespaces or homes could not be made.
            RuntimeError: a node did not come up.
            KeyboardInterrupt, Interrupted: Ctrl-C, SIGTERM or SIGHUP (after cleaning up).
        Whatever happens, every process is stopped and every namespace deleted first.
        """
        net = self.manifest.network
        with contextlib.ExitStack() as stack:
            if self.isolate:
                self.mesh = stack.enter_context(netns.Mesh(net.nodes))
            stack.callback(self._stop_processes)  # runs before the mesh goes (last in, first out)
            self._prepare()
            try:
                trio.run(self._main)
            except BaseExceptionGroup as group:  # one failure inside the nursery: raise it plainly
                raise _single(group) from None
        return self._record()

    def _prepare(self) -> None:
        net = self.manifest.network
        self.genesis_time_ms = (
            time.time_ns() // 1_000_000 + START_MARGIN_MS + PER_NODE_START_MS * net.nodes
        )
        self.devnet: Devnet = devnet_for(self.manifest, self.seed, genesis_time_ms=self.genesis_time_ms)
        hosts = [netns.address(i) for i in range(net.nodes)] if self.isolate else None
        try:
            self.layout: Layout = write_layout(self.devnet, self.root, hosts=hosts)
        except (OSError, FileExistsError) as exc:
            raise ConfigError(f"cannot write the node homes under {self.root}: {exc}") from None
        self.schedule = EpochSchedule(self.genesis_time_ms, int(net.epoch_seconds * 1000))
        roles = {a.node: a for a in self.manifest.adversaries}
        late = self.manifest.late_joiners()
        for n in self.layout.nodes:
            prefix = tuple(self.mesh.exec_prefix(n.index)) if self.mesh is not None else ()
            adv = roles.get(n.index)
            program: tuple[str, ...] = ("-m", "depin_p2p", "run")
            if adv is not None:
                assert adv.role in PROCESS_ROLES  # the manifest checked it (sim_only_reason)
                program = ("-m", "devnet.adversaries.proc", "--role", adv.role)
                program += ("--from-epoch", str(adv.from_epoch))
            proc = NodeProcess(n, prefix=prefix, program=program)
            state = "absent" if n.index in late else "down"
            self.nodes.append(ProcNode(n.index, n, proc, honest=adv is None, state=state))

    def _stop_processes(self) -> None:
        """SIGCONT the paused (a stopped process ignores SIGTERM), then stop everyone; Ctrl-C waits."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for n in self.nodes:
                n.proc.signal(signal.SIGCONT)
            stop_all([n.proc for n in self.nodes])
        finally:
            signal.signal(signal.SIGINT, previous)

    async def _main(self) -> None:
        self.clock = Clock()
        epochs = self.manifest.network.epochs
        by_epoch: dict[int, list[Perturbation]] = {}
        for p in self.manifest.perturbations:
            by_epoch.setdefault(p.at_epoch, []).append(p)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals)
            if self.manifest.adversaries:
                nursery.start_soon(self._watch_adversaries)
            first = [n for n in self.nodes if n.state == "down"]
            for n in first:
                n.proc.start(detach=True)  # own session: a Ctrl-C reaches the runner, which stops them
                n.state = "up"
            self.progress(f"starting {len(first)} node processes")
            await self._wait_up(first)
            for epoch in range(1, epochs + 1):
                await self.clock.sleep_until_ms(self.schedule.start_of(epoch))
                for p in by_epoch.get(epoch, []):  # first: a poll of a slow node must not delay a cut
                    await self._perturb(p, epoch)
                await self._sample(epoch - 1)
                self.progress(f"epoch {epoch}/{epochs}{self._summary()}")
            deadline = self.schedule.end_of(epochs + SETTLE_EPOCHS)
            while self.clock.now_ms() < deadline:
                await self._sample(None)
                running = [n for n in self.nodes if n.honest and n.state == "up"]
                if all(_last_epoch(n) >= epochs for n in running):
                    break
                self.progress(f"waiting for epoch {epochs} to commit{self._summary()}")
                await trio.sleep(POLL_INTERVAL_S)
            await self._sample(epochs)
            self.end_ms = self.clock.now_ms()
            if self.mesh is not None:
                counters = self.mesh.counters()
                for window in self.cuts:
                    if window.to_epoch is None:
                        window.close(epochs + 1, self.end_ms - self.genesis_time_ms, counters)
            nursery.cancel_scope.cancel()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                raise Interrupted(signal.Signals(signum).name)

    async def _watch_adversaries(self) -> None:
        """Every DETECT_INTERVAL_S, what the running honest nodes' /status show against each adversary."""
        keys = {a.node: self.devnet.node_keys[a.node] for a in self.manifest.adversaries}
        while True:
            await trio.sleep(DETECT_INTERVAL_S)
            honest = [n for n in self.nodes if n.honest and n.state in ("up", "disconnected")]
            at_ms = self.clock.now_ms()
            docs: dict[int, dict[str, Any]] = {}
            async with trio.open_nursery() as nursery:
                for n in honest:
                    nursery.start_soon(self._status_into, n, docs)
            per = {
                i: add_totals([status_totals(d, key.public_key.hex(), key.peer_id) for d in docs.values()])
                for i, key in keys.items()
            }
            self.detect_samples.append((at_ms, per))

    async def _status_into(self, node: ProcNode, docs: dict[int, dict[str, Any]]) -> None:
        st = await self._status(node)
        if st is not None:
            docs[node.index] = st

    def _summary(self) -> str:
        parts = [f"{n.index}:{n.state if n.state != 'up' else _last_epoch(n)}" for n in self.nodes]
        return f" (node:last epoch {' '.join(parts)})"

    async def _wait_up(self, nodes: list[ProcNode]) -> None:
        pending = list(nodes)
        with trio.move_on_after(STARTUP_TIMEOUT_S):
            while pending:
                for n in list(pending):
                    if n.proc.exited is not None:
                        raise RuntimeError(
                            f"node {n.index} exited with status {n.proc.exited}; its last output:\n"
                            + n.proc.tail()
                        )
                    if await self._status(n) is not None:
                        pending.remove(n)
                if pending:
                    await trio.sleep(0.3)
        if pending:
            slow = [n.index for n in pending]
            raise RuntimeError(f"nodes {slow} did not answer within {STARTUP_TIMEOUT_S:.0f} s")

    # ------------------------------------------------------------ the API

    async def _connect(self, node: ProcNode, port: int) -> trio.abc.Stream:
        assert self.mesh is not None
        mesh = self.mesh
        sock = trio.socket.from_stdlib_socket(await trio.to_thread.run_sync(mesh.socket, node.index))
        try:
            await sock.connect(("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    def _connector(self, node: ProcNode) -> Callable[[int], Any] | None:
        if self.mesh is None:
            return None
        return lambda port: self._connect(node, port)

    async def _status(self, node: ProcNode) -> dict[str, Any] | None:
        try:
            st = await fetch_json(
                node.layout.api_port, timeout=STATUS_TIMEOUT_S, connect=self._connector(node)
            )
        except (OSError, ValueError, TypeError):
            return None
        node.status = st
        consensus = st.get("consensus", {})
        node.offenders |= set(consensus.get("evidence_offenders", {})) | set(
            consensus.get("conflicting_signers", {})
        )
        return st

    async def _sample(self, epoch: int | None) -> None:
        """Poll every running node's /status; note crashes, peers and (per epoch) proof verdicts."""
        for n in self.nodes:
            if n.state in ("up", "paused", "disconnected") and n.proc.exited is not None:
                n.crashed = n.proc.exited
                self.warnings.append(
                    f"node {n.index} exited with status {n.crashed} (no kill asked for); kept down"
                )
                n.state = "down"
        live = [n for n in self.nodes if n.state in ("up", "disconnected")]
        async with trio.open_nursery() as nursery:
            for n in live:
                nursery.start_soon(self._status, n)
        if epoch is None:
            return
        now = self.clock.now_ms() - self.genesis_time_ms
        per_code: dict[str, int] = {}
        for n in live:
            st = n.status or {}
            self.peer_samples.append((now, n.index, len(st.get("peers", []))))
            if not n.honest:
                continue
            gossip = st.get("gossip_counters", {})
            counts = {"accepted": int(gossip.get("items_accepted", 0))}
            counts |= {str(k): int(v) for k, v in gossip.get("reject_codes", {}).items()}
            for code, value in counts.items():
                last = self._last_counts.get((n.index, code), 0)
                delta = value - last if value >= last else value  # a restarted node counts from 0
                if delta > 0:
                    per_code[code] = per_code.get(code, 0) + delta
                self._last_counts[(n.index, code)] = value
        self.proof_verdicts += [(epoch, code, k) for code, k in sorted(per_code.items())]

    # ------------------------------------------------------------ perturbations

    async def _perturb(self, p: Perturbation, epoch: int) -> None:
        now = self.clock.now_ms() - self.genesis_time_ms
        node = self.nodes[p.node] if p.node is not None else None
        if p.action == "partition":
            self.partition = p.groups
            self._apply_links(p.action, epoch)
        elif p.action == "heal":
            self.partition = ()
            self._apply_links(p.action, epoch)
            self.faults_healed_at.append(now)
        elif node is None:
            raise AssertionError(f"perturbation {p.index} names no node")  # the manifest checked it
        elif p.action == "kill":
            node.proc.signal(signal.SIGKILL)
            await trio.to_thread.run_sync(_reap, node.proc)
            node.state = "down"
        elif p.action in ("restart", "join"):
            node.proc.start(detach=True)
            node.state = "up"
            self.faults_healed_at.append(now)
        elif p.action == "pause":
            node.proc.signal(signal.SIGSTOP)
            node.state = "paused"
        elif p.action == "resume":
            node.proc.signal(signal.SIGCONT)
            node.state = "up"
            self.faults_healed_at.append(now)
        elif p.action in ("disconnect", "reconnect"):
            node.state = "disconnected" if p.action == "disconnect" else "up"
            self._apply_links(p.action, epoch)
            if p.action == "reconnect":
                self.faults_healed_at.append(now)
        else:
            await self._submit_tx(node, p)

    def _apply_links(self, action: str, epoch: int) -> None:
        mesh = self.mesh
        assert mesh is not None  # a manifest that cuts links runs only in namespaces
        count = self.manifest.network.nodes
        cut = netns.links_across(self.partition, count) if self.partition else set()
        for n in self.nodes:
            if n.state == "disconnected":
                cut |= netns.links_of(n.index, count)
        before = mesh.counters()
        at_ms = self.clock.now_ms() - self.genesis_time_ms
        for window in self.cuts:
            if window.to_epoch is None:
                window.close(epoch, at_ms, before)
        mesh.apply_cuts(cut)
        if cut:
            at_ms = self.clock.now_ms() - self.genesis_time_ms
            self.cuts.append(CutWindow(action, epoch, at_ms, cut, mesh.counters()))
        self.progress(f"epoch {epoch}: {action}, {len(cut)} of {len(mesh.links())} links down")

    async def _submit_tx(self, node: ProcNode, p: Perturbation) -> None:
        key = self.devnet.node_keys[node.index]
        connect = self._connector(node)
        port = node.layout.api_port
        try:
            status, account = await request_json(
                port, "GET", f"/account/{key.public_key.hex()}", timeout=STATUS_TIMEOUT_S, connect=connect
            )
            nonce = int(account.get("next_nonce", account.get("nonce", 0)))
            tx: object
            if p.action == "transfer":
                assert p.to is not None
                tx = Transfer(nonce, self.devnet.node_keys[p.to].public_key, p.amount_micro)
            elif p.action == "stake":
                tx = Stake(nonce, p.amount_micro)
            else:
                tx = Unstake(nonce, p.amount_micro)
            env = wire.seal(tx, key, self.devnet.network_id)
            status, answer = await request_json(
                port, "POST", "/tx", wire.encode(env), timeout=STATUS_TIMEOUT_S, connect=connect
            )
        except (OSError, ValueError, TypeError) as exc:
            self.warnings.append(f"perturbation {p.index} ({p.action} on node {node.index}): {exc}")
            return
        if status != 202:
            self.warnings.append(
                f"perturbation {p.index} ({p.action} on node {node.index}): the node answered {status} "
                f"{answer.get('error')} {answer.get('detail', '')}"
            )

    # ------------------------------------------------------------ records

    def _record(self) -> RunRecord:
        genesis_text = json.dumps(self.devnet.genesis)
        genesis = parse_genesis(genesis_text)
        params = ValueParams(network_id=self.devnet.network_id, emission_per_epoch=genesis.emission_per_epoch)
        replay = _Replays(genesis_text, params)
        validators = {v["address"] for v in self.devnet.genesis["validators"]}  # type: ignore[attr-defined]
        nodes = []
        honest_chains: dict[int, tuple[list[bytes], dict[int, int]]] = {}
        for n in self.nodes:
            chain, final_supply = _read_chain(n.layout.home / "data")
            if len(chain) > self.manifest.network.epochs:
                # A node committed past the plan while the others were stopping: the run is the
                # planned epochs, as in `sim`; its ledger's supply is then of a later epoch.
                chain, final_supply = chain[: self.manifest.network.epochs], None
            committed, signed = _read_log(n.layout.home / "node.log", self.genesis_time_ms)
            if n.honest:
                honest_chains[n.index] = (chain, committed)
            audits = replay.audit(chain)
            epochs = []
            for raw, (ok, before, after, burned) in zip(chain, audits, strict=True):
                cert_epoch = wire.decode_as(raw, Certificate).epoch
                at = committed.get(cert_epoch, self.end_ms - self.genesis_time_ms)
                epochs.append(epoch_record(raw, at, before, after, burned, rechecked=ok))
            if epochs and final_supply is not None and epochs[-1].supply_after != final_supply:
                # The node's own ledger disagrees with the audited replay: let `supply` say so.
                last = epochs[-1]
                epochs[-1] = epoch_record(
                    chain[-1], last.committed_at_ms, last.supply_before, final_supply, last.slashed,
                    rechecked=last.rechecked,
                )
            key = self.devnet.node_keys[n.index]
            nodes.append(
                NodeRecord(
                    node=n.index,
                    honest=n.honest,
                    validator_address=key.public_key.hex() if key.address in validators else None,
                    running_at_end=n.state == "up",  # paused or cut off at the end: no commit is owed
                    epochs=tuple(epochs),
                    signed=tuple(signed),
                    evidence_offenders=tuple(sorted(n.offenders)),
                )
            )
        power = {address.hex(): stake for address, stake in genesis.validators}
        return RunRecord(
            genesis_supply=replay.genesis_supply,
            epoch_length_ms=self.schedule.epoch_length_ms,
            end_ms=self.end_ms - self.genesis_time_ms,
            power=power,
            nodes=tuple(nodes),
            faults_healed_at_ms=tuple(self.faults_healed_at),
            liveness_epochs=LIVENESS_EPOCHS,
            peer_samples=tuple(self.peer_samples),
            proof_verdicts=tuple(self.proof_verdicts),
            attacks=tuple(self._attack_row(a, honest_chains) for a in self.manifest.adversaries),
        )

    def _attack_row(
        self, adv: AdversarySpec, honest_chains: dict[int, tuple[list[bytes], dict[int, int]]]
    ) -> dict[str, Any]:
        """The adversary's row, as the simulator's :class:`~devnet.adversaries.detect.Detector` makes
        it, from what the processes left: the adversary's log (what it did, when it began), the
        honest nodes' /status samples (reject and ignore codes, conflicting votes, evidence), their
        logs (bans of its peer) and ledgers (failed attestations, its slash, the rewards)."""
        role = new_role(adv.role)
        key = self.devnet.node_keys[adv.node]
        attack = AttackLog()
        for doc in _log_events(self.nodes[adv.node].layout.home / "node.log", "adversary.attack.sent"):
            attack.note(str(doc["what"]), int(doc["at_ms"]) - self.genesis_time_ms, int(doc["n"]))
        sightings = Sightings()
        for at_ms, per in self.detect_samples:
            sightings.sample(at_ms - self.genesis_time_ms, per.get(adv.node, {}), attack.first_ms)
        banned_at: dict[int, int] = {}
        for i in honest_chains:
            for doc in _log_events(self.nodes[i].layout.home / "node.log", "gossip.peer.banned"):
                if doc.get("peer") == key.peer_id and "at_ms" in doc:
                    banned_at.setdefault(i, int(doc["at_ms"]) - self.genesis_time_ms)
        if banned_at:
            sightings.note("peer_banned", len(banned_at), min(banned_at.values()))
        # Failed attestations on its devices, by outcome, when the first honest node committed them.
        theirs = {key.public_key} | {d.key.public_key for d in self.devnet.devices_of(adv.node)}
        attested: dict[bytes, tuple[str, int]] = {}
        for chain, committed in honest_chains.values():
            for cid, (epoch, outcome) in failed_attestations(chain, theirs).items():
                at = committed.get(epoch, self.end_ms - self.genesis_time_ms)
                code = f"attested_{outcome.name.lower()}"
                attested[cid] = (code, min(at, attested.get(cid, (code, at))[1]))
        for code in sorted({c for c, _ in attested.values()}):
            times = [t for c, t in attested.values() if c == code]
            sightings.note(code, len(times), min(times))
        ref = max(honest_chains, key=lambda i: len(honest_chains[i][0]), default=None)
        chain = honest_chains[ref][0] if ref is not None else []
        rewards = chain_rewards(chain, adv.from_epoch)
        honest_keys = [self.devnet.node_keys[i].public_key for i in honest_chains]
        slashed = 0
        stake0 = dict(parse_genesis(json.dumps(self.devnet.genesis)).validators)
        if ref is not None and key.public_key in stake0:
            now_stake = _stake_of(self.nodes[ref].layout.home / "data", key.public_key)
            if now_stake is not None:
                slashed = max(0, stake0[key.public_key] - now_stake)
        return attack_row(
            role, adv.node, adv.from_epoch, attack, sightings,
            banned_by=len(banned_at), slashed_micro=slashed,
            reward_micro=rewards.get(key.public_key, 0),
            honest_rewards=[rewards.get(k, 0) for k in honest_keys],
        )

    def run_section(self, run: RunRecord) -> dict[str, Any]:
        """What only `run` knows, for the report's ``run`` key: isolation, cuts, warnings."""
        return {
            "isolation": "netns" if self.isolate else "loopback",
            "addresses": {str(n.index): n.layout.host for n in self.nodes},
            "namespaces": [self.mesh.namespace(n.index) for n in self.nodes] if self.mesh else [],
            "cuts": [w.as_json(run) for w in self.cuts],
            "warnings": list(self.warnings),
            "crashed": {str(n.index): n.crashed for n in self.nodes if n.crashed is not None},
        }


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf of ``group`` that is not a cancellation (the group itself if none)."""
    for item in group.exceptions:
        leaf = _single(item) if isinstance(item, BaseExceptionGroup) else item
        if not isinstance(leaf, trio.Cancelled | BaseExceptionGroup):
            return leaf
    return group


def _last_epoch(node: ProcNode) -> int:
    return int((node.status or {}).get("last_epoch", 0))


def _reap(proc: NodeProcess) -> None:
    if proc.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.process.wait(timeout=10)


def _read_chain(data_dir: Path) -> tuple[list[bytes], int | None]:
    """A node's certificates from epoch 1 on, and its ledger's total supply (None: no ledger)."""
    try:
        with LedgerStore.open(data_dir, readonly=True) as store, store.view() as view:
            chain = []
            for epoch in range(1, view.last_epoch() + 1):
                raw = view.get_certificate(epoch)
                if raw is None:
                    break
                chain.append(bytes(raw))
            return chain, view.get_meta().total_supply
    except DepinError:
        return [], None


def _stake_of(data_dir: Path, validator: bytes) -> int | None:
    """``validator``'s bonded and unbonding stake in a node's ledger (None: no ledger)."""
    try:
        with LedgerStore.open(data_dir, readonly=True) as store, store.view() as view:
            v = view.get_validator(validator)
            return 0 if v is None else v.stake + v.unbonding_total
    except DepinError:
        return None


def _log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The lines of a node's JSON log with ``event``, each with ``at_ms`` (wall ms) added."""
    out: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    needle = f'"{event}"'
    for line in lines:
        if needle not in line:
            continue
        try:
            doc = json.loads(line)
            if doc.get("event") != event:
                continue
            doc.setdefault("at_ms", int(datetime.fromisoformat(doc["timestamp"]).timestamp() * 1000))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a SIGKILL
        out.append(doc)
    return out


def _read_log(path: Path, genesis_time_ms: int) -> tuple[dict[int, int], list[SignedRecord]]:
    """From a node's JSON log: when it committed each epoch (ms from the genesis), what it signed."""
    committed: dict[int, int] = {}
    signed: list[SignedRecord] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return committed, signed
    for line in lines:
        if '"consensus.' not in line:
            continue
        try:
            doc = json.loads(line)
            event = doc.get("event")
            if event == "consensus.epoch.committed":
                at = int(datetime.fromisoformat(doc["timestamp"]).timestamp() * 1000) - genesis_time_ms
                committed.setdefault(int(doc["epoch"]), at)
            elif event == "consensus.vote.signed":
                kind, epoch, rnd = str(doc["kind"]), int(doc["epoch"]), int(doc["round"])
                signed.append(SignedRecord(kind, epoch, rnd, str(doc["body"])))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a SIGKILL
    return committed, signed


class _Replays:
    """Re-checks chains from the genesis on a fresh ledger, auditing the supply around each epoch;
    a chain that is a prefix of one already replayed reuses its audit."""

    def __init__(self, genesis_text: str, params: ValueParams) -> None:
        self._genesis_text = genesis_text
        self._params = params
        self._done: list[tuple[list[bytes], list[tuple[bool, int, int, int]]]] = []
        self.genesis_supply = holdings(with_genesis(MemoryLedger(), genesis_text))

    def audit(self, chain: list[bytes]) -> list[tuple[bool, int, int, int]]:
        """Per epoch of ``chain``: (re-checked, supply before, supply after, burned)."""
        for known, audits in self._done:
            if known[: len(chain)] == chain:
                return audits[: len(chain)]
        ledger = with_genesis(MemoryLedger(), self._genesis_text)
        out: list[tuple[bool, int, int, int]] = []
        for raw in chain:
            before = holdings(ledger)
            cert = wire.decode_as(raw, Certificate)
            content = wire.decode_as(cert.candidate.value, EpochContent)
            try:
                changes = ledger.read(lambda v, c=content: check_content(v, c, self._params))  # type: ignore[misc]
            except DepinError:
                out += [(False, before, before, 0)] * (len(chain) - len(out))
                break
            ledger.commit(changes, raw, certificate_hash(cert))
            out.append((True, before, holdings(ledger), changes.burned))
        self._done.append((chain, out))
        return out
