"""The consensus shell: one trio loop feeds the epoch driver and executes its requests.

Every input (consensus-topic messages, certificates fetched by catch-up,
timers) arrives on one bounded inbox; the loop hands it to the pure
:class:`~depin_p2p.consensus.driver.EpochDriver` and runs what it asks for,
in order: publish, sleep until (one timer task), sign durably (the signer's
synced write: persist before you speak), build or check a value, commit (one
LMDB write transaction), penalise a peer. With ``offload_io`` the LMDB reads and the commit of a big
value run in worker threads (:mod:`~depin_p2p.consensus.ledger_io`); the sign-state write runs on
the loop (``_sign``). Catch-up (``sync``)
only fetches: certificates go through the same inbox, so this loop is the one writer.

The topic validator (:mod:`~depin_p2p.consensus.intake`) decodes and verifies each message once (the
driver's cache); a bad signature or a non-validator's vote is rejected there (the peer pays); one
showing us behind starts catch-up.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import driver as d
from depin_p2p.consensus import sync
from depin_p2p.consensus.intake import GossipIntake
from depin_p2p.consensus.ledger_io import EpochLedger, NodeLedger
from depin_p2p.consensus.signer import Signer, SignRefused, signed_fields
from depin_p2p.consensus.state import Certificate, Timeouts, value_id_of
from depin_p2p.consensus.steps import StepObserver, StepTimer
from depin_p2p.consensus.value import ValueParams
from depin_p2p.gossip.transport import CONSENSUS, SYNC, PeerId, Transport, protocol, topic
from depin_p2p.ledger.state import TxResult
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness.pool import ProofPool

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.consensus")
INBOX_CAPACITY = 4_096
ConsensusCounters = d.ConsensusCounters  # re-exported: /status reads it


class ConsensusService:
    """Runs one Tendermint instance per epoch through the driver; see the module docstring.

    Args: the node's ``network_id``, ``clock``, epoch ``schedule``, ``transport``, ``ledger``,
    ``signer`` (None for an observer), proof ``pool``, ``value_params``, round ``timeouts``,
    ``grace_ms`` after an epoch's end before its instance starts, ``pending_txs`` to propose,
    ``on_commit``/``on_tx_results`` after each commit, ``offload_io`` (LMDB work in worker
    threads; False in simulations, where a thread would let trio's autojump clock skip ahead),
    the node's ``signatures`` cache (value checks count theirs in ``value_signatures``), and
    ``observe_step`` for each timed step of an instance (:mod:`~depin_p2p.consensus.steps`).
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
        offload_io: bool = True,
        signatures: wire.SignatureCache | None = None,
        observe_step: StepObserver | None = None,
    ) -> None:
        self._clock, self._transport, self._signer, self._offload = clock, transport, signer, offload_io
        self._grace_ms = grace_ms
        signatures = wire.SignatureCache() if signatures is None else signatures  # (empty is falsy)
        self.value_signatures = wire.SignatureTally()
        value_params = replace(value_params, verify=signatures.verifier(self.value_signatures))
        self.ledger = EpochLedger(ledger, pool, value_params, pending_txs=pending_txs,
                                  on_tx_results=on_tx_results, on_commit=on_commit, offload=offload_io)
        self._topic = topic(network_id, CONSENSUS)
        self._sync_protocol = protocol(network_id, SYNC)
        self._send, self._inbox = trio.open_memory_channel[d.Input | trio.Event](INBOX_CAPACITY)
        self._timers: list[tuple[int, int, d.TimeoutFired | d.EpochDue]] = []
        self._timer_seq, self._wake = 0, trio.Event()
        self.steps = StepTimer(observe_step)
        clock_ = d.EpochClock(schedule.end_of(0) + grace_ms, schedule.epoch_length_ms)
        me = signer.public_key if signer is not None else None
        timeouts = timeouts or Timeouts.for_epoch(schedule.epoch_length_ms)
        config = d.DriverConfig(network_id, me, clock_, timeouts, signatures=signatures)
        self.driver = d.EpochDriver(config, self.ledger.head())
        self.counters = self.driver.counters
        self.conflicting_signers = self.driver.watch.conflicting_signers  # validly signed, same step
        self.evidence_offenders = self.driver.evidence.offenders  # the signer each new evidence names
        self.committed = trio.Event()  # replaced after each commit; tests and the node wait on it
        self.sync = sync.CatchUp(transport, self._sync_protocol, self._submit_synced, self.last_epoch)
        self.intake = GossipIntake(self.driver, clock, self.sync, self._send)

    @property
    def running_epoch(self) -> int | None:
        return self.driver.running_epoch

    @property
    def running_round(self) -> int | None:
        return None if self.driver.state is None else self.driver.state.round

    def last_epoch(self) -> int:
        return self.ledger.last_epoch()

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, serve sync, and run epochs until cancelled (then the running instance is
        dropped: what was signed is in the sign-state, so a restart re-sends it or nothing)."""
        self._transport.set_handler(
            self._sync_protocol, sync.make_server(self.ledger.ledger), max_request_bytes=sync.MAX_SYNC_REQUEST
        )
        channel = await self._transport.subscribe(self._topic, self.intake.validate, capacity=INBOX_CAPACITY)
        async with trio.open_nursery() as nursery:
            self.intake.nursery = nursery
            nursery.start_soon(self.intake.pump, channel)
            nursery.start_soon(self._timer)
            if self._signer is not None:  # the round-0 proposer's value, built before it is due
                nursery.start_soon(self._build_ahead, self._signer.public_key)
            self.driver.boot(self._clock.now_ms())
            task_status.started()
            await self._drain()
            async for item in self._inbox:
                if isinstance(item, trio.Event):
                    item.set()  # every input before it has been handled
                    continue
                self.driver.feed(item, self._clock.now_ms())
                await self._drain()

    async def _timer(self) -> None:
        """The one timer: posts each requested input back at its time."""
        while True:
            self._wake = trio.Event()
            if self._timers and self._clock.deadline_for(self._timers[0][0]) <= trio.current_time():
                await self._send.send(heapq.heappop(self._timers)[2])
                continue
            deadline = self._clock.deadline_for(self._timers[0][0]) if self._timers else float("inf")
            with trio.move_on_at(deadline):
                await self._wake.wait()

    async def _build_ahead(self, me: bytes) -> None:
        epochs, lead = self.driver.config.clock, self._grace_ms // 2
        await self.ledger.build_ahead(self._clock, epochs, me, self.driver.evidence.all, lead)

    # ------------------------------------------------------------ requests

    async def _drain(self) -> None:
        while (req := self.driver.next_request(self._clock.now_ms())) is not None:
            started = time.perf_counter()
            answer = await self._execute(req)
            self.steps.on_request(req, started, time.perf_counter())
            if answer is not None:
                self.driver.feed(answer, self._clock.now_ms())

    async def _execute(self, req: d.Request) -> d.Input | None:
        if isinstance(req, d.Publish):
            await self._transport.publish(self._topic, wire.encode(d.gossip_form(req.item)))
        elif isinstance(req, d.SleepUntil):
            self._timer_seq += 1
            heapq.heappush(self._timers, (req.at_ms, self._timer_seq, req.then))
            self._wake.set()
        elif isinstance(req, d.OpenInstance):
            return self._open(req.epoch)
        elif isinstance(req, d.BuildRequest):
            return await self.ledger.build(req)
        elif isinstance(req, d.CheckValue):
            return await self.ledger.check(req.candidate.value, value_id_of(req.candidate))
        elif isinstance(req, d.SignDurably):
            return await self._sign(req)
        elif isinstance(req, d.Commit):
            committed = await self.ledger.commit(req.certificate, req.payload)
            event, self.committed = self.committed, trio.Event()
            event.set()
            return committed
        else:
            self._transport.penalise(PeerId(req.peer), req.code)
        return None

    def _open(self, epoch: int) -> d.InstanceOpened:
        self.ledger.pool.prune(epoch - 1)
        s = self._signer
        start_round = s.resume_round(epoch) if s is not None else 0
        log.info("consensus.epoch.started", epoch=epoch, round=start_round)
        if s is None:
            return d.InstanceOpened(epoch)
        return d.InstanceOpened(epoch, s.lock(epoch), start_round, s.last_signed(epoch))

    async def _sign(self, req: d.SignDurably) -> d.Signed | d.SignDenied:
        if self._signer is None:
            return d.SignDenied("observer")
        # On the loop (one synced LMDB write, ~8 ms here): the next step waits for it anyway, and in a
        # worker thread it queued for the GIL behind libp2p, several times longer (README "Commit latency").
        try:
            env = self._signer.sign(req.message, req.lock)
        except SignRefused as exc:
            log.info("consensus.sign.refused", code=exc.code)
            return d.SignDenied(exc.code)
        log.info("consensus.vote.signed", **signed_fields(req.message, env))  # devnet's double-sign audit
        return d.Signed(env)

    # ------------------------------------------------------------ catch-up

    async def _submit_synced(self, certs: Sequence[Certificate], peer: PeerId) -> None:
        """Hand fetched certificates to the loop; return once it has handled them."""
        for cert in certs:
            await self._send.send(d.CertificateIn(cert, peer))
        barrier = trio.Event()
        await self._send.send(barrier)
        await barrier.wait()

    async def catch_up_from_any(self, peers: Sequence[PeerId], up_to: int) -> int:
        """Fetch certificates up to ``up_to`` from the first peers that have them; return epochs applied."""
        return await self.sync.from_any(peers, up_to)
