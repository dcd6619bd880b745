"""Epoch content: what a proposer builds and what every validator re-checks. [pure]

Consensus agrees on opaque bytes; for this node those bytes are the canonical
encoding of :class:`EpochContent`: the proofs accepted this epoch (beacons,
witness reports, compute attestations), the ledger effects they and the
transactions cause (:class:`~depin_p2p.ledger.state.EpochValue`), the
evidence of misbehaviour, and the resulting state root.

:func:`check_content` is the validator's side: every included proof is
re-validated from signed fields and the ledger only (never a local clock),
rewards and slashes are recomputed and must match exactly, and the state root
is recomputed. Anything invalid raises ``Reject``, and the validator prevotes
nil. :func:`build_content` is the proposer's side: it keeps only what passes
those same checks, so an honest proposal always checks.

Rules beyond the individual proof checks:

* at most one beacon per device per epoch counts [beacon_limit], and a beacon
  is included once [duplicate_beacon];
* a report must name an included beacon [unknown_beacon]; a witness reports
  a beacon once [duplicate];
* one attestation per (witness, provider) [duplicate_attestation], at the
  challenge size the provider's registered capacity sets [wrong_size];
* evidence is of an epoch the ledger can still punish
  (:func:`~depin_p2p.ledger.state.validate_evidence_age`: at most
  ``EVIDENCE_MAX_AGE_EPOCHS`` old) [evidence_too_old, evidence_too_early],
  has not slashed before [evidence_reused], and one slash per validator
  and per evidence per epoch [duplicate_evidence];
* emission is minted only when earned: when the epoch has no reward shares
  at all, the declared emission is 0 [wrong_emission];
* each list of proofs is in canonical order, strictly increasing by the
  content id of the encoded envelope [not_canonical], so a proposer cannot
  steer the next epoch's hash-seeded draws by reordering;
* at most ``MAX_REPORTS_PER_BEACON`` reports per beacon [too_many_reports]
  and at most ``MAX_CONTENT_BYTES`` encoded [too_large], so an honest
  proposal always fits one message (the builder keeps the reports with the
  lowest :func:`report_ticket`, the rewards lottery's own ticket, so the
  candidates it keeps are those the lottery would reward first, and drops
  what does not fit, in canonical order);
* the rewards equal :func:`~depin_p2p.witness.rewards.compute_epoch_rewards`
  over the included proofs [wrong_rewards]; slashes equal those of the
  included evidence [wrong_slashes]; the root equals the recomputed one
  [wrong_state_root].
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

from depin_p2p import wire
from depin_p2p.consensus.state import (
    DuplicateVoteEvidence,
    Precommit,
    Prevote,
    ValidatorSet,
    verify_evidence,
)
from depin_p2p.errors import CodecError, Ignore, Reject, ValidationError
from depin_p2p.ledger.state import (
    MAX_TXS,
    EpochValue,
    LedgerView,
    Reward,
    Slash,
    StateChanges,
    apply_epoch,
    validate_evidence_age,
    validator_set,
)
from depin_p2p.witness.assign import MIN_WITNESS_STAKE, ComputeAssignment, assign_compute_witnesses
from depin_p2p.witness.compute import Attestation, challenge_size, validate_attestation
from depin_p2p.witness.radio import (
    Beacon,
    CheckedBeacon,
    WitnessReport,
    validate_beacon,
    validate_witness_report,
)
from depin_p2p.witness.rewards import (
    DEFAULT_PARAMS as DEFAULT_REWARD_PARAMS,
)
from depin_p2p.witness.rewards import (
    BeaconProof,
    RewardParams,
    collect_compute_proofs,
    compute_epoch_rewards,
    lottery_ticket,
)
from depin_p2p.witness.verdicts import ReportVerdicts

MAX_BEACONS = 2_048
MAX_REPORTS = 16_384
MAX_ATTESTATIONS = 2_048
MAX_EVIDENCE = 64
MAX_REPORTS_PER_BEACON = 32
# Under consensus' 900 000-byte candidate cap, itself under the 1 MiB message cap.
MAX_CONTENT_BYTES = 880_000
_REWARD_BYTES = 48  # one encoded Reward(account, amount), rounded up
_SLASH_BYTES = 96  # one encoded Slash plus the evidence's array framing
_ITEM_OVERHEAD = 8 + _REWARD_BYTES  # array framing of the item + the reward entry it may add
_FRAMING = 1_024  # EpochContent's own header, root and list headers

EvidenceBytes = Annotated[bytes, wire.MaxLen(4_096)]


@wire.message(type_id=100)
@dataclass(frozen=True, slots=True)
class EpochContent:
    """The value one epoch's consensus decides (encoded, it is ``Candidate.value``)."""

    ledger: EpochValue
    beacons: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(MAX_BEACONS)]
    reports: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(MAX_REPORTS)]
    attestations: Annotated[tuple[wire.Envelope, ...], wire.MaxLen(MAX_ATTESTATIONS)]
    evidence: Annotated[tuple[EvidenceBytes, ...], wire.MaxLen(MAX_EVIDENCE)]
    state_root: wire.Bytes32


