"""The epochs around the Tendermint instance, as a sans-I/O state machine. [pure]

:mod:`~depin_p2p.consensus.transition` holds the rules of one instance;
:class:`EpochDriver` is the layer above it that a node runs: it owns the
running epoch's state, the buffer of messages for epochs not started yet,
the evidence store, the verdicts of value checks, the verified-signature
cache and the conflict watch, and it decides when an epoch's instance starts
(its epoch is due and its predecessor committed).

It does no I/O and calls nothing back. Its shell (the trio service, or the
fuzz harness) feeds it inputs (:meth:`EpochDriver.feed`) and executes what
:meth:`EpochDriver.next_request` hands out, one at a time, in order: publish,
sleep until, sign durably, build a value, check a value, commit, penalise a
peer. A request that has an answer (signed, built, checked, committed,
instance opened) is answered by feeding the answer before asking for the next
request, so requests run depth first, as the core's effects did.

Value checks: a proposal or certificate whose candidate has no verdict yet
waits (bounded) while a :class:`CheckValue` runs; the core's
``Params.validate_value`` then only looks the verdict up. A value this node
built itself is known valid (``build_content`` only keeps what checks).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from depin_p2p import wire
from depin_p2p.consensus import transition
from depin_p2p.consensus.state import (
    Broadcast,
    BuildValue,
    Candidate,
    Certificate,
    CommitNotice,
    Decide,
    DuplicateVoteEvidence,
    Effect,
    EpochState,
    Lock,
    Params,
    Precommit,
    Prevote,
    Proposal,
    Rules,
    ScheduleTimeout,
    SignatureVerifier,
    SignProposal,
    SignVote,
    Step,
    TimeoutKind,
    Timeouts,
    ValidatorSet,
    certificate_from,
    make_evidence,
    notice_of,
    proposer_for,
    value_id_of,
    verify_certificate,
    verify_notice,
)
from depin_p2p.errors import CodecError, Ignore, InternalError, Reject

FUTURE_BUFFER = 2_048  # messages for epochs not started yet
FUTURE_EPOCHS = 2  # how far past the ledger's head the buffer looks
EVIDENCE_CAPACITY = 64
SEEN_POSITIONS = 8_192  # (signer, type, epoch, round) -> body id, for the conflict watch
WATCH_EPOCHS = 8  # the conflict watch forgets positions this many epochs behind the head
MAX_OFFENDERS = 256
VERDICTS_CAPACITY = 64
PARKED_CAPACITY = 256  # inputs waiting for a value check
CONSENSUS_MESSAGE_CAP = wire.MAX_MESSAGE_BYTES

ConsensusMessage = Proposal | Prevote | Precommit


# --------------------------------------------------------------------------
# What the driver is told about the world


@dataclass(frozen=True, slots=True)
class Head:
    """The committed ledger's head: what the next instance builds on."""

    next_epoch: int
    prev_cert_hash: bytes
    validators: ValidatorSet


@dataclass(frozen=True, slots=True)
class EpochClock:
    """Epoch ``e``'s instance is due at ``origin_ms + e · length_ms`` (its end plus a grace)."""

    origin_ms: int
    length_ms: int

    def due_ms(self, epoch: int) -> int:
        return self.origin_ms + epoch * self.length_ms

    def latest_due(self, now_ms: int) -> int:
        """The latest epoch due at ``now_ms`` (-1 or below before the first)."""
        return (now_ms - self.origin_ms) // self.length_ms


@dataclass(frozen=True, slots=True)
class DriverConfig:
    """Fixed for the node's lifetime."""

    network_id: str
    me: bytes | None  # this node's signing key, None for an observer
    clock: EpochClock
    timeouts: Timeouts = field(default_factory=Timeouts)
    rules: Rules = field(default_factory=Rules)
    # The node's verified-signature cache, shared with its proof checks (its own when alone).
    signatures: wire.SignatureCache = field(default_factory=wire.SignatureCache, compare=False)
    future_capacity: int = FUTURE_BUFFER


# --------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class PeerMessage:
    """A proposal or vote envelope from ``peer`` (None: a local source)."""

    envelope: wire.Envelope
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class CertificateIn:
    """A certificate another node assembled (gossiped, or fetched by catch-up)."""

    certificate: Certificate
    peer: str | None = None


@dataclass(frozen=True, slots=True)
class EvidenceIn:
    evidence: DuplicateVoteEvidence


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    epoch: int
    kind: TimeoutKind
    round: int


@dataclass(frozen=True, slots=True)
class EpochDue:
    """Epoch ``epoch`` is over (plus grace): its instance may start."""

    epoch: int


