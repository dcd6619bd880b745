"""The one assembly: every service of one node, from its transport, ledger, sign store, clock and devices.

``depin-p2p run`` (:mod:`depin_p2p.node`) calls :func:`assemble` with libp2p,
the LMDB store and its synced sign-state; the in-process simulator
(``tests/sim/cluster.py``) calls it with the memory network, an in-memory
ledger and sign-state. Both get the same :class:`NodeServices`, wired the
same way, started in the same order by :meth:`NodeServices.run`: the node a
researcher simulates is the node a runner runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus.ledger_io import NodeLedger
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.signer import Signer, SignStateStore
from depin_p2p.consensus.state import Timeouts
from depin_p2p.consensus.value import CheckedValues, ValueParams
from depin_p2p.crypto import KeyPair, peer_id_from_public_key
from depin_p2p.gossip.degree import DegreePolicy
from depin_p2p.gossip.peers import PeerManager
from depin_p2p.gossip.service import BatchConfig, ProofGossip
from depin_p2p.gossip.transport import PeerId, Transport
from depin_p2p.ledger.state import validator_set
from depin_p2p.model import Device
from depin_p2p.schedule import EpochSchedule
from depin_p2p.txpool import TxPool, TxService
from depin_p2p.verifiers import BatchVerifier
from depin_p2p.witness.devices import ComputeDriver, RadioDriver
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import LedgerContext, WitnessService, proof_rules
from depin_p2p.witness.verdicts import ReportVerdicts

if TYPE_CHECKING:
    from trio_typing import TaskStatus

T = TypeVar("T")
K = TypeVar("K")


def first_signing_epoch(last_committed: int, wall_epoch: int, startup_wait_epochs: int) -> int:
    """The epoch a fresh sign-state's floor counts from.

    Without a startup wait the operator vouches that this key signed nothing
    it does not remember (a new network, a new validator): it may sign the
    next epoch to decide, even if its process came up after that epoch's
    wall-clock start (otherwise validators that all start late would all
    refuse epoch 1 and the network would never begin). With a wait, the wait
    counts from the network's epoch by the wall clock, past anything the key
    may have signed before its data dir was lost.
    """
    if startup_wait_epochs == 0:
        return last_committed + 1
    return max(last_committed + 1, wall_epoch)


def default_grace_ms(epoch_length_ms: int) -> int:
    """How long after an epoch's end its instance starts (late proofs): a tenth, at most 1 s."""
    return min(1_000, epoch_length_ms // 10)


class Ledger(NodeLedger, Protocol):
    """The ledger a node runs on: ``LedgerStore`` (LMDB) or ``MemoryLedger``."""

    commit_count: int  # epochs committed through this object: committed state changes only with it

    def last_epoch(self) -> int: ...


class SinceCommit(Generic[K, T]):
    """Reads of the ledger's committed state, each kept until the ledger's next commit.

    Gossip looks up the sender's device for every proof it checks, and the
    witness service the whole device list for every beacon: each was a fresh
    LMDB read and decode (10-15 % of a node's CPU in a 16-node devnet). A
    value is kept under the ``commit_count`` read before it was read, so a
    value read before a commit is never served after it (worker threads read
    and commit too). At most ``limit`` values per commit (unknown device ids
    are looked up as well).
    """

    def __init__(self, ledger: Ledger, limit: int = 65_536) -> None:
        self._ledger, self._limit = ledger, limit
        self._memo: tuple[int, dict[K, T]] = (-1, {})

    def get(self, key: K, read: Callable[[], T]) -> T:
        stamp = self._ledger.commit_count
        seen, memo = self._memo
        if seen != stamp:
            memo = {}
            self._memo = (stamp, memo)
        elif key in memo:
            return memo[key]
        value = read()
        if len(memo) < self._limit:
            memo[key] = value
        return value


class LedgerRegistry:
    """Device lookups against the ledger's latest committed state."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._devices: SinceCommit[bytes, Device | None] = SinceCommit(ledger)

    def get_device(self, device_id: bytes) -> Device | None:
        return self._devices.get(device_id, lambda: self._ledger.read(lambda v: v.get_device(device_id)))


@dataclass(frozen=True, slots=True)
class Devices:
    """The node's own devices: radio drivers, compute drivers and every device key by public key."""

    radios: Sequence[RadioDriver] = ()
    computes: dict[bytes, ComputeDriver] = field(default_factory=dict)
    keys: dict[bytes, KeyPair] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AssemblyConfig:
    """What a node's services need besides its I/O: the network's parameters and its own key."""

    network_id: str
    schedule: EpochSchedule
    emission_per_epoch: int
    key: KeyPair
    startup_wait_epochs: int = 0
    restored: bool = False
    timeouts: Timeouts | None = None
    grace_ms: int | None = None  # default: a tenth of an epoch, at most 1 s
    offload_io: bool = True  # LMDB work in worker threads (False under trio's autojump clock)
    peer_of: Callable[[bytes], PeerId] = field(default=lambda owner: PeerId(peer_id_from_public_key(owner)))
    bootstrap: tuple[str, ...] = ()  # addresses the peer manager dials first (each ends in the peer id)
    announce: tuple[str, ...] = ()  # our addresses as handed to peers (each ends in our peer id); (): listen
    degree: DegreePolicy = field(default_factory=DegreePolicy)
    # Observers for the process's metrics (the simulator sets none): each gossip check of a
    # proof, given the check to run, and each committed epoch.
    observe_check: Callable[[wire.Verified, Callable[[], None]], None] | None = None
    on_commit: Callable[[int], None] = field(default=lambda epoch: None)
    observe_step: Callable[[str, float], None] | None = None  # each timed consensus step, seconds
    # The Ed25519 check the node's signature cache runs on a miss (None: wire.verify_signature).
    # The simulator passes one memo shared by its nodes; each node still counts the check as its own.
    signature_check: wire.Verifier | None = None
    # The memory of good witness-report verdicts (None: one of the node's own) and of good value
    # checks (None: none kept). The simulator passes one of each shared by its honest nodes: each
    # is a pure function of inputs every memory compares, given a signature check that passes good
    # signatures alone, so a node served from one decides as it would alone.
    report_verdicts: ReportVerdicts | None = None
    checked_values: CheckedValues | None = None
    # Checks gossip's signatures in batches on worker threads (both cores). None: every check
    # inline, as the simulator needs (determinism) and, for now, depin-p2p run (see verifiers.py).
    verifier: BatchVerifier | None = None


@dataclass(frozen=True, slots=True)
class NodeServices:
    """Every service of one node, built by :func:`assemble`; :meth:`run` starts them in order."""

    transport: Transport
    ledger: Ledger
    peers: PeerManager
    pool: ProofPool
    gossip: ProofGossip
    witness: WitnessService
    txpool: TxPool
    txs: TxService
    signer: Signer
    consensus: ConsensusService
    signatures: wire.SignatureCache

    def graph(self) -> dict[str, str]:
        """Each service's name and type: what a test compares between processes and the simulator."""
        return {name: type(getattr(self, name)).__name__ for name in self.__dataclass_fields__}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the peer manager, gossip, witnessing, the transaction pool and consensus.

        The transport runs already. Cancellation: every service stops.
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.peers.run)
            await nursery.start(self.gossip.run)
            await nursery.start(self.witness.run)
            await nursery.start(self.txs.run)
            await nursery.start(self.consensus.run)
            task_status.started()


