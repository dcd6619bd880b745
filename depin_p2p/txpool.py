"""The transaction pool: signed transactions waiting for an epoch value.

A transaction reaches the pool from the local API (``submit``) or from the
``/depin/<net>/tx/1`` gossip topic. Both paths run the same checks, one
line each (REJECT drops and penalises the forwarding peer; IGNORE drops):

- REJECT ``oversized``: more than :data:`MAX_TX_BYTES`.
- REJECT ``malformed`` / ``wrong_network`` / ``unexpected_type`` /
  ``wrong_domain`` / ``bad_signature`` / ``bad_public_key``: not an
  envelope of this network holding a ``Transfer``, ``RegisterDevice``,
  ``Stake`` or ``Unstake`` validly signed in the TX domain
  (:func:`depin_p2p.gossip.validation.validate_gossip_envelope`).
- IGNORE ``duplicate``: the same envelope (content id) is already pending.
- IGNORE ``unknown_account``: the signer has no account in our ledger (yet).
- IGNORE ``stale_nonce``: the nonce is below the account's nonce: the
  ledger can only skip it (``bad_nonce``).
- IGNORE ``pool_full``: :data:`MAX_PENDING` transactions are pending.

Pending transactions go to the proposer in arrival order, at most
:data:`MAX_PER_PROPOSAL` of them. After each committed epoch the pool drops
the transactions that epoch included and those whose nonce went stale, and
remembers each included transaction's outcome (a bounded record) so a
client can ask what became of its transaction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

import structlog
import trio

from depin_p2p import wire
from depin_p2p.errors import Ignore, ValidationError
from depin_p2p.gossip.transport import TX, PeerId, Transport, topic
from depin_p2p.gossip.validation import GossipRule, validate_gossip_envelope
from depin_p2p.ledger.state import Account, LedgerView, RegisterDevice, Stake, Transfer, TxResult, Unstake

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.txpool")

MAX_TX_BYTES = 4096  # a RegisterDevice, the largest transaction, is about 250 bytes
MAX_PENDING = 4096
MAX_PER_PROPOSAL = 1000
MAX_OUTCOMES = 16_384
OUTCOME_EPOCHS = 30  # a committed tx's outcome is answered (GET /tx/<id>) this many epochs
TX_RULES = {
    wire.info_of(cls).type_id: GossipRule(wire.Domain.TX)
    for cls in (Transfer, RegisterDevice, Stake, Unstake)
}

T = TypeVar("T")


class TxLedger(Protocol):
    """The committed state the pool checks nonces against (``LedgerStore`` or ``MemoryLedger``)."""

    def read(self, fn: Callable[[LedgerView], T]) -> T: ...


@dataclass(frozen=True, slots=True)
class PendingTx:
    tx_id: bytes
    envelope: wire.Envelope
    signer: bytes
    nonce: int


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """What a committed epoch did with a transaction: ``code`` None means applied."""

    epoch: int
    index: int
    code: str | None


@dataclass(slots=True)
class TxPoolCounters:
    accepted: int = 0
    committed: int = 0
    dropped_stale: int = 0


class TxPool:
    """Pending transactions, bounded, in arrival order. Synchronous; no I/O but ledger reads.

    Args:
        ledger: the committed state, read for nonces.
        network_id: our network.
        max_pending: bound of the pending set.
        max_per_proposal: bound of what :meth:`pending` returns.
    """

    def __init__(
        self,
        ledger: TxLedger,
        network_id: str,
        *,
        max_pending: int = MAX_PENDING,
        max_per_proposal: int = MAX_PER_PROPOSAL,
    ) -> None:
        self._ledger = ledger
        self._net = network_id
        self._max_pending = max_pending
        self._max_per_proposal = max_per_proposal
        self._pending: OrderedDict[bytes, PendingTx] = OrderedDict()
        self._outcomes: OrderedDict[bytes, TxOutcome] = OrderedDict()
        self.counters = TxPoolCounters()

    def __len__(self) -> int:
        return len(self._pending)

    def check(self, data: bytes) -> PendingTx:
        """Run every check of the module docstring on an encoded envelope; return it parsed.

        Raises:
            Reject: oversized, malformed, wrong_network, unexpected_type,
                wrong_domain, bad_signature, bad_public_key.
            Ignore: duplicate, unknown_account, stale_nonce, pool_full.
        """
        verified = validate_gossip_envelope(
            data, network_id=self._net, rules=TX_RULES, now_ms=0, max_size=MAX_TX_BYTES
        )
        tx_id = wire.content_id(data)
        if tx_id in self._pending:
            raise Ignore("duplicate", "already pending")
        nonce = int(verified.message.nonce)  # type: ignore[attr-defined]
        account: Account | None = self._ledger.read(lambda v: v.get_account(verified.signer))
        if account is None:
            raise Ignore("unknown_account", "the signer has no account")
        if nonce < account.nonce:
            raise Ignore("stale_nonce", f"nonce {nonce}, account is at {account.nonce}")
        if len(self._pending) >= self._max_pending:
            raise Ignore("pool_full", f"{self._max_pending} transactions pending")
        return PendingTx(tx_id, verified.envelope, verified.signer, nonce)

    def add(self, data: bytes) -> bytes:
        """Check and keep an encoded envelope; return its tx id (raises as :meth:`check`)."""
        tx = self.check(data)
        self._pending[tx.tx_id] = tx
        self.counters.accepted += 1
        return tx.tx_id

    def pending(self) -> tuple[wire.Envelope, ...]:
        """The transactions to propose, in arrival order, at most ``max_per_proposal``."""
        out: list[wire.Envelope] = []
        for tx in self._pending.values():
            if len(out) >= self._max_per_proposal:
                break
            out.append(tx.envelope)
        return tuple(out)

    def next_nonce(self, signer: bytes, ledger_nonce: int) -> int:
        """The nonce ``signer``'s next transaction should carry: past the ledger's and every pending one."""
        held = {tx.nonce for tx in self._pending.values() if tx.signer == signer}
        nonce = ledger_nonce
        while nonce in held:
            nonce += 1
        return nonce

    def is_pending(self, tx_id: bytes) -> bool:
        return tx_id in self._pending

    def outcome(self, tx_id: bytes) -> TxOutcome | None:
        """What a committed epoch did with ``tx_id``, if one of the last ``OUTCOME_EPOCHS`` included it."""
        return self._outcomes.get(tx_id)

    def on_committed(self, epoch: int, results: Sequence[TxResult]) -> None:
        """Record the outcomes of ``epoch``'s transactions; drop them and every stale nonce."""
        for r in results:
            self._outcomes[r.tx_id] = TxOutcome(epoch, r.index, r.code)
            self._outcomes.move_to_end(r.tx_id)
            if self._pending.pop(r.tx_id, None) is not None:
                self.counters.committed += 1
        horizon = epoch - OUTCOME_EPOCHS  # oldest epoch first: outcomes are added as epochs commit
        while self._outcomes and (
            len(self._outcomes) > MAX_OUTCOMES or next(iter(self._outcomes.values())).epoch <= horizon
        ):
            self._outcomes.popitem(last=False)
        if not self._pending:
            return
        signers = {tx.signer for tx in self._pending.values()}

        def nonces(view: LedgerView) -> dict[bytes, int]:
            out = {}
            for s in signers:
                account = view.get_account(s)
                out[s] = -1 if account is None else account.nonce
            return out

        current = self._ledger.read(nonces)
        for tx_id, tx in list(self._pending.items()):
            if tx.nonce < current[tx.signer]:
                del self._pending[tx_id]
                self.counters.dropped_stale += 1


