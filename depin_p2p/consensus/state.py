"""Consensus types for one epoch's Tendermint instance. [pure]

Everything the consensus core shares with its shell, the signer, the ledger
and light clients lives here: wire messages (proposal, votes, certificate,
duplicate-vote evidence), the validator set with its quorum arithmetic, the
proposer rotation, the instance parameters and state, the effects, and the
verification of certificates and evidence. The upon-rules themselves are in
:mod:`depin_p2p.consensus.transition`.

What is decided
    The proposer wraps the ledger's opaque epoch value in a
    :class:`Candidate` ``(epoch, prev_cert_hash, value)``; votes name it by
    ``value_id = wire.content_id(wire.encode(candidate))``. Because the
    previous certificate's hash is inside the candidate, the precommit
    signatures of a certificate cover the chain link too.

Certificate hash
    ``certificate_hash(cert) = cert.value_id``: a hash of *what* was decided,
    not of which 2f+1 signatures a node happened to collect (two honest nodes
    may hold different signature sets, or decide the same value in different
    rounds, and must still agree on the chain).

Proposer rotation (spec)
    ``x = int(BLAKE2b-256("depin-p2p/proposer" ‖ prev_cert_hash ‖ u64 epoch ‖
    u32 round)) mod total_power``; validators sorted by address, the proposer
    is the first whose cumulative power exceeds ``x``. Weighted by power,
    reproducible from the spec alone, fresh per epoch because the previous
    certificate seeds it.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from depin_p2p import wire
from depin_p2p.errors import CodecError, InternalError, Reject
from depin_p2p.model import Validator

MAX_VALIDATORS = 256
MAX_VALUE_BYTES = 900_000  # leaves room for the proposal header and envelope inside 1 MiB
MAX_ROUNDS_AHEAD = 64  # votes further ahead are ignored: bounds what a Byzantine peer can make us store
GENESIS_PREV_HASH = bytes(32)
NIL = None  # a nil vote's value_id

ValueId = bytes  # 32-byte BLAKE2b of an encoded Candidate


# --------------------------------------------------------------------------
# Wire messages (type ids 80-111 belong to consensus)


@wire.message(type_id=80)
@dataclass(frozen=True, slots=True)
class Candidate:
    """What the validators agree on for one epoch: the ledger's opaque value, chained.

    Attributes:
        epoch: the epoch this value is for.
        prev_cert_hash: :func:`certificate_hash` of the previous epoch's certificate
            (``GENESIS_PREV_HASH`` for the first epoch).
        value: the ledger's encoded epoch value; opaque to consensus.
    """

    epoch: wire.U64
    prev_cert_hash: wire.Bytes32
    value: Annotated[bytes, wire.MaxLen(MAX_VALUE_BYTES)]


@wire.message(type_id=81, domain=wire.Domain.PROPOSAL)
@dataclass(frozen=True, slots=True)
class Proposal:
    """``⟨PROPOSAL, epoch, round, v, validRound⟩``; ``valid_round`` None is the paper's -1."""

    epoch: wire.U64
    round: wire.U32
    candidate: Candidate
    valid_round: wire.U32 | None


@wire.message(type_id=82, domain=wire.Domain.PREVOTE)
@dataclass(frozen=True, slots=True)
class Prevote:
    """``⟨PREVOTE, epoch, round, id(v) | nil⟩``."""

    epoch: wire.U64
    round: wire.U32
    value_id: wire.Bytes32 | None


@wire.message(type_id=83, domain=wire.Domain.PRECOMMIT)
@dataclass(frozen=True, slots=True)
class Precommit:
    """``⟨PRECOMMIT, epoch, round, id(v) | nil⟩``."""

    epoch: wire.U64
    round: wire.U32
    value_id: wire.Bytes32 | None


Vote = Prevote | Precommit


@wire.struct
@dataclass(frozen=True, slots=True)
class CommitSig:
    """One validator's signature over ``Precommit(epoch, round, value_id)`` of a certificate."""

    validator: wire.PublicKeyBytes
    signature: wire.SignatureBytes


@wire.message(type_id=84)
@dataclass(frozen=True, slots=True)
class Certificate:
    """The decision of one epoch: the candidate and > 2/3 of power precommitting it.

    ``signatures`` are sorted by validator address, one per validator.
    """

    candidate: Candidate
    round: wire.U32
    signatures: Annotated[tuple[CommitSig, ...], wire.MaxLen(MAX_VALIDATORS)]

    @property
    def epoch(self) -> int:
        return self.candidate.epoch

    @property
    def value_id(self) -> bytes:
        return value_id_of(self.candidate)