@dataclass(frozen=True, slots=True)
class JudgedEvidence:
    """What a piece of evidence proves: the slash it earns and the epoch of the misbehaviour."""

    slash: Slash
    epoch: int


# Turns one encoded piece of evidence into what it proves, or raises Reject; it gets the
# ledger view (the validator set) and the network id. The age rule is applied here, on
# the epoch it reports, not left to each judge.
EvidenceJudge = Callable[[bytes, LedgerView, str], JudgedEvidence]

SLASH_BASIS_POINTS = 1_000  # an equivocating validator loses 10 % of its bonded and unbonding stake


def judge_duplicate_votes(evidence: bytes, view: LedgerView, network_id: str) -> JudgedEvidence:
    """The node's judge: two conflicting signed votes of one validator in one (epoch, round, step).

    Raises:
        Reject: ``malformed``; ``no_validators``; the codes of
            :func:`~depin_p2p.consensus.state.verify_evidence` (``not_canonical``,
            ``different_signers``, ``unknown_validator``, ``not_conflicting``, ``bad_signature``).
    """
    try:
        ev = wire.decode_as(evidence, DuplicateVoteEvidence)
        vote = wire.decode(ev.vote_a.body)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    members = validator_set(view)
    if not members:
        raise Reject("no_validators")
    offender = verify_evidence(ev, ValidatorSet.of(members), network_id)
    if not isinstance(vote, Prevote | Precommit):
        raise Reject("malformed", "evidence holds no vote")
    slash = Slash(offender, SLASH_BASIS_POINTS, wire.content_id(evidence))
    return JudgedEvidence(slash, vote.epoch)


@dataclass(frozen=True, slots=True)
class ValueParams:
    """Network parameters both sides use (from the genesis)."""

    network_id: str
    emission_per_epoch: int
    rewards: RewardParams = DEFAULT_REWARD_PARAMS
    max_content_bytes: int = MAX_CONTENT_BYTES
    max_reports_per_beacon: int = MAX_REPORTS_PER_BEACON
    judge_evidence: EvidenceJudge = field(default=judge_duplicate_votes, compare=False)
    # The node's SignatureCache.verify: a proof the pool verified is not verified again here.
    verify: wire.Verifier = field(default=wire.verify_signature, compare=False)
    # The node's memory of good report verdicts (its pool's): a report the pool judged is not judged again.
    reports: ReportVerdicts | None = field(default=None, compare=False)
    # Good checks shared by several nodes (the simulator's): a value checked on one state is not
    # checked again on the same state. None: every check runs (a real node checks a value once).
    checked: CheckedValues | None = field(default=None, compare=False)


def _assignments(view: LedgerView, epoch: int, prev_cert_hash: bytes) -> dict[bytes, ComputeAssignment]:
    assigned = assign_compute_witnesses(
        prev_cert_hash=prev_cert_hash,
        epoch=epoch,
        devices=tuple(view.iter_devices()),
        validators=validator_set(view),
    )
    return {a.provider: a for a in assigned}


def envelope_id(env: wire.Envelope) -> bytes:
    """The canonical sort key of an included envelope."""
    return wire.content_id(wire.encode(env))


def report_ticket(prev_cert_hash: bytes, beacon: Beacon, witness: bytes) -> bytes:
    """Which reports of a crowded beacon are kept (lowest first): the rewards lottery's ticket.

    The same draw decides inclusion and reward, over inputs fixed before the
    beacon is signed (never the beacon id, which its beaconer could grind to
    steer which witnesses make the cut).
    """
    return lottery_ticket(prev_cert_hash, beacon.epoch, beacon.device, witness)


def _check_order(name: str, keys: Sequence[bytes]) -> None:
    if any(a >= b for a, b in itertools.pairwise(keys)):
        raise Reject("not_canonical", f"{name} are not in strictly increasing content-id order")


def _decode_report(env: wire.Envelope) -> WitnessReport:
    try:
        return wire.decode_as(env.body, WitnessReport)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None


def _decode_attestation(env: wire.Envelope) -> Attestation:
    try:
        return wire.decode_as(env.body, Attestation)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None