class TxService:
    """Gossips the pool's transactions on the TX topic and takes peers' into the pool.

    Args:
        pool: the node's pool.
        transport: the network.
        network_id: our network.
    """

    def __init__(self, pool: TxPool, transport: Transport, network_id: str) -> None:
        self.pool = pool
        self._transport = transport
        self._topic = topic(network_id, TX)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe to the TX topic and admit what peers send, until cancelled.

        Cancellation: stops receiving; the pool keeps what it holds.
        """
        channel = await self._transport.subscribe(self._topic, self._validate)
        task_status.started()
        async for msg in channel:
            try:
                self.pool.add(msg.data)
            except ValidationError as exc:
                # Checked by the validator already; the ledger or the pool moved on since.
                log.debug("txpool.gossip.dropped", code=exc.code, peer=str(msg.peer))

    def _validate(self, peer: PeerId, data: bytes) -> None:
        self.pool.check(data)

    async def submit(self, data: bytes) -> bytes:
        """Admit a locally submitted envelope and gossip it; return its tx id.

        Raises:
            ValidationError: the checks of :meth:`TxPool.check`.
        """
        tx_id = self.pool.add(data)
        log.info("txpool.tx.accepted", tx_id=tx_id.hex())
        await self._transport.publish(self._topic, data)
        return tx_id