@dataclass(frozen=True, slots=True)
class InstanceOpened:
    """Answer to :class:`OpenInstance`: what the signer remembers of ``epoch``."""

    epoch: int
    lock: Lock | None = None
    start_round: int = 0
    resend: tuple[wire.Envelope, ...] = ()


@dataclass(frozen=True, slots=True)
class ValueBuilt:
    """Answer to :class:`BuildRequest`; ``payload`` is kept for the commit (e.g. the state changes)."""

    epoch: int
    round: int
    value: bytes
    payload: object = None


@dataclass(frozen=True, slots=True)
class ValueChecked:
    """Answer to :class:`CheckValue`."""

    value_id: bytes
    ok: bool
    payload: object = None


@dataclass(frozen=True, slots=True)
class Signed:
    """Answer to :class:`SignDurably`: the envelope is durable in the sign-state."""

    envelope: wire.Envelope


@dataclass(frozen=True, slots=True)
class SignDenied:
    """Answer to :class:`SignDurably`: the signer refused (never sent, never retried)."""

    code: str


@dataclass(frozen=True, slots=True)
class Committed:
    """Answer to :class:`Commit`: the epoch is durable; ``head`` is the new head."""

    epoch: int
    head: Head


Input = (
    PeerMessage
    | CertificateIn
    | EvidenceIn
    | TimeoutFired
    | EpochDue
    | InstanceOpened
    | ValueBuilt
    | ValueChecked
    | Signed
    | SignDenied
    | Committed
)


# --------------------------------------------------------------------------
# Requests (the only outputs)


@dataclass(frozen=True, slots=True)
class Publish:
    """Gossip an envelope, certificate or evidence on the consensus topic."""

    item: wire.Envelope | Certificate | DuplicateVoteEvidence


@dataclass(frozen=True, slots=True)
class SleepUntil:
    """Feed ``then`` back at ``at_ms`` (never cancelled: a stale one does nothing)."""

    at_ms: int
    then: TimeoutFired | EpochDue


@dataclass(frozen=True, slots=True)
class OpenInstance:
    """Epoch ``epoch`` starts: answer with :class:`InstanceOpened` (or never, to stop)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """This node proposes: build the epoch's value; answer with :class:`ValueBuilt`."""

    epoch: int
    round: int
    evidence: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CheckValue:
    """Re-check a candidate's value against the ledger; answer with :class:`ValueChecked`."""

    candidate: Candidate


@dataclass(frozen=True, slots=True)
class SignDurably:
    """Persist, then sign; answer with :class:`Signed` or :class:`SignDenied`."""

    message: ConsensusMessage
    lock: Lock | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """Write the epoch (ledger changes, certificate, value) atomically; answer with :class:`Committed`."""

    certificate: Certificate
    payload: object


@dataclass(frozen=True, slots=True)
class PenalisePeer:
    peer: str
    code: str


Request = (
    Publish | SleepUntil | OpenInstance | BuildRequest | CheckValue | SignDurably | Commit | PenalisePeer
)


@dataclass(slots=True)
class ConsensusCounters:
    committed: int = 0
    rounds_used: int = 0
    signed: int = 0
    sign_refused: int = 0
    messages_ignored: int = 0
    messages_rejected: int = 0
    synced: int = 0
    evidence_seen: int = 0
    # What gossip intake ignored (dropped unforwarded, nobody charged), by code.
    ignore_codes: dict[str, int] = field(default_factory=dict)
    # Proposer slots this node waited out (its propose timeout fired with no proposal accepted),
    # by the slot's proposer: an observation for /status, never a charge (a slow or cut-off
    # proposer misses its slot as well).
    proposals_missed: dict[bytes, int] = field(default_factory=dict)
    # Ed25519 checks of proposals, votes and certificates, run or answered from the node's cache.
    signatures: wire.SignatureTally = field(default_factory=wire.SignatureTally)


# --------------------------------------------------------------------------
# Parts the driver owns