@dataclass(slots=True)
class _Accepted:
    """Proofs accepted so far while checking or building one epoch's content."""

    beacons: dict[bytes, CheckedBeacon] = field(default_factory=dict)
    beacon_order: list[wire.Envelope] = field(default_factory=list)
    beaconers: set[bytes] = field(default_factory=set)
    witnesses: dict[bytes, list[bytes]] = field(default_factory=dict)
    reports: list[wire.Envelope] = field(default_factory=list)
    attested: set[tuple[bytes, bytes]] = field(default_factory=set)
    attestations: list[Attestation] = field(default_factory=list)
    attestation_envs: list[wire.Envelope] = field(default_factory=list)
    slashes: list[Slash] = field(default_factory=list)
    evidence: list[bytes] = field(default_factory=list)


def _accept_beacon(acc: _Accepted, env: wire.Envelope, view: LedgerView, epoch: int, p: ValueParams) -> None:
    checked = validate_beacon(env, registry=view, network_id=p.network_id, epoch=epoch, verify=p.verify)
    if checked.beacon_id in acc.beacons:
        raise Reject("duplicate_beacon")
    if checked.beacon.device in acc.beaconers:
        raise Reject("beacon_limit", "one beacon per device per epoch")
    acc.beacons[checked.beacon_id] = checked
    acc.beaconers.add(checked.beacon.device)
    acc.witnesses[checked.beacon_id] = []
    acc.beacon_order.append(env)


def _accept_report(acc: _Accepted, env: wire.Envelope, view: LedgerView, p: ValueParams) -> None:
    memo = p.reports
    report = memo.decoded(env) if memo is not None else None
    if report is None:
        report = _decode_report(env)
    beacon = acc.beacons.get(report.beacon_id)
    if beacon is None:
        raise Reject("unknown_beacon", "the report's beacon is not in this value")
    seen = acc.witnesses[report.beacon_id]
    if len(seen) >= p.max_reports_per_beacon:
        raise Reject("too_many_reports", f"more than {p.max_reports_per_beacon} reports for one beacon")
    validate = validate_witness_report if memo is None else memo.validate
    checked = validate(
        beacon, env, registry=view, network_id=p.network_id, seen=seen, verify=p.verify, decoded=report
    )
    seen.append(checked.report.witness)
    acc.reports.append(env)


def _accept_attestation(
    acc: _Accepted,
    env: wire.Envelope,
    *,
    view: LedgerView,
    epoch: int,
    assignments: dict[bytes, ComputeAssignment],
    p: ValueParams,
) -> None:
    claimed = _decode_attestation(env)
    assignment = assignments.get(claimed.provider)
    provider = view.get_device(claimed.provider)
    if assignment is None or provider is None:
        raise Reject("unknown_provider", "no compute assignment for this provider")
    att = validate_attestation(
        env,
        network_id=p.network_id,
        epoch=epoch,
        assigned=frozenset(assignment.witnesses),
        expected_n=challenge_size(provider.capacity),
        verify=p.verify,
    )
    if (att.witness, att.provider) in acc.attested:
        raise Reject("duplicate_attestation")
    acc.attested.add((att.witness, att.provider))
    acc.attestations.append(att)
    acc.attestation_envs.append(env)


def _accept_evidence(acc: _Accepted, evidence: bytes, view: LedgerView, epoch: int, p: ValueParams) -> None:
    judged = p.judge_evidence(evidence, view, p.network_id)
    validate_evidence_age(judged.epoch, epoch)
    slash = judged.slash
    if view.get_used_evidence(slash.evidence_id) is not None:
        raise Reject("evidence_reused", "this evidence already slashed in an earlier epoch")
    if any(s.evidence_id == slash.evidence_id or s.validator == slash.validator for s in acc.slashes):
        raise Reject("duplicate_evidence", "one slash per validator per epoch")
    acc.slashes.append(slash)
    acc.evidence.append(evidence)


def coverage_anchors(view: LedgerView) -> frozenset[bytes]:
    """Accounts whose devices anchor radio coverage: validators bonding at least MIN_WITNESS_STAKE."""
    return frozenset(v.address for v in validator_set(view) if v.power >= MIN_WITNESS_STAKE)


