"""The consensus shell: one loop owns the running epoch's Tendermint instance.

Peer messages (proposals, votes, certificates, evidence from the consensus
topic), timeouts and the epoch clock arrive on one bounded channel; the loop
feeds them to the pure core (:mod:`depin_p2p.consensus.transition`) and
executes the effects in order:

* ``SignProposal`` / ``SignVote``: the signer persists (synced) and signs,
  then the envelope is broadcast and fed back to the core — persist before
  you speak;
* ``BuildValue``: the proposer builds the epoch content from its proof pool
  (:func:`~depin_p2p.consensus.value.build_content`);
* ``ScheduleTimeout``: a timer task posts the timeout back to the channel;
* ``Decide``: the content's ledger changes, the certificate, the value and
  the chain link commit in one LMDB write transaction; the certificate is
  then gossiped so nodes that missed votes decide too;
* ``ReportEvidence``: kept for a later value (and gossiped).

Epoch ``e``'s instance starts when epoch ``e`` ends (plus a short grace for
late proofs) and once ``e - 1`` is committed. A node that is behind fetches
certificates by range over ``/sync/1`` (:meth:`ConsensusService.catch_up`),
verifies each against its own validator set and re-checks the value, then
joins the live round.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import transition
from depin_p2p.consensus.signer import Signer, SignRefused
from depin_p2p.consensus.state import (
    Broadcast,
    BuildValue,
    Certificate,
    Decide,
    DuplicateVoteEvidence,
    Effect,
    EpochState,
    Params,
    Precommit,
    Prevote,
    Proposal,
    ReportEvidence,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    TimeoutKind,
    Timeouts,
    ValidatorSet,
    certificate_hash,
    verify_certificate,
)
from depin_p2p.consensus.value import EpochContent, ValueParams, build_content, check_content
from depin_p2p.errors import CodecError, DepinError, Ignore, Reject, TransportError, ValidationError
from depin_p2p.gossip.transport import CONSENSUS, SYNC, PeerId, Transport, protocol, topic
from depin_p2p.ledger.state import LedgerView, StateChanges, TxResult, validator_set
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness.pool import ProofPool

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.consensus")

T = TypeVar("T")

INBOX_CAPACITY = 4_096
FUTURE_BUFFER = 2_048  # messages for the next epoch, held until its instance starts
EVIDENCE_CAPACITY = 64
SEEN_POSITIONS = 8_192  # (signer, type, epoch, round) -> body id of signed messages seen, for /status
MAX_OFFENDERS = 256
SYNC_BATCH = 4  # certificates per sync response (each may be ~900 kB)
SYNC_TIMEOUT_S = 10.0
MAX_SYNC_RESPONSE = 4 * 1024 * 1024
CONSENSUS_MESSAGE_CAP = wire.MAX_MESSAGE_BYTES


@wire.message(type_id=90)
@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Ask a peer for the certificates of epochs ``first..last`` (inclusive)."""

    first: wire.U64
    last: wire.U64


@wire.message(type_id=91)
@dataclass(frozen=True, slots=True)
class SyncResponse:
    """Encoded certificates, in epoch order, starting at the requested first epoch."""

    certificates: Annotated[tuple[bytes, ...], wire.MaxLen(SYNC_BATCH)]


class ReadView(LedgerView, Protocol):
    def last_epoch(self) -> int: ...
    def get_certificate(self, epoch: int) -> bytes | None: ...


