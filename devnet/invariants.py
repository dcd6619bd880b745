"""The invariants a scenario is judged by, as pure functions over what a run recorded.  [pure]

A run (in the simulator or on processes) collects one :class:`RunRecord`:
per node, every epoch it committed (certificate hash, round, supply before
and after, emission, slashed stake, rewards, the proofs the value rewards,
whether the node's own re-check accepted the value), every message an
honest validator signed, the evidence honest nodes saw, and the faults the
scenario injected. Each check returns a :class:`Verdict`; a report maps
invariant names to verdicts and the CLI exits 1 when any fails.

Invariants:

* ``agreement``: honest nodes hold one certificate per epoch.
* ``validity``: every value an honest node committed re-checked on that node.
* ``liveness``: after the last fault heals, every honest running node commits
  again within ``liveness_epochs`` epochs (when the run lasted that long).
* ``supply``: per node and epoch, supply after = supply before + emission -
  slashed, chained from the genesis supply.
* ``accountability``: a fork (agreement broken) convicts validators holding
  more than a third of the power (f+1), by what honest nodes hold: evidence,
  or two validly signed bodies for one step.
* ``no_double_sign``: no honest validator signed two different bodies for one
  (type, epoch, round).
* ``rewards_for_accepted_proofs``: no committed value rewards a proof that an
  honest node rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class EpochRecord:
    epoch: int
    cert_hash: str
    round: int
    committed_at_ms: int
    supply_before: int
    supply_after: int
    emission: int
    slashed: int
    rewards: tuple[tuple[str, int], ...] = ()  # (owner address, micro-units)
    rewarded_proofs: tuple[str, ...] = ()  # ids (hex) of the proofs the value pays for
    rechecked: bool = True  # the node's own check of the value accepted it


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """One message a validator signed: its position and the id of its body."""

    kind: str  # proposal | prevote | precommit
    epoch: int
    round: int
    body_id: str


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node: int
    honest: bool
    validator_address: str | None  # None: not a validator
    running_at_end: bool  # up and reachable at the end (not killed, paused or disconnected)
    epochs: tuple[EpochRecord, ...] = ()
    signed: tuple[SignedRecord, ...] = ()
    evidence_offenders: tuple[str, ...] = ()  # validator addresses its evidence convicted


@dataclass(frozen=True, slots=True)
class RunRecord:
    genesis_supply: int
    epoch_length_ms: int
    end_ms: int
    power: Mapping[str, int]  # validator address -> voting power (genesis)
    nodes: tuple[NodeRecord, ...]
    faults_healed_at_ms: tuple[int, ...] = ()  # when each injected fault ended (heal, restart, resume)
    rejected_proofs: frozenset[str] = field(default_factory=frozenset)  # rejected by an honest node
    liveness_epochs: int = 3
    # Series for the report (not judged): (t_ms, node, connected peers) samples, and per epoch
    # the proofs honest nodes' gossip accepted or rejected by code: (epoch, code or "accepted", count).
    peer_samples: tuple[tuple[int, int, int], ...] = ()
    proof_verdicts: tuple[tuple[int, str, int], ...] = ()
    # Per adversary, what it did and what caught it (devnet.adversaries.detect.Detector.rows).
    attacks: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "detail": self.detail}


def _honest(run: RunRecord) -> list[NodeRecord]:
    return [n for n in run.nodes if n.honest]


def check_agreement(run: RunRecord) -> Verdict:
    by_epoch: dict[int, dict[str, list[int]]] = {}
    for n in _honest(run):
        for e in n.epochs:
            by_epoch.setdefault(e.epoch, {}).setdefault(e.cert_hash, []).append(n.node)
    forks = {epoch: hashes for epoch, hashes in by_epoch.items() if len(hashes) > 1}
    if forks:
        epoch = min(forks)
        sides = "; ".join(f"{h[:16]} on nodes {nodes}" for h, nodes in sorted(forks[epoch].items()))
        return Verdict(False, f"{len(forks)} epochs with two certificates, first epoch {epoch}: {sides}")
    return Verdict(True, f"{len(by_epoch)} epochs, one certificate each")


def check_validity(run: RunRecord) -> Verdict:
    bad = [(n.node, e.epoch) for n in _honest(run) for e in n.epochs if not e.rechecked]
    if bad:
        return Verdict(False, f"values that did not re-check (node, epoch): {bad[:5]}")
    return Verdict(True, "every committed value re-checked")


def check_liveness(run: RunRecord) -> Verdict:
    since = max(run.faults_healed_at_ms, default=None)
    window = run.liveness_epochs * run.epoch_length_ms
    if since is None:
        stalled = [n.node for n in _honest(run) if n.running_at_end and not n.epochs]
        if stalled:
            return Verdict(False, f"nodes that never committed: {stalled}")
        return Verdict(True, "every honest running node committed")
    if run.end_ms < since + window:
        return Verdict(True, f"run ended {run.end_ms - since} ms after the last heal: too soon to judge")
    stalled = [
        n.node
        for n in _honest(run)
        if n.running_at_end and not any(since < e.committed_at_ms <= since + window for e in n.epochs)
    ]
    if stalled:
        return Verdict(
            False, f"no commit within {run.liveness_epochs} epochs of the last heal on nodes {stalled}"
        )
    return Verdict(
        True, f"every honest running node committed within {run.liveness_epochs} epochs of the heal"
    )


def check_supply(run: RunRecord) -> Verdict:
    for n in _honest(run):
        expected = run.genesis_supply
        for e in sorted(n.epochs, key=lambda e: e.epoch):
            if e.supply_before != expected:
                return Verdict(
                    False, f"node {n.node} epoch {e.epoch}: supply before {e.supply_before} != {expected}"
                )
            if e.supply_after != e.supply_before + e.emission - e.slashed:
                return Verdict(
                    False,
                    f"node {n.node} epoch {e.epoch}: {e.supply_before} + {e.emission} - {e.slashed} "
                    f"!= {e.supply_after}",
                )
            expected = e.supply_after
    return Verdict(True, "supply = genesis + emission - slashed on every node and epoch")


def _double_signers(nodes: list[NodeRecord]) -> dict[str, list[tuple[str, int, int]]]:
    out: dict[str, list[tuple[str, int, int]]] = {}
    for n in nodes:
        if n.validator_address is None:
            continue
        seen: dict[tuple[str, int, int], str] = {}
        for s in n.signed:
            pos = (s.kind, s.epoch, s.round)
            if seen.setdefault(pos, s.body_id) != s.body_id:
                out.setdefault(n.validator_address, []).append(pos)
    return out


def check_no_double_sign(run: RunRecord) -> Verdict:
    doubles = _double_signers(_honest(run))
    if doubles:
        return Verdict(False, f"honest validators signed twice: {sorted(doubles.items())[:3]}")
    signed = sum(len(n.signed) for n in _honest(run))
    return Verdict(True, f"{signed} messages signed by honest nodes, none twice")


def check_accountability(run: RunRecord) -> Verdict:
    if check_agreement(run).ok:
        return Verdict(True, "no fork")
    # Convicted by what honest nodes hold: duplicate-vote evidence, or two validly signed bodies
    # for one step that they received (the runner fills both into evidence_offenders).
    convicted = {a for n in _honest(run) for a in n.evidence_offenders}
    total = sum(run.power.values())
    power = sum(run.power.get(a, 0) for a in convicted)
    if 3 * power > total:
        return Verdict(True, f"fork; {len(convicted)} validators convicted with {power}/{total} of the power")
    return Verdict(False, f"fork with only {power}/{total} of the power convicted: {sorted(convicted)}")


def check_rewards_for_accepted_proofs(run: RunRecord) -> Verdict:
    paid = {p for n in _honest(run) for e in n.epochs for p in e.rewarded_proofs}
    wrong = sorted(paid & run.rejected_proofs)
    if wrong:
        return Verdict(False, f"{len(wrong)} rewarded proofs were rejected by honest nodes: {wrong[:3]}")
    return Verdict(True, f"{len(paid)} rewarded proofs, none rejected by an honest node")


INVARIANTS: dict[str, Callable[[RunRecord], Verdict]] = {
    "agreement": check_agreement,
    "validity": check_validity,
    "liveness": check_liveness,
    "supply": check_supply,
    "accountability": check_accountability,
    "no_double_sign": check_no_double_sign,
    "rewards_for_accepted_proofs": check_rewards_for_accepted_proofs,
}


def check_all(run: RunRecord) -> dict[str, Verdict]:
    """Every invariant's verdict, by name, in a fixed order."""
    return {name: check(run) for name, check in INVARIANTS.items()}