def _rewards(
    acc: _Accepted,
    view: LedgerView,
    *,
    epoch: int,
    prev_cert_hash: bytes,
    assignments: dict[bytes, ComputeAssignment],
    p: ValueParams,
) -> tuple[int, tuple[Reward, ...]]:
    beacons = [
        BeaconProof(bid, checked.beacon.device, tuple(acc.witnesses[bid]))
        for bid, checked in acc.beacons.items()
    ]
    compute = collect_compute_proofs(assignments.values(), acc.attestations, view)
    paid = compute_epoch_rewards(
        prev_cert_hash=prev_cert_hash,
        epoch=epoch,
        emission=p.emission_per_epoch,
        beacons=beacons,
        compute=compute,
        registry=view,
        params=p.rewards,
        anchors=coverage_anchors(view),
    )
    rewards = tuple(Reward(account, amount) for account, amount in paid)
    return (p.emission_per_epoch if rewards else 0), rewards


def check_content(
    view: LedgerView, content: EpochContent, params: ValueParams, *, encoded: bytes | None = None
) -> StateChanges:
    """Re-validate an epoch's content against the ledger; return the changes it makes.

    Args:
        view: the ledger as of the end of the previous epoch.
        content: the proposed content.
        params: network parameters.
        encoded: the canonical bytes ``content`` was decoded from, if the caller has them
            (its size is then not measured by encoding the content again).

    Returns:
        The state changes to commit if this content is decided.

    Raises:
        Reject: with the code of the first invalid piece (any proof's code,
            or one of the module docstring's rules); the validator prevotes nil.
    """
    value = content.ledger
    epoch, prev = value.epoch, value.prev_certificate_hash
    size = len(wire.encode(content) if encoded is None else encoded)
    if size > params.max_content_bytes:
        raise Reject("too_large", f"{size} bytes > {params.max_content_bytes}")
    for name, items in (
        ("beacons", content.beacons),
        ("reports", content.reports),
        ("attestations", content.attestations),
    ):
        _check_order(name, [envelope_id(e) for e in items])
    _check_order("evidence", list(content.evidence))
    acc = _Accepted()
    assignments = _assignments(view, epoch, prev)
    try:
        for env in content.beacons:
            _accept_beacon(acc, env, view, epoch, params)
        for env in content.reports:
            _accept_report(acc, env, view, params)
        for env in content.attestations:
            _accept_attestation(acc, env, view=view, epoch=epoch, assignments=assignments, p=params)
        for ev in content.evidence:
            _accept_evidence(acc, ev, view, epoch, params)
    except Ignore as exc:
        # Harmless in gossip (a duplicate), but a proposer that includes it is proposing junk.
        raise Reject(exc.code, exc.detail) from None
    emission, rewards = _rewards(
        acc, view, epoch=epoch, prev_cert_hash=prev, assignments=assignments, p=params
    )
    if value.emission != emission:
        raise Reject("wrong_emission", f"declared {value.emission}, earned {emission}")
    if value.rewards != rewards:
        raise Reject("wrong_rewards", "rewards differ from the recomputation over the included proofs")
    if value.slashes != tuple(acc.slashes):
        raise Reject("wrong_slashes", "slashes differ from the included evidence")
    changes = apply_epoch(view, value, params.network_id)
    if changes.root != content.state_root:
        raise Reject("wrong_state_root", "the state root differs from the recomputed one")
    return changes