@wire.message(type_id=87)
@dataclass(frozen=True, slots=True)
class CommitNotice:
    """A :class:`Certificate` without its value: what a node gossips when it commits an epoch.

    The precommits sign the value id, so a notice verifies without the value
    (:func:`verify_notice`); a node that holds the decided candidate (it heard
    the proposal) makes the certificate back from it (:func:`certificate_from`),
    and one that does not fetches the certificate from the sender by catch-up.
    About 100 bytes per signature instead of the whole value (up to 900 kB) per copy.
    """

    epoch: wire.U64
    prev_cert_hash: wire.Bytes32
    value_id: wire.Bytes32
    round: wire.U32
    signatures: Annotated[tuple[CommitSig, ...], wire.MaxLen(MAX_VALIDATORS)]


@wire.message(type_id=85)
@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    """Two signed votes of one validator for one (epoch, round, type) with different values.

    Canonical form: ``vote_a.body < vote_b.body`` so one offence has one encoding.
    """

    vote_a: wire.Envelope
    vote_b: wire.Envelope


# --------------------------------------------------------------------------
# Identities and hashes


# Recent candidates' ids: one value is named by every proposal, vote and lock of its epoch,
# and hashing it (hundreds of kB of proofs) once per message was a tenth of a busy node's work.
_VALUE_IDS: dict[Candidate, bytes] = {}
_VALUE_IDS_CAP = 64


def value_id_of(candidate: Candidate) -> bytes:
    """The id votes use for ``candidate``: BLAKE2b-256 of its canonical encoding (memoised)."""
    vid = _VALUE_IDS.get(candidate)
    if vid is None:
        vid = wire.content_id(wire.encode(candidate))
        if len(_VALUE_IDS) >= _VALUE_IDS_CAP:
            del _VALUE_IDS[next(iter(_VALUE_IDS))]
        _VALUE_IDS[candidate] = vid
    return vid


def certificate_hash(cert: Certificate) -> bytes:
    """The chain link the next epoch's candidate carries (see module docstring)."""
    return cert.value_id


def notice_of(cert: Certificate) -> CommitNotice:
    """The certificate without its value."""
    c = cert.candidate
    return CommitNotice(c.epoch, c.prev_cert_hash, cert.value_id, cert.round, cert.signatures)


def certificate_from(notice: CommitNotice, candidate: Candidate) -> Certificate | None:
    """The certificate ``notice`` stands for, if ``candidate`` is the value it decided; else None."""
    if candidate.epoch != notice.epoch or candidate.prev_cert_hash != notice.prev_cert_hash:
        return None
    if value_id_of(candidate) != notice.value_id:
        return None
    return Certificate(candidate, notice.round, notice.signatures)


