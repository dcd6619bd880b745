"""The consensus loop's ledger work: the driver's build, check and commit requests, executed.

Values are built from the proof pool and checked against the committed
state; an epoch's changes, certificate and value commit in one LMDB write
transaction. With ``offload`` the reads and the write of a big value run in
worker threads (LMDB calls block); a small one (``inline_items`` proofs,
``inline_bytes`` encoded) runs on the event loop, as the sign-state write
does: the instance waits for it anyway, and a worker thread queues for the
GIL behind the loop's gossip work. Measured with ``bench/consensus.py`` (4
processes, 132 proofs, 28 kB values; medians of three alternating runs each
way): the check's p50 went from 12.0 ms in a thread to 8.0 ms on the loop,
the commit step's from 9.4 to 3.7 ms. A big value (a 32-node devnet at 3
radios carries ~2,800 reports, ~600 kB at ~215 B each) stays in a thread, so
the loop keeps answering pings and gossip meanwhile. Simulations
keep everything on the loop, where a thread would let trio's autojump clock
skip ahead.

The proposer builds ahead (:meth:`EpochLedger.build_ahead`): half the grace
before an instance it will open as round 0's proposer, it builds that value;
when the instance asks, the value is used if every input is still the same
(the chain head, the pool's proofs for the epoch, the pending transactions,
the evidence), else built again (``build_ahead_counts``: ``used``, ``stale``).
Beacons go out in an epoch's first half and the simulated radios report up
to 2 s later, so with the default 10 s epochs every proof is in by then (a
4-node devnet: 7 of 7 values used); with epochs as short as that delay,
reports still arrive during the grace and the value is built again
(``bench/consensus.py``'s 2 s epochs: 2 of 25 used).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import driver as d
from depin_p2p.consensus.state import Certificate, ValidatorSet, certificate_hash, proposer_for
from depin_p2p.consensus.sync import ReadView
from depin_p2p.consensus.value import Built, EpochContent, ValueParams, build_content, check_content
from depin_p2p.errors import CodecError, Reject
from depin_p2p.ledger.state import StateChanges, TxResult, validator_set
from depin_p2p.witness.pool import Collected, ProofPool

log = structlog.get_logger("depin_p2p.consensus")
T = TypeVar("T")

INLINE_BYTES = 64 * 1024  # a value checked and committed on the loop: ~13 ms of work here at most
INLINE_ITEMS = 300  # proofs in the pool a value is built from on the loop (~215 B each encoded)


class NodeLedger(Protocol):
    """What consensus needs of the ledger (``LedgerStore``; ``MemoryLedger`` in simulations)."""

    def read(self, fn: Callable[[ReadView], T]) -> T: ...

    def commit_epoch(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None: ...

    async def commit_epoch_async(
        self,
        changes: StateChanges,
        certificate: bytes,
        *,
        certificate_hash: bytes | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _BuildInputs:
    """What a value build reads besides the ledger view (whose head the built value names)."""

    epoch: int
    proofs: Collected
    txs: tuple[wire.Envelope, ...]
    evidence: tuple[bytes, ...]


class EpochLedger:
    """Builds, checks and commits epoch values for the consensus loop.

    Args:
        ledger: the committed state.
        pool: the proofs this node heard (the proposer's raw material); pruned on commit.
        value_params: network parameters for building and checking values.
        pending_txs: the transactions to propose, in order.
        on_tx_results: called after each commit with what it did with each transaction.
        on_commit: called with each committed epoch, after the write.
        offload: LMDB work on values bigger than ``inline_items`` / ``inline_bytes`` in worker threads.
    """

    def __init__(
        self,
        ledger: NodeLedger,
        pool: ProofPool,
        value_params: ValueParams,
        *,
        pending_txs: Callable[[], Sequence[wire.Envelope]],
        on_tx_results: Callable[[int, Sequence[TxResult]], None],
        on_commit: Callable[[int], None],
        offload: bool,
        inline_items: int = INLINE_ITEMS,
        inline_bytes: int = INLINE_BYTES,
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self._params = value_params
        self._pending_txs = pending_txs
        self._on_tx_results = on_tx_results
        self._on_commit = on_commit
        self._offload = offload
        self._inline_items, self._inline_bytes = inline_items, inline_bytes
        # Proofs and transactions our own proposals left out, by code (the metrics' and devnet's view).
        self.dropped_codes: dict[str, int] = {}
        self._ahead: tuple[_BuildInputs, Built] | None = None
        self._building_ahead: trio.Event | None = None
        self.build_ahead_counts = {"used": 0, "stale": 0}

    def head(self) -> d.Head:
        """The committed head: the next epoch, its chain link and its validator set."""

        def read(view: ReadView) -> d.Head:
            validators = ValidatorSet.of(validator_set(view))
            return d.Head(view.last_epoch() + 1, view.last_certificate_hash(), validators)

        return self.ledger.read(read)

    def last_epoch(self) -> int:
        return self.ledger.read(lambda v: v.last_epoch())

    async def _read(self, fn: Callable[[ReadView], T], *, inline: bool) -> T:
        if self._offload and not inline:
            return await trio.to_thread.run_sync(self.ledger.read, fn)
        return self.ledger.read(fn)

    def _inputs(self, epoch: int, evidence: Sequence[bytes]) -> _BuildInputs:
        return _BuildInputs(epoch, self.pool.collect(epoch), tuple(self._pending_txs()), tuple(evidence))

    async def _build(self, inputs: _BuildInputs) -> Built:
        got, txs, params = inputs.proofs, inputs.txs, self._params
        items = len(got.beacons) + len(got.reports) + len(got.attestations) + len(txs)
        return await self._read(
            lambda v: build_content(
                v,
                epoch=inputs.epoch,
                beacons=got.beacons,
                reports=got.reports,
                attestations=got.attestations,
                txs=txs,
                evidence=inputs.evidence,
                params=params,
            ),
            inline=items <= self._inline_items,
        )

    async def build(self, req: d.BuildRequest) -> d.ValueBuilt:
        if self._building_ahead is not None:
            await self._building_ahead.wait()
        inputs = self._inputs(req.epoch, req.evidence)
        ahead, self._ahead = self._ahead, None
        reuse = False
        if ahead is not None and ahead[0].epoch == req.epoch:
            prev = self.ledger.read(lambda v: v.last_certificate_hash())
            reuse = ahead[0] == inputs and ahead[1].content.ledger.prev_certificate_hash == prev
            self.build_ahead_counts["used" if reuse else "stale"] += 1
        built = ahead[1] if ahead is not None and reuse else await self._build(inputs)
        for dropped in built.dropped:
            self.dropped_codes[dropped.code] = self.dropped_codes.get(dropped.code, 0) + 1
        c = built.content
        n = {"beacons": len(c.beacons), "reports": len(c.reports), "attestations": len(c.attestations)}
        log.info("consensus.value.built", epoch=req.epoch, **n, dropped=len(built.dropped), ahead=reuse)
        return d.ValueBuilt(req.epoch, req.round, wire.encode(c), built.changes)

    async def build_ahead(
        self,
        clock: Clock,
        epochs: d.EpochClock,
        me: bytes,
        evidence: Callable[[], Sequence[bytes]],
        lead_ms: int,
    ) -> None:
        """Forever: ``lead_ms`` before each instance is due, build its value if ``me`` proposes its round 0.

        Only once the previous epoch is committed here (the value builds on it); a node behind
        builds when its instance asks, as without this.
        """
        epoch = max(1, epochs.latest_due(clock.now_ms()) + 1)  # (below 1 before the genesis)
        while True:
            await clock.sleep_until_ms(epochs.due_ms(epoch) - lead_ms)
            head = self.head()
            proposer = proposer_for(head.validators, head.prev_cert_hash, epoch, 0)
            if head.next_epoch == epoch and proposer == me:
                self._building_ahead = done = trio.Event()
                try:
                    inputs = self._inputs(epoch, evidence())
                    self._ahead = (inputs, await self._build(inputs))
                except Reject as exc:  # the epoch committed meanwhile (catch-up): nothing to propose
                    log.info("consensus.value.not_built_ahead", epoch=epoch, error=str(exc))
                finally:
                    self._building_ahead = None
                    done.set()
            epoch = max(epoch + 1, epochs.latest_due(clock.now_ms()) + 1)

    async def check(self, value: bytes, value_id: bytes) -> d.ValueChecked:
        try:
            content = wire.decode_as(value, EpochContent, d.CONSENSUS_MESSAGE_CAP)
            check = check_content if self._params.checked is None else self._params.checked.check
            changes = await self._read(
                lambda v: check(v, content, self._params, encoded=value),
                inline=len(value) <= self._inline_bytes,
            )
        except (CodecError, Reject) as exc:
            log.info("consensus.value.invalid", error=str(exc))
            return d.ValueChecked(value_id, False)
        return d.ValueChecked(value_id, True, changes)

    async def commit(self, cert: Certificate, payload: object) -> d.Committed:
        value = cert.candidate.value
        changes = payload
        if not isinstance(changes, StateChanges):  # not expected: the driver commits checked values
            changes = (await self.check(value, cert.value_id)).payload
            if not isinstance(changes, StateChanges):
                raise Reject("invalid_value", f"certificate of epoch {cert.epoch}")
        # The encoded certificate carries the value: the ledger stores it once, there.
        link = certificate_hash(cert)
        encoded = wire.encode(cert)
        if self._offload and len(encoded) <= self._inline_bytes:
            self.ledger.commit_epoch(changes, encoded, certificate_hash=link)  # ~4 ms, fsync included
        else:
            await self.ledger.commit_epoch_async(changes, encoded, certificate_hash=link)
        epoch = cert.epoch
        log.info("consensus.epoch.committed", epoch=epoch, round=cert.round, root=changes.root.hex()[:16])
        self.pool.prune(epoch)
        self._on_tx_results(epoch, changes.tx_results)
        self._on_commit(epoch)
        return d.Committed(epoch, self.head())