class ConflictWatch:
    """Signers seen validly signing two different messages for one (type, epoch, round).

    An observation for ``/status`` (the crash test reads it), covering
    proposals too, which duplicate-vote evidence does not. It keeps the first
    envelope of each position, so a conflicting vote heard after its epoch was
    decided (when the epoch's own state, which forms evidence, is gone) is
    still provable: :meth:`see` returns the earlier one.
    """

    def __init__(self) -> None:
        self._positions: OrderedDict[tuple[bytes, int, int, int], tuple[bytes, wire.Envelope]] = OrderedDict()
        self.conflicting_signers: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._positions)

    def forget_before(self, epoch: int) -> None:
        """Drop the positions of epochs before ``epoch`` (``SEEN_POSITIONS`` bounds the rest)."""
        self._positions = OrderedDict((k, v) for k, v in self._positions.items() if k[2] >= epoch)

    def see(self, env: wire.Envelope, msg: ConsensusMessage) -> wire.Envelope | None:
        """Record ``env``; the envelope seen before at its position if ``env`` conflicts with it."""
        key = (env.signer, wire.info_of(type(msg)).type_id, msg.epoch, msg.round)
        body_id = wire.content_id(env.body)
        seen = self._positions.get(key)
        if seen is None:
            self._positions[key] = (body_id, env)
            while len(self._positions) > SEEN_POSITIONS:
                self._positions.popitem(last=False)
            return None
        if seen[0] == body_id:
            return None
        bump(self.conflicting_signers, env.signer)
        return seen[1]


class EvidenceStore:
    """Duplicate-vote evidence heard or found, kept (bounded) for a later value."""

    def __init__(self, counters: ConsensusCounters) -> None:
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._counters = counters
        self.offenders: dict[bytes, int] = {}

    def keep(self, ev: DuplicateVoteEvidence) -> bool:
        """Store ``ev``; False if already known."""
        data = wire.encode(ev)
        key = wire.content_id(data)
        if key in self._items:
            return False
        self._counters.evidence_seen += 1
        bump(self.offenders, ev.vote_a.signer)
        self._items[key] = data
        while len(self._items) > EVIDENCE_CAPACITY:
            self._items.popitem(last=False)
        return True

    def all(self) -> tuple[bytes, ...]:
        return tuple(self._items.values())


class Verdicts:
    """The validity cache: value checks' verdicts (and payloads) by value id, and what waits on them."""

    def __init__(self) -> None:
        self._known: OrderedDict[bytes, tuple[bool, object]] = OrderedDict()
        self._parked: dict[bytes, list[PeerMessage | CertificateIn]] = {}
        self._checking: dict[bytes, Candidate] = {}  # the candidates of the checks running

    def __contains__(self, value_id: bytes) -> bool:
        return value_id in self._known

    def get(self, value_id: bytes) -> tuple[bool, object] | None:
        return self._known.get(value_id)

    def park(self, value_id: bytes, item: PeerMessage | CertificateIn, candidate: Candidate) -> bool:
        """Hold ``item`` until the verdict; True if a check must be requested (the first to wait)."""
        waiting = self._parked.get(value_id)
        first = waiting is None
        if waiting is None:
            self._parked[value_id] = waiting = []
            self._checking[value_id] = candidate
        if sum(len(v) for v in self._parked.values()) < PARKED_CAPACITY:
            waiting.append(item)
        return first

    def settle(self, value_id: bytes, ok: bool, payload: object) -> list[PeerMessage | CertificateIn]:
        """Record a verdict; return the inputs that waited for it."""
        self._known[value_id] = (ok, payload)
        while len(self._known) > VERDICTS_CAPACITY:
            self._known.popitem(last=False)
        self._checking.pop(value_id, None)
        return self._parked.pop(value_id, [])

    def checking(self) -> list[Candidate]:
        """The candidates whose check runs (their proposal heard, not yet in the instance)."""
        return list(self._checking.values())

    def clear(self) -> None:
        self._known.clear()
        self._parked.clear()
        self._checking.clear()

    def lookup(self, candidate: Candidate) -> None:
        """``Params.validate_value``: the verdict the check already returned."""
        got = self._known.get(value_id_of(candidate))
        if got is None:
            raise InternalError("a value reached the core before its check")
        if not got[0]:
            raise Reject("invalid_value")