class NodeLedger(Protocol):
    """What consensus needs of the ledger (``LedgerStore``; ``MemoryLedger`` in simulations)."""

    def read(self, fn: Callable[[ReadView], T]) -> T: ...

    async def commit_epoch_async(
        self,
        changes: StateChanges,
        certificate: bytes,
        epoch_value: bytes,
        certificate_hash: bytes | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _Peer:
    envelope: wire.Envelope


@dataclass(frozen=True, slots=True)
class _Cert:
    certificate: Certificate


@dataclass(frozen=True, slots=True)
class _Timeout:
    epoch: int
    kind: TimeoutKind
    round: int


@dataclass(frozen=True, slots=True)
class _EpochEnded:
    epoch: int


_Input = _Peer | _Cert | _Timeout | _EpochEnded


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


class ConsensusService:
    """Runs one Tendermint instance per epoch; see the module docstring.

    Args:
        network_id: our network.
        clock: the node's clock.
        schedule: epoch boundaries.
        transport: the consensus topic, sync requests, peers.
        ledger: the committed state (read, and atomic epoch commits).
        signer: this validator's persist-first signer, or None for an observer.
        pool: the proofs this node heard (the proposer's raw material).
        value_params: network parameters for building and checking values.
        timeouts: round timeouts.
        grace_ms: wait after an epoch ends before starting its instance (late proofs).
        pending_txs: the transactions to include when proposing (in order).
        on_commit: called with each committed epoch, after the write.
        on_tx_results: called with each committed epoch and what it did with
            each of its transactions (the transaction pool's feedback).
        sign_in_thread: run the signer (a synced LMDB write) in a worker thread;
            False only for simulations with an in-memory sign-state, where a
            thread would let trio's autojump clock skip ahead.
    """

    def __init__(
        self,
        *,
        network_id: str,
        clock: Clock,
        schedule: EpochSchedule,
        transport: Transport,
        ledger: NodeLedger,
        signer: Signer | None,
        pool: ProofPool,
        value_params: ValueParams,
        timeouts: Timeouts | None = None,
        grace_ms: int = 500,
        pending_txs: Callable[[], Sequence[wire.Envelope]] = tuple,
        on_commit: Callable[[int], None] = lambda epoch: None,
        on_tx_results: Callable[[int, Sequence[TxResult]], None] = lambda epoch, results: None,
        sign_in_thread: bool = True,
    ) -> None:
        self._net = network_id
        self._clock = clock
        self._schedule = schedule
        self._transport = transport
        self._ledger = ledger
        self._signer = signer
        self._pool = pool
        self._value_params = value_params
        self._timeouts = timeouts or Timeouts()
        self._grace_ms = grace_ms
        self._pending_txs = pending_txs
        self._on_commit = on_commit
        self._on_tx_results = on_tx_results
        self._sign_in_thread = sign_in_thread
        self._topic = topic(network_id, CONSENSUS)
        self._sync_protocol = protocol(network_id, SYNC)
        self._send, self._inbox = trio.open_memory_channel[_Input](INBOX_CAPACITY)
        self._state: EpochState | None = None
        self._checked: dict[bytes, StateChanges] = {}
        self._future: OrderedDict[bytes, wire.Envelope] = OrderedDict()
        self._evidence: OrderedDict[bytes, bytes] = OrderedDict()
        self._ended = 0  # the latest epoch whose end this node has seen
        self._commit_lock = trio.Lock()
        self._positions: OrderedDict[tuple[bytes, int, int, int], bytes] = OrderedDict()
        self.conflicting_signers: dict[bytes, int] = {}  # validly signed, same step, different bodies
        self.evidence_offenders: dict[bytes, int] = {}  # the signer each new evidence names
        self.counters = ConsensusCounters()
        self.committed = trio.Event()  # replaced after each commit; tests and the node wait on it

    # ------------------------------------------------------------------ info

    @property
    def running_epoch(self) -> int | None:
        return None if self._state is None else self._state.params.epoch

    @property
    def running_round(self) -> int | None:
        return None if self._state is None else self._state.round

    def last_epoch(self) -> int:
        return self._ledger.read(lambda v: v.last_epoch())

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, serve sync, catch up, and run epochs until cancelled.

        Cancellation: the running instance is dropped; what was signed is in
        the sign-state, so a restart re-sends identical messages or nothing.
        """
        self._transport.set_handler(self._sync_protocol, self._serve_sync, max_request_bytes=64)
        channel = await self._transport.subscribe(self._topic, self._validate_gossip, capacity=INBOX_CAPACITY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, channel)
            nursery.start_soon(self._epoch_clock)
            task_status.started()
            await self._loop(nursery)

    async def _pump(self, channel: trio.MemoryReceiveChannel[object]) -> None:
        async with channel:
            async for msg in channel:
                item = self._decode_topic(msg.data)  # type: ignore[attr-defined]
                if isinstance(item, wire.Envelope):
                    await self._send.send(_Peer(item))
                elif isinstance(item, Certificate):
                    await self._send.send(_Cert(item))
                elif isinstance(item, DuplicateVoteEvidence):
                    self._keep_evidence(item)

    async def _epoch_clock(self) -> None:
        # Begin with the latest epoch already over (plus grace): a node (re)started
        # mid-epoch runs the instance that is due at once, not one epoch later.
        epoch = max(1, self._schedule.epoch_at(self._clock.now_ms() - self._grace_ms) - 1)
        while True:
            await self._clock.sleep_until_ms(self._schedule.end_of(epoch) + self._grace_ms)
            await self._send.send(_EpochEnded(epoch))
            epoch += 1

    # ------------------------------------------------------------- gossip

    def _decode_topic(self, data: bytes) -> object:
        try:
            return wire.decode(data, CONSENSUS_MESSAGE_CAP)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None

    def _validate_gossip(self, peer: PeerId, data: bytes) -> None:
        """Topic validator: well-formed consensus messages of our network only (signatures: the core)."""
        item = self._decode_topic(data)
        if isinstance(item, wire.Envelope):
            if item.network_id != self._net:
                raise Reject("wrong_network")
            try:
                inner = wire.peek_type_id(item.body, CONSENSUS_MESSAGE_CAP)
            except CodecError as exc:
                raise Reject("malformed", str(exc)) from None
            if wire.registered_types()[inner].cls not in (Proposal, Prevote, Precommit):
                raise Reject("unexpected_type")
            return
        if not isinstance(item, Certificate | DuplicateVoteEvidence):
            raise Reject("unexpected_type", type(item).__name__)

    def _keep_evidence(self, ev: DuplicateVoteEvidence) -> None:
        data = wire.encode(ev)
        key = wire.content_id(data)
        if key not in self._evidence:
            self.counters.evidence_seen += 1
            _bump(self.evidence_offenders, ev.vote_a.signer)
            self._evidence[key] = data
            while len(self._evidence) > EVIDENCE_CAPACITY:
                self._evidence.popitem(last=False)

    async def _publish(self, item: object) -> None:
        await self._transport.publish(self._topic, wire.encode(item))

    # --------------------------------------------------------------- loop

    async def _loop(self, nursery: trio.Nursery) -> None:
        async for item in self._inbox:
            try:
                await self._handle(item, nursery)
                # A commit can leave the next epoch already due (this node was behind):
                # start it now, or the node would stay an epoch behind for good.
                await self._maybe_start(nursery)
            except (Ignore, Reject) as exc:
                if isinstance(exc, Reject):
                    self.counters.messages_rejected += 1
                else:
                    self.counters.messages_ignored += 1
                log.debug("consensus.input.dropped", code=exc.code, detail=exc.detail)

    async def _handle(self, item: _Input, nursery: trio.Nursery) -> None:
        if isinstance(item, _EpochEnded):
            self._ended = max(self._ended, item.epoch)
            await self._maybe_start(nursery)
            return
        state = self._state
        if isinstance(item, _Timeout):
            if state is not None and state.params.epoch == item.epoch:
                await self._apply(*transition.on_timeout(state, item.kind, item.round, self._now()), nursery)
            return
        if isinstance(item, _Cert):
            await self._on_certificate(item.certificate, nursery)
            return
        env = item.envelope
        msg = _consensus_message(env)
        epoch = msg.epoch
        self._watch_conflicts(env, msg)
        if state is not None and epoch == state.params.epoch:
            await self._apply(*transition.on_message(state, env, self._now()), nursery)
        elif epoch > self.last_epoch():
            self._future[wire.content_id(wire.encode(env))] = env
            while len(self._future) > FUTURE_BUFFER:
                self._future.popitem(last=False)

    def _now(self) -> int:
        return self._clock.now_ms()

    def _watch_conflicts(self, env: wire.Envelope, msg: Proposal | Prevote | Precommit) -> None:
        """Count signers seen signing two different messages for one (type, epoch, round).

        An observation for ``/status`` (the crash test reads it), covering
        proposals too, which duplicate-vote evidence does not. Only validly
        signed envelopes count; the window is the last ``SEEN_POSITIONS`` positions.
        """
        info = wire.info_of(type(msg))
        assert info.domain is not None
        wire.open_envelope(env, network_id=self._net, domain=info.domain, max_size=CONSENSUS_MESSAGE_CAP)
        key = (env.signer, info.type_id, msg.epoch, msg.round)
        body_id = wire.content_id(env.body)
        seen = self._positions.get(key)
        if seen is None:
            self._positions[key] = body_id
            while len(self._positions) > SEEN_POSITIONS:
                self._positions.popitem(last=False)
        elif seen != body_id:
            _bump(self.conflicting_signers, env.signer)
            log.warning("consensus.conflict.seen", signer=env.signer.hex(), epoch=msg.epoch, round=msg.round)

    async def _maybe_start(self, nursery: trio.Nursery) -> None:
        """Start the next epoch's instance if that epoch has ended and its predecessor is committed."""
        if self._state is not None:
            return
        epoch = self.last_epoch() + 1
        if epoch > self._ended:
            return
        self._pool.prune(epoch - 1)
        params = self._params(epoch)
        signer = self._signer
        lock = signer.lock(epoch) if signer is not None else None
        start_round = signer.resume_round(epoch) if signer is not None else 0
        state, effects = transition.start(params, self._now(), lock=lock, start_round=start_round)
        log.info("consensus.epoch.started", epoch=epoch, round=state.round)
        # After a restart, what this key already signed goes out again, byte for byte.
        resend = signer.last_signed(epoch) if signer is not None else ()
        await self._apply(state, effects, nursery)
        for env in resend:
            await self._publish(env)
        for key, env in list(self._future.items()):
            current = self._current()
            if _consensus_message(env).epoch == epoch and current is not None:
                del self._future[key]
                await self._apply(*transition.on_message(current, env, self._now()), nursery)

    def _params(self, epoch: int) -> Params:
        def read(view: ReadView) -> tuple[bytes, ValidatorSet]:
            return view.last_certificate_hash(), ValidatorSet.of(validator_set(view))

        prev, validators = self._ledger.read(read)
        me = self._signer.public_key if self._signer is not None else None
        if me is not None and validators.power_of(me) == 0:
            me = None  # not (or no longer) a validator: observe only
        return Params(
            network_id=self._net,
            epoch=epoch,
            prev_cert_hash=prev,
            validators=validators,
            me=me,
            validate_value=self._validate_candidate_value,
            timeouts=self._timeouts,
        )

    def _validate_candidate_value(self, candidate: object) -> None:
        """The core's injected value check: decode, re-check everything, remember the changes."""
        value: bytes = candidate.value  # type: ignore[attr-defined]
        try:
            content = wire.decode_as(value, EpochContent, CONSENSUS_MESSAGE_CAP)
        except CodecError as exc:
            raise Reject("malformed_value", str(exc)) from None
        changes = self._ledger.read(lambda v: check_content(v, content, self._value_params))
        self._checked[wire.content_id(value)] = changes

    # ------------------------------------------------------------ effects

    async def _apply(self, state: EpochState, effects: list[Effect], nursery: trio.Nursery) -> None:
        self._state = state
        for eff in effects:
            if self._current() is None:
                return  # decided and committed: the rest belongs to a finished instance
            await self._execute(eff, nursery)

    def _current(self) -> EpochState | None:
        """The running instance, re-read after awaits (a commit may have ended it)."""
        return self._state

    async def _execute(self, eff: Effect, nursery: trio.Nursery) -> None:
        state = self._state
        assert state is not None
        if isinstance(eff, Broadcast):
            await self._publish(eff.envelope)
        elif isinstance(eff, ScheduleTimeout):
            nursery.start_soon(self._timer, eff)
        elif isinstance(eff, BuildValue):
            value = self._build(eff.epoch)
            new_state, effects = transition.on_value(state, eff.round, value, self._now())
            await self._apply(new_state, effects, nursery)
        elif isinstance(eff, SignProposal | SignVote):
            await self._sign_and_send(eff, nursery)
        elif isinstance(eff, Decide):
            await self._commit(eff.certificate)
        elif isinstance(eff, ReportEvidence):
            self._keep_evidence(eff.evidence)
            await self._publish(eff.evidence)

    async def _sign_and_send(self, eff: SignProposal | SignVote, nursery: trio.Nursery) -> None:
        signer = self._signer
        if signer is None:
            return
        msg = eff.proposal if isinstance(eff, SignProposal) else eff.vote
        lock = eff.lock if isinstance(eff, SignVote) else None
        try:
            if self._sign_in_thread:
                # The signer's synced LMDB write is blocking I/O: off the event loop.
                env = await trio.to_thread.run_sync(signer.sign, msg, lock)
            else:
                env = signer.sign(msg, lock)
        except SignRefused as exc:
            self.counters.sign_refused += 1
            log.info("consensus.sign.refused", code=exc.code)
            return
        self.counters.signed += 1
        self._watch_conflicts(env, msg)
        await self._publish(env)
        state = self._state
        if state is not None:
            try:
                result = transition.on_message(state, env, self._now())
            except ValidationError:
                # Our own message already known (after a restart, a restored lock's proof of
                # lock holds our prevote): nothing new, and the effects after it still run.
                return
            await self._apply(*result, nursery)

    async def _timer(self, eff: ScheduleTimeout) -> None:
        await self._clock.sleep_until_ms(eff.at_ms)
        await self._send.send(_Timeout(eff.epoch, eff.kind, eff.round))

    def _build(self, epoch: int) -> bytes:
        collected = self._pool.collect(epoch)
        built = self._ledger.read(
            lambda v: build_content(
                v,
                epoch=epoch,
                beacons=collected.beacons,
                reports=collected.reports,
                attestations=collected.attestations,
                txs=tuple(self._pending_txs()),
                evidence=tuple(self._evidence.values()),
                params=self._value_params,
            )
        )
        value = wire.encode(built.content)
        self._checked[wire.content_id(value)] = built.changes
        log.info(
            "consensus.value.built",
            epoch=epoch,
            beacons=len(built.content.beacons),
            reports=len(built.content.reports),
            attestations=len(built.content.attestations),
            dropped=len(built.dropped),
        )
        return value

    async def _commit(self, cert: Certificate) -> None:
        # Catch-up runs in the node's bootstrap task, alongside this loop: one commit at a time,
        # and an epoch that the other path committed meanwhile is simply done.
        async with self._commit_lock:
            if cert.epoch <= self.last_epoch():
                if self._state is not None and self._state.params.epoch <= cert.epoch:
                    self._state = None
                return
            await self._commit_locked(cert)

    async def _commit_locked(self, cert: Certificate) -> None:
        value = cert.candidate.value
        changes = self._checked.get(wire.content_id(value))
        if changes is None:  # decided from a certificate whose value we never checked ourselves
            content = wire.decode_as(value, EpochContent, CONSENSUS_MESSAGE_CAP)
            changes = self._ledger.read(lambda v: check_content(v, content, self._value_params))
        await self._ledger.commit_epoch_async(changes, wire.encode(cert), value, certificate_hash(cert))
        epoch = cert.epoch
        self.counters.committed += 1
        self.counters.rounds_used += cert.round + 1
        log.info("consensus.epoch.committed", epoch=epoch, round=cert.round, root=changes.root.hex()[:16])
        self._state = None
        self._checked.clear()
        self._pool.prune(epoch)
        self._on_tx_results(epoch, changes.tx_results)
        self._on_commit(epoch)
        event, self.committed = self.committed, trio.Event()
        event.set()
        # If the next epoch has already ended (a late start, a backlog), start it right away
        # rather than at the next tick; through the inbox, so this instance's effects finish first.
        # (A full inbox is full of work: then the epoch clock's next tick starts it.)
        with contextlib.suppress(trio.WouldBlock):
            self._send.send_nowait(_EpochEnded(self._ended))
        await self._publish(cert)

    async def _on_certificate(self, cert: Certificate, nursery: trio.Nursery) -> None:
        state = self._state
        last = self.last_epoch()
        if cert.epoch <= last:
            return
        if state is not None and cert.epoch == state.params.epoch:
            await self._apply(*transition.on_certificate(state, cert, self._now()), nursery)
            return
        if cert.epoch == last + 1:
            # Not running it yet (our clock lags, or we are catching up): verify and commit.
            await self._commit_verified(cert)
            self.counters.synced += 1
            await self._maybe_start(nursery)

    async def _commit_verified(self, cert: Certificate) -> None:
        """Commit a certificate this node did not decide itself, after checking it like a light client.

        Raises Reject: the certificate does not verify against our validator set and chain
        link, or its value does not re-check against our ledger.
        """
        params = self._params(cert.epoch)
        verify_certificate(cert, params.validators, self._net, params.prev_cert_hash)
        self._validate_candidate_value(cert.candidate)
        await self._commit(cert)

    # --------------------------------------------------------------- sync

    async def _serve_sync(self, peer: PeerId, data: bytes) -> bytes:
        try:
            req = wire.decode_as(data, SyncRequest)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None
        last = min(req.last, req.first + SYNC_BATCH - 1)
        certs: list[bytes] = []
        size = 0
        for epoch in range(req.first, last + 1):
            cert = self._ledger.read(lambda v, e=epoch: v.get_certificate(e))  # type: ignore[misc]
            if cert is None or size + len(cert) > MAX_SYNC_RESPONSE - 1024:
                break
            certs.append(cert)
            size += len(cert)
        return wire.encode(SyncResponse(tuple(certs)))

    async def catch_up(self, peer: PeerId, up_to: int) -> int:
        """Fetch, verify and commit certificates from ``peer`` until ``up_to``; return epochs applied.

        Each certificate is verified against the validator set of our own
        ledger and its value re-checked before commit, so a lying peer can
        only waste our time (its answer raises Reject and we stop).

        Raises:
            TransportError: the peer did not answer.
            Reject: the peer sent something that does not verify.
        """
        applied = 0
        while self.last_epoch() < up_to:
            first = self.last_epoch() + 1
            data = await self._transport.request(
                peer,
                self._sync_protocol,
                wire.encode(SyncRequest(first, up_to)),
                timeout=SYNC_TIMEOUT_S,
                max_response_bytes=MAX_SYNC_RESPONSE,
            )
            try:
                response = wire.decode_as(data, SyncResponse, MAX_SYNC_RESPONSE)
            except CodecError as exc:
                raise Reject("malformed", str(exc)) from None
            if not response.certificates:
                break
            for raw in response.certificates:
                try:
                    cert = wire.decode_as(raw, Certificate, CONSENSUS_MESSAGE_CAP)
                except CodecError as exc:
                    raise Reject("malformed", str(exc)) from None
                if cert.epoch != self.last_epoch() + 1:
                    raise Reject("wrong_epoch", f"sync sent epoch {cert.epoch}")
                await self._commit_verified(cert)
                applied += 1
        self.counters.synced += applied
        return applied

    async def catch_up_from_any(self, peers: Sequence[PeerId], up_to: int) -> int:
        """Try :meth:`catch_up` with each peer in turn; peers that fail are skipped."""
        total = 0
        for peer in peers:
            try:
                total += await self.catch_up(peer, up_to)
            except (TransportError, DepinError) as exc:
                log.info("consensus.sync.peer_failed", peer=str(peer), error=str(exc))
                continue
            if self.last_epoch() >= up_to:
                break
        return total


def _bump(counts: dict[bytes, int], key: bytes) -> None:
    if key in counts or len(counts) < MAX_OFFENDERS:
        counts[key] = counts.get(key, 0) + 1


def _consensus_message(env: wire.Envelope) -> Proposal | Prevote | Precommit:
    """The proposal or vote an envelope carries (Reject for anything else)."""
    try:
        msg = wire.decode(env.body, CONSENSUS_MESSAGE_CAP)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    if not isinstance(msg, Proposal | Prevote | Precommit):
        raise Reject("unexpected_type")
    return msg