class CheckedValues:
    """Good :func:`check_content` results, kept for nodes that check the same value on the same state.

    A check is a pure function of the content's bytes, the ledger state and the
    parameters. The state is named by its Merkle root, which commits to every
    record a check reads, and by the last certificate hash, which the root does
    not hold; the parameters by their compared fields, so the nodes sharing one
    memory must also share ``judge_evidence`` (the simulator's nodes do). The
    changes handed back are the same object for every node, which only reads
    them. A result is only as good as the signature checks that reached it
    (``params.verify``, not compared): share one memory only between nodes
    whose checks pass good signatures alone (the simulator's honest nodes; a
    node's cache passes the envelopes it marked itself, forged or not).
    Rejections are not kept. At most ``capacity`` results, the oldest dropped
    first. For one thread (the simulator checks inline).
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._kept: dict[tuple[bytes, bytes, bytes, ValueParams], StateChanges] = {}
        self.hits = 0
        self.misses = 0

    def check(
        self, view: LedgerView, content: EpochContent, params: ValueParams, *, encoded: bytes
    ) -> StateChanges:
        """:func:`check_content` of ``content``, whose canonical bytes are ``encoded``."""
        key = (wire.content_id(encoded), view.merkle_root(), view.last_certificate_hash(), params)
        changes = self._kept.get(key)
        if changes is not None:
            self.hits += 1
            return changes
        self.misses += 1
        changes = check_content(view, content, params, encoded=encoded)
        self._kept[key] = changes
        while len(self._kept) > self.capacity:
            self._kept.pop(next(iter(self._kept)), None)
        return changes


@dataclass(frozen=True, slots=True)
class Dropped:
    """A collected item the proposer left out, with the reason."""

    kind: str
    code: str


@dataclass(frozen=True, slots=True)
class Built:
    content: EpochContent
    changes: StateChanges
    dropped: tuple[Dropped, ...]


def build_content(
    view: LedgerView,
    *,
    epoch: int,
    beacons: Iterable[wire.Envelope],
    reports: Iterable[wire.Envelope],
    attestations: Iterable[wire.Envelope],
    txs: Sequence[wire.Envelope],
    evidence: Iterable[bytes],
    params: ValueParams,
) -> Built:
    """Build the content for ``epoch`` from what this node collected.

    Items are considered in a canonical order (by content id) and kept only
    if they pass the checks of :func:`check_content`, up to the size caps, so
    the result always checks. Transactions are passed through in the given
    order (the ledger skips invalid ones with a recorded reason).

    Raises:
        Reject: only if the ledger refuses the epoch as a whole (e.g. wrong epoch).
    """
    prev = view.last_certificate_hash()
    acc = _Accepted()
    dropped: list[Dropped] = []
    # Transactions first, in the given order, within half the budget; then proofs. Every
    # accepted item is charged its size plus room for the one reward entry it can add.
    kept_txs: list[wire.Envelope] = []
    tx_budget = params.max_content_bytes // 2
    for tx in txs:
        size = len(wire.encode(tx)) + _ITEM_OVERHEAD
        if len(kept_txs) >= MAX_TXS or size > tx_budget:
            dropped.append(Dropped("tx", "over_budget"))
            continue
        kept_txs.append(tx)
        tx_budget -= size
    framing = len(wire.encode(EpochValue(epoch, prev, tuple(kept_txs), (), (), 0))) + _FRAMING
    budget = [params.max_content_bytes - framing]

    def ordered(items: Iterable[wire.Envelope]) -> list[wire.Envelope]:
        return sorted(set(items), key=envelope_id)

    def keep(kind: str, cap: int, count: int, accept: Callable[[], None], size: int) -> None:
        if count >= cap:
            dropped.append(Dropped(kind, "over_cap"))
            return
        if size > budget[0]:
            dropped.append(Dropped(kind, "over_budget"))
            return
        try:
            accept()
        except ValidationError as exc:
            dropped.append(Dropped(kind, exc.code))
            return
        budget[0] -= size

    def report_rank(env: wire.Envelope) -> bytes:
        try:
            report = _decode_report(env)
        except Reject:
            return b"\xff" * 32  # undecodable: judged (and dropped) last
        beacon = acc.beacons.get(report.beacon_id)
        if beacon is None:
            return b"\xff" * 32  # no accepted beacon: judged (and dropped) last
        return report_ticket(prev, beacon.beacon, report.witness)

    for ev in sorted(set(evidence)):
        accept = partial(_accept_evidence, acc, ev, view, epoch, params)
        keep("evidence", MAX_EVIDENCE, len(acc.evidence), accept, len(ev) + _SLASH_BYTES)
    for env in ordered(beacons):
        accept = partial(_accept_beacon, acc, env, view, epoch, params)
        keep("beacon", MAX_BEACONS, len(acc.beacon_order), accept, len(wire.encode(env)) + _ITEM_OVERHEAD)
    assignments = _assignments(view, epoch, prev)
    for env in ordered(attestations):
        accept = partial(
            _accept_attestation, acc, env, view=view, epoch=epoch, assignments=assignments, p=params
        )
        size = len(wire.encode(env)) + _ITEM_OVERHEAD
        keep("attestation", MAX_ATTESTATIONS, len(acc.attestation_envs), accept, size)
    # Reports last, best ticket first, so a crowd of witnesses never crowds out the rest.
    for env in sorted(set(reports), key=report_rank):
        accept = partial(_accept_report, acc, env, view, params)
        keep("report", MAX_REPORTS, len(acc.reports), accept, len(wire.encode(env)) + _ITEM_OVERHEAD)
    emission, rewards = _rewards(
        acc, view, epoch=epoch, prev_cert_hash=prev, assignments=assignments, p=params
    )
    value = EpochValue(epoch, prev, tuple(kept_txs), rewards, tuple(acc.slashes), emission)
    changes = apply_epoch(view, value, params.network_id)
    content = EpochContent(
        ledger=value,
        beacons=tuple(sorted(acc.beacon_order, key=envelope_id)),
        reports=tuple(sorted(acc.reports, key=envelope_id)),
        attestations=tuple(sorted(acc.attestation_envs, key=envelope_id)),
        evidence=tuple(acc.evidence),
        state_root=changes.root,
    )
    return Built(content, changes, tuple(dropped))