class Step(enum.IntEnum):
    """A round's step; also the signer's step order within a round."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


def step_of(msg: Proposal | Prevote | Precommit) -> Step:
    """The step a signed consensus message belongs to."""
    if isinstance(msg, Proposal):
        return Step.PROPOSE
    if isinstance(msg, Prevote):
        return Step.PREVOTE
    return Step.PRECOMMIT


# --------------------------------------------------------------------------
# Validator set and quorum arithmetic


def is_quorum(power: int, total: int) -> bool:
    """More than 2/3 of ``total`` voting power, in integers (3·power > 2·total)."""
    return 3 * power > 2 * total


def is_one_third_plus(power: int, total: int) -> bool:
    """More than 1/3 of ``total``: at least one honest validator among them (f+1 rule)."""
    return 3 * power > total


QuorumRule = Callable[[int, int], bool]


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """The validators of one epoch, sorted by address, with their powers."""

    members: tuple[Validator, ...]
    total: int
    power: Mapping[bytes, int] = field(compare=False, repr=False)

    @classmethod
    def of(cls, validators: tuple[Validator, ...] | list[Validator]) -> ValidatorSet:
        """Build a set; raises InternalError on duplicates, zero power or an empty set."""
        members = tuple(sorted(validators, key=lambda v: v.address))
        power = {v.address: v.power for v in members}
        if not members or len(power) != len(members) or any(v.power <= 0 for v in members):
            raise InternalError("a validator set needs distinct addresses with positive power")
        return cls(members, sum(power.values()), power)

    def power_of(self, address: bytes) -> int:
        """Voting power of ``address`` (0 for a non-validator)."""
        return self.power.get(address, 0)


def proposer_for(validators: ValidatorSet, prev_cert_hash: bytes, epoch: int, round_: int) -> bytes:
    """The address proposing in (epoch, round); see the module docstring for the spec."""
    digest = hashlib.blake2b(
        b"depin-p2p/proposer" + prev_cert_hash + epoch.to_bytes(8, "big") + round_.to_bytes(4, "big"),
        digest_size=32,
    ).digest()
    x = int.from_bytes(digest, "big") % validators.total
    acc = 0
    for v in validators.members:
        acc += v.power
        if x < acc:
            return v.address
    raise InternalError("unreachable: cumulative power exceeds x")


# --------------------------------------------------------------------------
# Parameters, rules, timeouts


SignatureVerifier = Callable[[bytes, bytes, bytes], None]
"""``verify(public_key, signed_bytes, signature)``; raises Reject('bad_signature')."""

ValueValidator = Callable[[Candidate], None]
"""Deterministic re-validation of a proposed value; raises Reject with a code if invalid."""


@dataclass(frozen=True, slots=True)
class Rules:
    """The algorithm's safety-relevant choices, injectable so tests can build broken variants.

    Attributes:
        quorum: the quorum predicate ``(power, total) -> bool``; correct is :func:`is_quorum`.
        respect_locks: the lock check of the paper's lines 23 and 29; never False in production.
    """

    quorum: QuorumRule = is_quorum
    respect_locks: bool = True


class TimeoutKind(enum.IntEnum):
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    # Re-broadcast own messages of the round: safety never needs it, liveness over lossy links does.
    RETRANSMIT = 4


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-round timeouts in ms: ``base + round · delta`` (the paper's timeoutX(r))."""

    propose_ms: int = 3000
    prevote_ms: int = 1000
    precommit_ms: int = 1000
    delta_ms: int = 500
    retransmit_ms: int = 2000

    def duration(self, kind: TimeoutKind, round_: int) -> int:
        """How long after its trigger a timeout of ``kind`` in ``round_`` fires."""
        if kind is TimeoutKind.RETRANSMIT:
            return self.retransmit_ms + round_ * self.delta_ms
        base = {
            TimeoutKind.PROPOSE: self.propose_ms,
            TimeoutKind.PREVOTE: self.prevote_ms,
            TimeoutKind.PRECOMMIT: self.precommit_ms,
        }[kind]
        return base + round_ * self.delta_ms

    @staticmethod
    def for_epoch(epoch_ms: int) -> Timeouts:
        """The defaults, stretched for epochs over 12 s: propose a quarter of the epoch, prevote
        and precommit a sixteenth, the per-round growth a thirty-second.

        Timeouts decide liveness only, never safety. On a starved machine every
        message is late (32 processes on 2 cores, 32 s epochs: proposals reached
        the other nodes p50 2.6-5 s after signing), so a 3 s propose timeout
        makes validators prevote nil just before the proposal arrives, round
        after round, and each new round adds a proposal to the load. Waiting a
        quarter of a long epoch costs an epoch whose proposer is down 8 s of
        32, and still commits within it; epochs of 12 s or less keep the defaults.
        """
        d = _DEFAULT_TIMEOUTS
        return Timeouts(
            propose_ms=max(d.propose_ms, epoch_ms // 4),
            prevote_ms=max(d.prevote_ms, epoch_ms // 16),
            precommit_ms=max(d.precommit_ms, epoch_ms // 16),
            delta_ms=max(d.delta_ms, epoch_ms // 32),
            retransmit_ms=d.retransmit_ms,
        )


_DEFAULT_TIMEOUTS = Timeouts()


def _accept_any_value(candidate: Candidate) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Params:
    """Everything fixed for one epoch instance.

    Attributes:
        network_id: signatures from another network never verify.
        epoch: the epoch being decided.
        prev_cert_hash: hash of the previous epoch's certificate.
        validators: this epoch's validator set.
        me: own address, or None for an observer that never votes.
        validate_value: injected deterministic value check (raises Reject).
        verify: signature check; ``wire.verify_signature`` (Ed25519) in production.
        timeouts: timeout schedule.
        rules: algorithm rules (tests inject broken variants).
    """

    network_id: str
    epoch: int
    prev_cert_hash: bytes
    validators: ValidatorSet
    me: bytes | None
    validate_value: ValueValidator = _accept_any_value
    verify: SignatureVerifier = wire.verify_signature
    timeouts: Timeouts = Timeouts()
    rules: Rules = Rules()


# --------------------------------------------------------------------------
# State


@dataclass(frozen=True, slots=True)
class VoteEntry:
    """A counted vote: its value id and the envelope that proves it."""

    value_id: bytes | None
    envelope: wire.Envelope


# round -> validator -> its votes: the first, plus at most one conflicting one. Counting an
# equivocator's two votes each for its own value is what the paper's "received from 2f+1"
# means, and liveness needs it: a proof of lock that includes an equivocator's vote must still
# count for the nodes that first saw its other vote. Safety is unaffected (they are <= f).
Votes = Mapping[int, Mapping[bytes, tuple[VoteEntry, ...]]]
MAX_VOTES_PER_VALIDATOR = 2


@dataclass(frozen=True, slots=True)
class Lock:
    """What a node locked on, persisted with its precommit so a restart cannot forget it.

    Attributes:
        round: the round of the polka (the paper's lockedRound, also validRound).
        value_id: the locked value's id.
        candidate: the locked value itself, so the node can re-propose it (liveness).
        pol: the 2f+1 prevotes of the polka (proof of lock), so peers that missed
            them can still accept a re-proposal with this valid round (liveness).
    """

    round: int
    value_id: bytes
    candidate: Candidate | None = None
    pol: tuple[wire.Envelope, ...] = ()


@dataclass(frozen=True, slots=True)
class EpochState:
    """The state of one epoch's Tendermint instance (the paper's process variables + log).

    ``locked_round``/``valid_round`` are -1 when unset, as in the paper. The
    locked value is kept by id only: the lock check compares ids, and a lock
    restored from the sign-state has no value bytes.
    """

    params: Params
    round: int = 0
    step: Step = Step.PROPOSE
    locked_round: int = -1
    locked_id: bytes | None = None
    valid_round: int = -1
    valid_value: Candidate | None = None
    decision: Certificate | None = None
    proposals: Mapping[int, tuple[Proposal, wire.Envelope]] = field(default_factory=dict)
    prevotes: Votes = field(default_factory=dict)
    precommits: Votes = field(default_factory=dict)
    # Running sums of voting power, kept with the votes so no rule re-sums them:
    # (is_prevote, round, value id | None | ... for any value) -> power of the validators with
    # such a vote, each counted once; and round -> power of the validators heard from in it
    # (a proposal, prevote or precommit), for the round skip.
    tallies: Mapping[tuple[bool, int, object], int] = field(default_factory=dict)
    round_power: Mapping[int, int] = field(default_factory=dict)
    # "for the first time" guards of the upon-rules, as (rule, round).
    fired: frozenset[tuple[str, int]] = frozenset()
    # Earlier rounds some validator was seen still sending in since the last retransmission:
    # our own messages of those rounds are re-sent to pull it forward (lossy links).
    lagging: frozenset[int] = frozenset()
    # Validity verdicts by value id: validation is deterministic, so run it once.
    validity: Mapping[bytes, bool] = field(default_factory=dict)


# --------------------------------------------------------------------------
# Effects: what the shell must do, in order


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send an already signed envelope to every validator."""

    envelope: wire.Envelope


@dataclass(frozen=True, slots=True)
class BuildValue:
    """This node proposes in (epoch, round) and has no valid value: answer with ``on_value``."""

    epoch: int
    round: int


@dataclass(frozen=True, slots=True)
class SignProposal:
    """Have the signer persist-then-sign; broadcast the envelope and feed it back with ``on_message``."""

    proposal: Proposal


@dataclass(frozen=True, slots=True)
class SignVote:
    """Have the signer persist-then-sign; broadcast the envelope and feed it back with ``on_message``.

    A non-nil precommit carries the ``lock`` it creates; the signer persists it with the signature.
    """

    vote: Prevote | Precommit
    lock: Lock | None = None


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call ``on_timeout(state, kind, round, now)`` at ``at_ms`` if still in ``epoch``.

    A timeout of a round the instance has left does nothing, so the shell never cancels one.
    """

    epoch: int
    kind: TimeoutKind
    round: int
    at_ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    """The epoch is decided: persist the certificate atomically with the ledger, then gossip it."""

    certificate: Certificate


@dataclass(frozen=True, slots=True)
class ReportEvidence:
    """A validator equivocated: gossip the evidence and include it in a later value."""

    evidence: DuplicateVoteEvidence


Effect = Broadcast | BuildValue | SignProposal | SignVote | ScheduleTimeout | Decide | ReportEvidence


# --------------------------------------------------------------------------
# Verification usable with only the validator set (light clients, catch-up)


def precommit_signing_bytes(network_id: str, epoch: int, round_: int, value_id: bytes | None) -> bytes:
    """The bytes a validator signed for ``Precommit(epoch, round, value_id)``."""
    body = wire.encode(Precommit(epoch, round_, value_id))
    return wire.signing_bytes(network_id, wire.Domain.PRECOMMIT, wire.info_of(Precommit).type_id, body)


def commit_sig_of(env: wire.Envelope) -> CommitSig:
    """The compact certificate signature of a precommit envelope."""
    return CommitSig(env.signer, env.signature)


def verify_certificate(
    cert: Certificate,
    validators: ValidatorSet,
    network_id: str,
    prev_cert_hash: bytes,
    *,
    verify: SignatureVerifier = wire.verify_signature,
    quorum: QuorumRule = is_quorum,
) -> None:
    """Check a certificate with only the validator set and the previous certificate's hash.

    Raises Reject with code ``wrong_prev_cert`` (not chained to ``prev_cert_hash``),
    ``unsorted_signatures`` (not strictly sorted: duplicates or non-canonical),
    ``unknown_validator``, ``bad_signature``, ``insufficient_power`` (not > 2/3).
    """
    verify_notice(notice_of(cert), validators, network_id, prev_cert_hash, verify=verify, quorum=quorum)


def verify_notice(
    notice: CommitNotice,
    validators: ValidatorSet,
    network_id: str,
    prev_cert_hash: bytes,
    *,
    verify: SignatureVerifier = wire.verify_signature,
    quorum: QuorumRule = is_quorum,
) -> None:
    """:func:`verify_certificate` of the certificate ``notice`` stands for (the same codes)."""
    if notice.prev_cert_hash != prev_cert_hash:
        raise Reject("wrong_prev_cert", f"certificate of epoch {notice.epoch} does not chain")
    signers = [s.validator for s in notice.signatures]
    if any(a >= b for a, b in itertools.pairwise(signers)):
        raise Reject("unsorted_signatures")
    data = precommit_signing_bytes(network_id, notice.epoch, notice.round, notice.value_id)
    power = 0
    for sig in notice.signatures:
        p = validators.power_of(sig.validator)
        if p == 0:
            raise Reject("unknown_validator", sig.validator.hex())
        verify(sig.validator, data, sig.signature)
        power += p
    if not quorum(power, validators.total):
        raise Reject("insufficient_power", f"{power} of {validators.total}")


def open_vote(
    env: wire.Envelope, network_id: str, verify: SignatureVerifier = wire.verify_signature
) -> Prevote | Precommit:
    """Decode and signature-check a vote envelope.

    Raises Reject ``wrong_network``, ``malformed``, ``not_a_vote``, ``bad_signature``.
    """
    if env.network_id != network_id:
        raise Reject("wrong_network")
    try:
        msg = wire.decode(env.body)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    if not isinstance(msg, Prevote | Precommit):
        raise Reject("not_a_vote", type(msg).__name__)
    info = wire.info_of(type(msg))
    assert info.domain is not None
    verify(env.signer, wire.signing_bytes(network_id, info.domain, info.type_id, env.body), env.signature)
    return msg


def make_evidence(a: wire.Envelope, b: wire.Envelope) -> DuplicateVoteEvidence:
    """Evidence in canonical order from two conflicting vote envelopes."""
    return DuplicateVoteEvidence(a, b) if a.body < b.body else DuplicateVoteEvidence(b, a)


def verify_evidence(
    ev: DuplicateVoteEvidence,
    validators: ValidatorSet,
    network_id: str,
    *,
    verify: SignatureVerifier = wire.verify_signature,
) -> bytes:
    """Check duplicate-vote evidence; return the offending validator's address.

    Raises Reject ``not_canonical`` (order), ``different_signers``,
    ``unknown_validator``, ``not_conflicting`` (different type, epoch or round,
    or the same value), plus the codes of :func:`open_vote`.
    """
    if not ev.vote_a.body < ev.vote_b.body:
        raise Reject("not_canonical")
    if ev.vote_a.signer != ev.vote_b.signer:
        raise Reject("different_signers")
    if validators.power_of(ev.vote_a.signer) == 0:
        raise Reject("unknown_validator")
    a = open_vote(ev.vote_a, network_id, verify)
    b = open_vote(ev.vote_b, network_id, verify)
    if type(a) is not type(b) or (a.epoch, a.round) != (b.epoch, b.round) or a.value_id == b.value_id:
        raise Reject("not_conflicting")
    return ev.vote_a.signer