class FutureBuffer:
    """Messages and certificates for epochs not started yet, bounded, oldest out first."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[bytes, PeerMessage | CertificateIn] = OrderedDict()
        self._capacity = capacity

    def hold(self, item: PeerMessage | CertificateIn) -> None:
        x = item.envelope if isinstance(item, PeerMessage) else item.certificate
        self._items[wire.content_id(wire.encode(x))] = item
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def take(self, epoch: int, *, certificates_only: bool = False) -> list[PeerMessage | CertificateIn]:
        """Remove and return what is held for ``epoch``, in arrival order."""
        out = []
        for key, held in list(self._items.items()):
            if certificates_only and not isinstance(held, CertificateIn):
                continue
            if _epoch_of(held) == epoch:
                del self._items[key]
                out.append(held)
        return out


def _on_timeout(driver: EpochDriver, item: TimeoutFired, now_ms: int) -> None:
    """A timeout of the running epoch fired. A propose timeout firing while the state still
    waits in that round's propose step, undecided, counts the slot against its proposer
    (``proposals_missed``)."""
    st = driver.state
    if st is None or st.params.epoch != item.epoch:
        return
    waiting = st.decision is None and st.round == item.round and st.step is Step.PROPOSE
    if item.kind is TimeoutKind.PROPOSE and waiting:
        p = st.params
        slot = proposer_for(p.validators, p.prev_cert_hash, p.epoch, item.round)
        bump(driver.counters.proposals_missed, slot)
    driver._apply(transition.on_timeout(st, item.kind, item.round, now_ms))


def _late_evidence(
    earlier: wire.Envelope | None, env: wire.Envelope, msg: ConsensusMessage, head: int
) -> DuplicateVoteEvidence | None:
    """Evidence from a double sign of an epoch already decided (before ``head``), whose state,
    which would have formed it, is gone; both envelopes passed the screen all the same."""
    if earlier is None or not isinstance(msg, Prevote | Precommit) or msg.epoch >= head:
        return None
    return make_evidence(earlier, env)


def bump(counts: dict[bytes, int], key: bytes) -> None:
    if key in counts or len(counts) < MAX_OFFENDERS:
        counts[key] = counts.get(key, 0) + 1


def decode_consensus(env: wire.Envelope) -> ConsensusMessage:
    """The proposal or vote an envelope carries (Reject for anything else)."""
    try:
        msg = wire.decode(env.body, CONSENSUS_MESSAGE_CAP)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    if not isinstance(msg, Proposal | Prevote | Precommit):
        raise Reject("unexpected_type")
    return msg


def signed_bytes(network_id: str, env: wire.Envelope, msg: ConsensusMessage) -> bytes:
    info = wire.info_of(type(msg))
    assert info.domain is not None
    return wire.signing_bytes(network_id, info.domain, info.type_id, env.body)


def shows_us_behind(driver: EpochDriver, msg: ConsensusMessage, now_ms: int) -> int | None:
    """The epoch to catch up to when a screened message shows its signer's chain ahead of ours.

    A validator signs for epoch E only after committing E - 1, so a vote or proposal for an
    epoch past our next one (and not past the one the clock runs) shows that E - 1 is
    committed somewhere: the caller catches up to it. Without this a node that restarted
    after the network's last commit would wait for good: gossip sends each certificate once,
    and the next one may wait for this node's own vote.
    """
    running_epoch = driver.config.clock.latest_due(now_ms) + 1
    if driver.head.next_epoch < msg.epoch <= running_epoch:
        return msg.epoch - 1
    return None


def screen_gossip(driver: EpochDriver, item: object, now_ms: int) -> int | None:
    """Gossip intake of a decoded consensus item: the epoch to catch up to, or None.

    Envelopes are screened (:meth:`EpochDriver.screen`, :func:`screen_epoch`) and may show us
    behind (:func:`shows_us_behind`); certificates go through :func:`screen_certificate`;
    evidence passes. Every Ignore raised is counted by code in ``driver.counters.ignore_codes``.

    Raises:
        Reject: ``unexpected_type``, or what the screens raise.
        Ignore: what the screens raise.
    """
    try:
        if isinstance(item, wire.Envelope):
            msg = driver.screen(item)
            screen_epoch(driver, msg, now_ms)
            return shows_us_behind(driver, msg, now_ms)
        if isinstance(item, Certificate):
            return screen_certificate(driver, item, now_ms)
        if not isinstance(item, DuplicateVoteEvidence):
            raise Reject("unexpected_type", type(item).__name__)
    except Ignore as exc:
        _count_ignore(driver, exc)
        raise
    return None


def _count_ignore(driver: EpochDriver, exc: Ignore) -> None:
    codes = driver.counters.ignore_codes
    codes[exc.code] = codes.get(exc.code, 0) + 1


def screen_epoch(driver: EpochDriver, msg: ConsensusMessage, now_ms: int) -> None:
    """Gossip intake of a screened proposal or vote: drop one too far ahead of the clock.

    No honest validator signs for an epoch the clock has not reached (it signs for E once E - 1
    is committed, and the clock runs E by then), so a message more than FUTURE_EPOCHS past
    the running epoch is noise the driver would only drop: dropped here, it is not forwarded
    either. Nobody is charged: a forwarder may only relay it, and a signed vote for a future
    epoch proves no fault (the signer's clock may be wrong).

    Raises:
        Ignore: ``vote_from_the_future``.
    """
    running_epoch = driver.config.clock.latest_due(now_ms) + 1
    if msg.epoch > running_epoch + FUTURE_EPOCHS:
        raise Ignore("vote_from_the_future", f"epoch {msg.epoch} while {running_epoch} runs")


def screen_certificate(driver: EpochDriver, cert: Certificate, now_ms: int) -> int | None:
    """Gossip intake of a certificate; returns its epoch when it is past our next one, else None.

    Only a certificate for our next epoch can be checked here (the validator set of a later one
    is not known yet): it is verified in full, so a forged one is a proven fault of the peer
    that forwarded it and goes no further. One for a later epoch, not past the one the clock
    is running, shows that the peer is ahead: the caller catches up (gossip sends each
    certificate once, so a node that missed the one of its next epoch would wait for good)
    and drops it unforwarded, at no one's cost.

    Raises:
        Ignore: ``old_certificate``; ``certificate_from_the_future`` (an epoch our clock has
            not reached: nothing to chase, nor proof of a fault).
        Reject: what :func:`verify_certificate` raises, for our next epoch.
    """
    head, config = driver.head, driver.config
    if _commit_is_ahead(driver, cert.epoch, now_ms):
        return cert.epoch
    verify_certificate(
        cert,
        head.validators,
        config.network_id,
        head.prev_cert_hash,
        verify=driver.verify,
        quorum=config.rules.quorum,
    )
    return None


def _commit_is_ahead(driver: EpochDriver, epoch: int, now_ms: int, *, writing_is_old: bool = False) -> bool:
    """The epoch screen of a gossiped certificate or notice: True when ``epoch`` is past our next one.

    Raises:
        Ignore: ``old_certificate`` (with ``writing_is_old``, also our next epoch while its commit
            is being written); ``certificate_from_the_future`` (an epoch our clock has not reached).
    """
    head = driver.head
    writing = writing_is_old and epoch == head.next_epoch and driver.pending_commit() is not None
    if epoch < head.next_epoch or writing:
        raise Ignore("old_certificate")
    running_epoch = driver.config.clock.latest_due(now_ms) + 1
    if epoch > running_epoch:
        raise Ignore("certificate_from_the_future", f"epoch {epoch} while {running_epoch} runs")
    return epoch > head.next_epoch


def screen_any(driver: EpochDriver, item: object, now_ms: int) -> tuple[object | None, int | None]:
    """Gossip intake of a decoded consensus item: (what the pump hands the driver, the epoch to catch up to).

    A :class:`CommitNotice` becomes the certificate it stands for, or None
    (:func:`screen_notice`); anything else goes through :func:`screen_gossip` as it is.
    """
    if isinstance(item, CommitNotice):
        return screen_notice(driver, item, now_ms)
    return item, screen_gossip(driver, item, now_ms)


def gossip_form(item: wire.Envelope | Certificate | DuplicateVoteEvidence) -> object:
    """What a :class:`Publish` puts on the wire: a certificate as its notice (the value stays home)."""
    return notice_of(item) if isinstance(item, Certificate) else item


def screen_notice(
    driver: EpochDriver, notice: CommitNotice, now_ms: int
) -> tuple[Certificate | None, int | None]:
    """Gossip intake of a commit notice: the certificate it stands for, or the epoch to catch up to.

    One for our next epoch is verified in full (a forged one is a proven fault
    of the forwarder); if this node holds the decided candidate (it heard the
    proposal), the notice becomes that certificate (forwarded, then fed as a
    :class:`CertificateIn`), else the node fetches the certificate from the
    sender. One for a later epoch, not past the one the clock runs, cannot be
    verified yet: it shows the peer ahead, and the node catches up. The caller
    forwards neither of those two, at no one's cost, as with a certificate.

    Raises:
        Ignore: ``old_certificate``, ``certificate_from_the_future`` (counted in
            ``driver.counters.ignore_codes``).
        Reject: what :func:`verify_notice` raises, for our next epoch.
    """
    head, config = driver.head, driver.config
    try:  # our next epoch being written is as good as old
        if _commit_is_ahead(driver, notice.epoch, now_ms, writing_is_old=True):
            return None, notice.epoch
    except Ignore as exc:
        _count_ignore(driver, exc)
        raise
    verify_notice(
        notice,
        head.validators,
        config.network_id,
        head.prev_cert_hash,
        verify=driver.verify,
        quorum=config.rules.quorum,
    )
    for cand in held_candidates(driver, notice.epoch):
        cert = certificate_from(notice, cand)
        if cert is not None:
            return cert, None
    return None, notice.epoch


def held_candidates(driver: EpochDriver, epoch: int) -> list[Candidate]:
    """The candidates this node heard proposed (any round) in its running instance of ``epoch``,
    including those whose check still runs (:func:`certificate_from` matches epoch and id)."""
    st = driver.state
    out = driver.verdicts.checking()
    if st is None or st.params.epoch != epoch:
        return out
    out += [proposal.candidate for proposal, _ in st.proposals.values()]
    if st.valid_value is not None:
        out.append(st.valid_value)
    return out


def screen_envelope(
    env: wire.Envelope, network_id: str, head: Head, verify: SignatureVerifier
) -> ConsensusMessage:
    """Decode a gossiped proposal or vote and verify it (once per node, through the node's cache).

    Raises:
        Reject: ``wrong_network``, ``malformed``, ``unexpected_type``,
            ``bad_signature``, or ``unknown_validator`` for the epoch whose
            validator set is known (the next one to decide): forwarding such
            a message is a proven fault of the peer.
        Ignore: a non-validator in another epoch (our set may be stale).
    """
    if env.network_id != network_id:
        raise Reject("wrong_network")
    msg = decode_consensus(env)
    if head.validators.power_of(env.signer) == 0:
        if msg.epoch == head.next_epoch:
            raise Reject("unknown_validator")
        raise Ignore("unknown_validator", f"epoch {msg.epoch}")
    verify(env.signer, signed_bytes(network_id, env, msg), env.signature)
    return msg


# Internal continuations queued among the requests (depth-first order).
@dataclass(frozen=True, slots=True)
class _Feed:
    input: Input


@dataclass(frozen=True, slots=True)
class _Own:
    envelope: wire.Envelope


@dataclass(frozen=True, slots=True)
class _Tagged:
    """A request that belongs to one instance: dropped once that instance is over."""

    epoch: int
    request: Request


Result = tuple[EpochState, list[Effect]]


@dataclass(frozen=True, slots=True)
class _TryOpen:
    """Start the next instance if it is due and nothing else is running."""


_Item = Request | _Feed | _Own | _Tagged | _TryOpen


class EpochDriver:
    """One node's consensus above the single instance; see the module docstring.

    Args:
        config: network, own key, epoch clock, timeouts, rules, signature check.
        head: the committed ledger's head at start.
    """

    def __init__(self, config: DriverConfig, head: Head) -> None:
        self.config = config
        self.head = head
        self.state: EpochState | None = None
        self.counters = ConsensusCounters()
        self.signatures = config.signatures
        self.verify = config.signatures.verifier(self.counters.signatures)
        self.watch = ConflictWatch()
        self.evidence = EvidenceStore(self.counters)
        self._due = -(2**62)
        self._opening: int | None = None
        self._committing: Certificate | None = None
        self._future = FutureBuffer(config.future_capacity)
        self.verdicts = Verdicts()
        self._queue: deque[_Item] = deque()
        self._out: list[_Item] = []

    # ------------------------------------------------------------------ API

    def boot(self, now_ms: int) -> None:
        """Start the epoch clock at the latest epoch already due (a late node runs it at once)."""
        due = self.config.clock.latest_due(now_ms)
        self._step(lambda: self._on_due(EpochDue(due)))

    def feed(self, item: Input, now_ms: int) -> None:
        """Take one input; its requests come out of :meth:`next_request` before any queued ones."""
        self._step(lambda: self._handle(item, now_ms))

    def next_request(self, now_ms: int) -> Request | None:
        """The next request to execute, or None when there is nothing to do."""
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Feed):
                self.feed(item.input, now_ms)
            elif isinstance(item, _Own):
                self._step(lambda env=item.envelope: self._on_own(env, now_ms))  # type: ignore[misc]
            elif isinstance(item, _TryOpen):
                self._step(self._try_open)
            elif isinstance(item, _Tagged):
                if self.state is not None and self.state.params.epoch == item.epoch:
                    return self._hand_out(item.request)
            else:
                return self._hand_out(item)
        return None

    def screen(self, env: wire.Envelope) -> ConsensusMessage:
        """Gossip intake: see :func:`screen_envelope` (against the head's validator set)."""
        return screen_envelope(env, self.config.network_id, self.head, self.verify)

    @property
    def running_epoch(self) -> int | None:
        return None if self.state is None else self.state.params.epoch

    def pending_commit(self) -> Certificate | None:
        """The certificate handed out with :class:`Commit`, until :class:`Committed` is fed."""
        return self._committing

    # ------------------------------------------------------------ plumbing

    def _step(self, fn: Callable[[], None]) -> None:
        outer, self._out = self._out, []
        try:
            fn()
        except (Ignore, Reject) as exc:
            if isinstance(exc, Reject):
                self.counters.messages_rejected += 1
            else:
                self.counters.messages_ignored += 1
        finally:
            self._queue.extendleft(reversed(self._out))
            self._out = outer

    def _hand_out(self, request: Request) -> Request:
        if isinstance(request, Commit):
            self._committing = request.certificate
        return request

    def _handle(self, item: Input, now_ms: int) -> None:
        if isinstance(item, PeerMessage):
            self._on_peer(item, now_ms)
        elif isinstance(item, CertificateIn):
            self._on_certificate(item, now_ms)
        elif isinstance(item, EvidenceIn):
            self.evidence.keep(item.evidence)
        elif isinstance(item, TimeoutFired):
            _on_timeout(self, item, now_ms)
        elif isinstance(item, EpochDue):
            self._on_due(item)
        elif isinstance(item, InstanceOpened):
            self._open(item, now_ms)
        elif isinstance(item, ValueBuilt):
            self._on_built(item, now_ms)
        elif isinstance(item, ValueChecked):
            self._out.extend(_Feed(x) for x in self.verdicts.settle(item.value_id, item.ok, item.payload))
        elif isinstance(item, Signed):
            self._on_signed(item.envelope)
        elif isinstance(item, SignDenied):
            self.counters.sign_refused += 1
        else:
            self._on_committed(item)

    def _apply(self, result: Result) -> None:
        state, effects = result
        self.state = state
        epoch = state.params.epoch
        for eff in effects:
            if isinstance(eff, Broadcast):
                self._out.append(_Tagged(epoch, Publish(eff.envelope)))
            elif isinstance(eff, ScheduleTimeout):
                self._out.append(SleepUntil(eff.at_ms, TimeoutFired(eff.epoch, eff.kind, eff.round)))
            elif isinstance(eff, BuildValue):
                self._out.append(_Tagged(epoch, BuildRequest(eff.epoch, eff.round, self.evidence.all())))
            elif isinstance(eff, SignProposal):
                self._out.append(_Tagged(epoch, SignDurably(eff.proposal)))
            elif isinstance(eff, SignVote):
                self._out.append(_Tagged(epoch, SignDurably(eff.vote, eff.lock)))
            elif isinstance(eff, Decide):
                self._out.append(_Tagged(epoch, Commit(eff.certificate, self._payload(eff.certificate))))
            else:
                self.evidence.keep(eff.evidence)
                self._out.append(_Tagged(epoch, Publish(eff.evidence)))

    # ---------------------------------------------------------- epochs

    def _on_due(self, item: EpochDue) -> None:
        if item.epoch > self._due:
            self._due = item.epoch
            nxt = item.epoch + 1
            self._out.append(SleepUntil(self.config.clock.due_ms(nxt), EpochDue(nxt)))
        self._out.append(_TryOpen())

    def _try_open(self) -> None:
        epoch = self.head.next_epoch
        if self.state is not None or self._opening is not None or self._committing is not None:
            return
        early = self._future.take(epoch, certificates_only=True)  # a certificate heard early decides it
        if early:
            self._out.append(_Feed(early[0]))
            return
        if epoch <= self._due:
            self._opening = epoch
            self._out.append(OpenInstance(epoch))

    def _open(self, item: InstanceOpened, now_ms: int) -> None:
        if item.epoch != self._opening:
            return
        self._opening = None
        if self.state is not None or item.epoch != self.head.next_epoch:
            return
        cfg, head = self.config, self.head
        me = cfg.me if cfg.me is not None and head.validators.power_of(cfg.me) > 0 else None
        params = Params(
            network_id=cfg.network_id,
            epoch=item.epoch,
            prev_cert_hash=head.prev_cert_hash,
            validators=head.validators,
            me=me,
            validate_value=self.verdicts.lookup,
            verify=self.verify,
            timeouts=cfg.timeouts,
            rules=cfg.rules,
        )
        state, effects = transition.start(params, now_ms, lock=item.lock, start_round=item.start_round)
        self.state = state
        # After a restart, what this key already signed goes out again, byte for byte, and counts.
        for env in item.resend:
            data = signed_bytes(cfg.network_id, env, decode_consensus(env))
            self.signatures.mark(env.signer, data, env.signature)
            self._out.extend((Publish(env), _Own(env)))
        self._apply((state, effects))
        self._out.extend(_Feed(held) for held in self._future.take(item.epoch))

    def _on_committed(self, item: Committed) -> None:
        cert = self._committing
        if cert is None or cert.epoch != item.epoch:
            raise InternalError("committed an epoch the driver did not hand out")
        self._committing = None
        self.head = item.head
        if self.state is None or self.state.decision != cert:
            self.counters.synced += 1
        self.state = None
        self.verdicts.clear()
        self.signatures.on_commit()
        self.watch.forget_before(item.epoch - WATCH_EPOCHS)
        self.counters.committed += 1
        self.counters.rounds_used += cert.round + 1
        self._out.extend((Publish(cert), _TryOpen()))

    # ---------------------------------------------------------- messages

    def _on_peer(self, item: PeerMessage, now_ms: int) -> None:
        env = item.envelope
        msg = self.screen(env)
        st = self.state
        head = self.head.next_epoch
        ev = _late_evidence(self.watch.see(env, msg), env, msg, head)
        if ev is not None and self.evidence.keep(ev):
            self._out.append(_Tagged(msg.epoch, Publish(ev)))
        if st is not None and msg.epoch == st.params.epoch:
            self._deliver(item, msg, st, now_ms)
        elif head <= msg.epoch <= head + FUTURE_EPOCHS:
            self._future.hold(item)
        else:
            raise Ignore("wrong_epoch", f"message for epoch {msg.epoch}, next is {head}")

    def _on_own(self, env: wire.Envelope, now_ms: int) -> None:
        st = self.state
        msg = decode_consensus(env)
        if st is None or msg.epoch != st.params.epoch:
            return
        # A re-proposed lock restored after a restart was never checked in this process.
        if isinstance(msg, Proposal) and self._wait_for_check(msg.candidate, PeerMessage(env)):
            return
        self._apply(transition.on_message(st, env, now_ms))

    def _on_signed(self, env: wire.Envelope) -> None:
        self.counters.signed += 1
        msg = decode_consensus(env)
        self.signatures.mark(env.signer, signed_bytes(self.config.network_id, env, msg), env.signature)
        self.watch.see(env, msg)
        self._out.extend((Publish(env), _Own(env)))

    def _deliver(self, item: PeerMessage, msg: ConsensusMessage, st: EpochState, now_ms: int) -> None:
        p = st.params
        if isinstance(msg, Proposal):
            cand = msg.candidate
            if (
                cand.epoch == p.epoch
                and cand.prev_cert_hash == p.prev_cert_hash
                and item.envelope.signer == proposer_for(p.validators, p.prev_cert_hash, p.epoch, msg.round)
                and self._wait_for_check(cand, item)
            ):
                return
        self._apply(transition.on_message(st, item.envelope, now_ms))

    def _on_certificate(self, item: CertificateIn, now_ms: int) -> None:
        cert, head, st = item.certificate, self.head, self.state
        if cert.epoch < head.next_epoch or self._committing is not None:
            raise Ignore("old_certificate")
        if cert.epoch > head.next_epoch:
            if cert.epoch > head.next_epoch + FUTURE_EPOCHS:
                raise Ignore("certificate_too_far")
            self._future.hold(item)
            return
        params = st.params if st is not None else None
        if params is not None and st is not None and st.decision is not None:
            raise Ignore("already_decided")
        try:
            verify_certificate(
                cert,
                head.validators,
                self.config.network_id,
                head.prev_cert_hash,
                verify=self.verify,
                quorum=self.config.rules.quorum,
            )
        except Reject as exc:
            if item.peer is not None:
                self._out.append(PenalisePeer(item.peer, exc.code))
            raise
        if self._wait_for_check(cert.candidate, item):
            return
        if st is not None:
            self._apply(transition.on_certificate(st, cert, now_ms))
            return
        ok, payload = self.verdicts.get(cert.value_id) or (False, None)
        if not ok:
            raise Reject("invalid_value")
        self._out.append(Commit(cert, payload))

    def _on_built(self, item: ValueBuilt, now_ms: int) -> None:
        st = self.state
        if st is None or st.params.epoch != item.epoch:
            return
        cand = Candidate(item.epoch, st.params.prev_cert_hash, item.value)
        self.verdicts.settle(value_id_of(cand), True, item.payload)  # built to check: no re-check
        self._apply(transition.on_value(st, item.round, item.value, now_ms))

    # ---------------------------------------------------------- buffers and verdicts

    def _wait_for_check(self, cand: Candidate, item: PeerMessage | CertificateIn) -> bool:
        """True if ``item`` must wait for the verdict on ``cand`` (a check is then requested)."""
        vid = value_id_of(cand)
        if vid in self.verdicts:
            return False
        if self.verdicts.park(vid, item, cand):
            self._out.append(CheckValue(cand))
        return True

    def _payload(self, cert: Certificate) -> object:
        got = self.verdicts.get(cert.value_id)
        return None if got is None else got[1]


def _epoch_of(item: PeerMessage | CertificateIn) -> int:
    if isinstance(item, CertificateIn):
        return item.certificate.epoch
    return decode_consensus(item.envelope).epoch