def assemble(
    transport: Transport,
    ledger: Ledger,
    sign_store: SignStateStore,
    clock: Clock,
    *,
    devices: Devices,
    config: AssemblyConfig,
) -> NodeServices:
    """Build every service of one node (nothing runs yet; see :meth:`NodeServices.run`)."""
    net, schedule = config.network_id, config.schedule
    registry = LedgerRegistry(ledger)
    peers = PeerManager(
        transport,
        network_id=net,
        clock=clock,
        policy=config.degree,
        bootstrap=config.bootstrap,
        required=_validator_peers(ledger, config),
        announce=(lambda: config.announce) if config.announce else None,
    )
    # One memory of good signatures for every check on this node: each envelope verified once.
    signatures = wire.SignatureCache(check=config.signature_check)
    # A report the pool judged good is not judged again by a value check.
    verdicts = ReportVerdicts() if config.report_verdicts is None else config.report_verdicts
    pool = ProofPool(registry, net, signatures=signatures, verdicts=verdicts)
    def check_item(verified: wire.Verified, peer: PeerId) -> None:
        if config.observe_check is None:
            pool.check(verified, clock.now_ms())
        else:
            config.observe_check(verified, lambda: pool.check(verified, clock.now_ms()))

    gossip = ProofGossip(
        transport,
        network_id=net,
        clock=clock,
        rules=proof_rules(schedule.epoch_length_ms),
        check_item=check_item,
        signatures=signatures,
        screen_item=pool.screen,  # epoch and registry before the signature
        verifier=config.verifier,
        config=BatchConfig.for_epoch(schedule.epoch_length_ms),
    )

    contexts: SinceCommit[None, LedgerContext] = SinceCommit(ledger)

    def context() -> LedgerContext:
        def read(view: Any) -> LedgerContext:
            return LedgerContext(
                registry,
                tuple(view.iter_devices()),
                validator_set(view),
                view.last_certificate_hash(),
                view.last_epoch(),
            )

        return contexts.get(None, lambda: ledger.read(read))

    txpool = TxPool(ledger, net)
    signer = Signer(
        config.key,
        sign_store,
        net,
        current_epoch=first_signing_epoch(
            ledger.last_epoch(), schedule.epoch_at(clock.now_ms()), config.startup_wait_epochs
        ),
        startup_wait_epochs=config.startup_wait_epochs,
        restored=config.restored,
    )
    grace = config.grace_ms if config.grace_ms is not None else default_grace_ms(schedule.epoch_length_ms)
    consensus = ConsensusService(
        network_id=net,
        clock=clock,
        schedule=schedule,
        transport=transport,
        ledger=ledger,
        signer=signer,
        pool=pool,
        value_params=ValueParams(
            net, config.emission_per_epoch, reports=verdicts, checked=config.checked_values
        ),
        timeouts=config.timeouts,
        grace_ms=grace,
        pending_txs=txpool.pending,
        on_tx_results=txpool.on_committed,
        on_commit=config.on_commit,
        offload_io=config.offload_io,
        signatures=signatures,
        observe_step=config.observe_step,
    )
    witness = WitnessService(
        network_id=net,
        clock=clock,
        schedule=schedule,
        transport=transport,
        gossip=gossip,
        pool=pool,
        context=context,
        radios=list(devices.radios),
        computes=devices.computes,
        device_keys=devices.keys,
        peer_of=config.peer_of,
        committed=lambda: consensus.committed,  # wait for a commit, do not poll
        reach=peers.reach,
        signed=signatures.mark_envelope,  # our own proofs are never verified here
    )
    txs = TxService(txpool, transport, net)
    return NodeServices(
        transport, ledger, peers, pool, gossip, witness, txpool, txs, signer, consensus, signatures
    )


def _validator_peers(ledger: Ledger, config: AssemblyConfig) -> Callable[[], frozenset[PeerId]]:
    """The peers of the other current validators when we are one (else none), re-read per commit."""
    me = config.key.public_key
    cache: dict[int, frozenset[PeerId]] = {}

    def required() -> frozenset[PeerId]:
        epoch = ledger.last_epoch()
        if epoch not in cache:
            addresses = {v.address for v in ledger.read(validator_set)}
            others = {config.peer_of(a) for a in addresses if a != me}
            cache.clear()
            cache[epoch] = frozenset(others) if me in addresses else frozenset()
        return cache[epoch]

    return required
