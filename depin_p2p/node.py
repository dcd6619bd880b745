"""The composition root: builds every service of a node and runs them in one nursery.

Start order: ledger store, transport (listening), proof gossip, witness
service, transaction pool gossip, consensus service, local API; then bootstrap dials and catch-up.
Each service signals readiness with ``task_status.started()``. SIGINT and
SIGTERM cancel the nursery: services stop, the ledger closes after any write
in flight (LMDB writes are atomic either way), and the process exits 0.

Every user mistake found while starting (missing home, wrong genesis for the
data dir, port in use, corrupt key) is raised as ConfigError before anything
listens, so ``depin-p2p run`` prints one line and exits 2.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from depin_p2p import __version__, wire
from depin_p2p.api import ApiServer, TxApi
from depin_p2p.assemble import (
    AssemblyConfig,
    Devices,
    NodeServices,
    assemble,
    default_grace_ms,
    first_signing_epoch,  # noqa: F401 -- re-exported for callers of node
)
from depin_p2p.clock import Clock
from depin_p2p.config import NodeConfig, check_port_free
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.state import Certificate
from depin_p2p.crypto import KeyPair, address_from_public_key, load_key_file
from depin_p2p.errors import ConfigError, StorageError, TransportError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.gossip.transport import PeerId
from depin_p2p.ledger.genesis import Genesis, load_genesis
from depin_p2p.ledger.state import validator_set
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.metrics import Figures, LedgerFigures, NodeMetrics, node_figures
from depin_p2p.model import DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.txpool import TxPool
from depin_p2p.witness.devices import (
    ComputeDriver,
    LocalComputeDriver,
    RadioDriver,
    SimulatedCompute,
    SimulatedRadio,
)
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import WitnessService
from depin_p2p.witness.world import World

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.node")

RUNTIME_FILE = "run.json"  # written at start: pid, API port, listen addresses (read by `status`)
CATCH_UP_RETRY_S = 2.0
BOOTSTRAP_WAIT_S = 10.0  # how long catch-up waits for the bootstrap peers before it starts


class StoreSignState:
    """The signer's durable storage: the ledger's synced sign-state record."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def load(self) -> bytes | None:
        return self._store.load_sign_state()

    def save(self, data: bytes) -> None:
        self._store.save_sign_state(data)


@dataclass
class NodeStatus:
    """Live figures for /status and /metrics (mutated by the node's tasks)."""

    peers: int = 0
    started_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _check_store_matches_genesis(store: LedgerStore, genesis: Genesis, data_dir: Path) -> None:
    def read(view: Any) -> bytes:
        if view.last_epoch() == 0:
            return bytes(view.last_certificate_hash())
        raw = view.get_certificate(1)
        if raw is None:
            raise StorageError(f"{data_dir}: epoch 1 is committed but its certificate is missing")
        return wire.decode_as(raw, Certificate).candidate.prev_cert_hash

    if store.read(read) != genesis.genesis_hash:
        raise ConfigError(
            f"{data_dir} holds the ledger of another genesis than {genesis.network_id!r} "
            "(wrong genesis for this network; re-run `depin-p2p init`)"
        )


@contextmanager
def open_node_store(config: NodeConfig, genesis: Genesis) -> Iterator[LedgerStore]:
    """Open the home's ledger and check it belongs to ``genesis``; ConfigError otherwise."""
    if not config.data_dir.exists():
        raise ConfigError(f"{config.data_dir} does not exist (create the home with `depin-p2p init`)")
    try:
        store = LedgerStore.open(config.data_dir)
    except StorageError as exc:
        raise ConfigError(str(exc)) from None
    try:
        _check_store_matches_genesis(store, genesis, config.data_dir)
        yield store
    finally:
        store.close()


class Node:
    """One depin-p2p node, built from its configuration.

    Args:
        config: the validated node configuration.

    Raises:
        ConfigError: the key file or the genesis cannot be loaded.
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.key: KeyPair = load_key_file(config.key_file)
        self.genesis = load_genesis(config.genesis_file)
        self.schedule = EpochSchedule(self.genesis.genesis_time_ms, self.genesis.epoch_length_ms)
        self.metrics = NodeMetrics(self.genesis.network_id)
        self._rounds_seen = 0  # consensus.counters.rounds_used at the last commit
        self._grace_ms = default_grace_ms(self.genesis.epoch_length_ms)
        self.status = NodeStatus()
        self.api_port = 0
        self.transport: Libp2pTransport | None = None
        self.consensus: ConsensusService | None = None
        self.gossip: ProofGossip | None = None
        self.witness: WitnessService | None = None
        self.pool: ProofPool | None = None
        self.store: LedgerStore | None = None
        self.txpool: TxPool | None = None
        self.services: NodeServices | None = None  # built by assemble() once the store and transport exist
        self._clock: Clock | None = None

    def _now_ms(self) -> int:
        return self._clock.now_ms() if self._clock is not None else 0

    def check_ports(self) -> None:
        """ConfigError when a configured port is taken (port 0 is always fine)."""
        check_port_free(self.config.listen.host, self.config.listen.port, what="network.listen")
        check_port_free("127.0.0.1", self.config.api_port, what="api.port")

    def _drivers(self, store: LedgerStore, clock: Clock) -> Devices:
        devices = tuple(store.read(lambda v: list(v.iter_devices())))
        seed = self.config.world_seed or self.genesis.network_id.encode()
        world = World(seed, devices)
        radios: list[RadioDriver] = []
        computes: dict[bytes, ComputeDriver] = {}
        keys: dict[bytes, KeyPair] = {}
        net = self.genesis.network_id
        for path in self.config.device_keys:
            key = load_key_file(path)
            device = store.read(lambda v, k=key: v.get_device(k.public_key))  # type: ignore[misc]
            if device is None:
                raise ConfigError(f"{path}: device {key.address} is not registered in the ledger")
            if device.owner != self.key.public_key:
                raise ConfigError(
                    f"{path}: device {key.address} is owned by another account than this node's"
                )
            keys[key.public_key] = key
            if device.kind is DeviceKind.RADIO:
                radios.append(
                    SimulatedRadio(key=key, device=device, world=world, clock=clock, network_id=net)
                )
            elif self.config.device_driver == "local":
                computes[key.public_key] = LocalComputeDriver(key=key, clock=clock, network_id=net)
            else:
                computes[key.public_key] = SimulatedCompute(key=key, world=world, clock=clock, network_id=net)
        return Devices(radios, computes, keys)

    def _status_doc(self) -> dict[str, Any]:
        store, transport, consensus, pool = self.store, self.transport, self.consensus, self.pool
        doc: dict[str, Any] = {
            "version": __version__,
            "network_id": self.genesis.network_id,
            "address": self.key.address,
            "peer_id": self.key.peer_id,
            "epoch_now": self.schedule.epoch_at(self._now_ms()),
        }
        if store is not None:

            def read(view: Any) -> dict[str, Any]:
                meta = view.get_meta()
                validators = validator_set(view)
                return {
                    "last_epoch": view.last_epoch(),
                    "last_certificate": view.last_certificate_hash().hex(),
                    "state_root": view.state_root().hex(),
                    "total_supply_micro": meta.total_supply,
                    "validators": [
                        {
                            "address": address_from_public_key(v.address),
                            "public_key": v.address.hex(),
                            "power_micro": v.power,
                        }
                        for v in validators
                    ],
                }

            doc.update(store.read(read))
            account = store.read(lambda v: v.get_account(self.key.public_key))
            doc["balance_micro"] = 0 if account is None else account.balance
            # The names before amounts said their unit, kept for readers built on them (devnet up).
            doc["total_supply"], doc["balance"] = doc["total_supply_micro"], doc["balance_micro"]
        if transport is not None:
            doc["peers"] = sorted(transport.peers())
            doc["listen"] = list(transport.listen_addrs())
            doc["transport_counters"] = _counters(transport.counters)
        if consensus is not None:
            doc["consensus"] = {
                "running_epoch": consensus.running_epoch,
                "round": consensus.running_round,
                **_counters(consensus.counters),
                "conflicting_signers": {k.hex(): n for k, n in consensus.conflicting_signers.items()},
                "evidence_offenders": {k.hex(): n for k, n in consensus.evidence_offenders.items()},
            }
        if pool is not None:
            got = pool.collect(self.schedule.epoch_at(self._now_ms()))
            doc["pending_proofs"] = {
                "beacons": len(got.beacons),
                "reports": len(got.reports),
                "attestations": len(got.attestations),
                "dropped": pool.dropped,
            }
        if self.txpool is not None:
            doc["pending_txs"] = len(self.txpool)
        if self.gossip is not None:
            doc["gossip_counters"] = _counters(self.gossip.counters)
        if self.witness is not None:
            w = self.witness
            doc["witness"] = {
                "beacons_sent": w.beacons_sent,
                "reports_sent": w.reports_sent,
                "attestations_sent": w.attestations_sent,
                "challenges_answered": w.challenges_answered,
            }
        return doc

    def _account_doc(self, account_id: bytes) -> dict[str, Any]:
        """``GET /account/<hex>``: what a client needs to sign its next transaction."""
        store = self.store
        if store is None:
            return {
                "address": address_from_public_key(account_id),
                "exists": False,
                "balance_micro": 0,
                "nonce": 0,
                "next_nonce": 0,
                "stake_micro": 0,
                "unbonding_micro": 0,
            }

        def read(view: Any) -> dict[str, Any]:
            account = view.get_account(account_id)
            stake = view.get_validator(account_id)
            return {
                "address": address_from_public_key(account_id),
                "exists": account is not None,
                "balance_micro": 0 if account is None else account.balance,
                "nonce": 0 if account is None else account.nonce,
                "stake_micro": 0 if stake is None else stake.stake,
                "unbonding_micro": 0 if stake is None else stake.unbonding_total,
                "epoch": view.last_epoch(),
            }

        doc = store.read(read)
        pool = self.txpool
        doc["next_nonce"] = doc["nonce"] if pool is None else pool.next_nonce(account_id, doc["nonce"])
        return doc

    def _account_proof_doc(self, account_id: bytes) -> dict[str, Any]:
        """``GET /account/<hex>?prove=1``: the account's Merkle proof, with the root it leads to."""
        return {} if self.store is None else self.store.read(lambda v: v.account_proof_doc(account_id))

    def _tx_doc(self, tx_id: bytes) -> dict[str, Any]:
        """``GET /tx/<hex>``: pending, committed (with its epoch and outcome code) or unknown."""
        pool = self.txpool
        doc: dict[str, Any] = {"tx_id": tx_id.hex(), "status": "unknown", "epoch": None, "code": None}
        if pool is None:
            return doc
        outcome = pool.outcome(tx_id)
        if outcome is not None:
            doc.update(status="committed", epoch=outcome.epoch, code=outcome.code)
        elif pool.is_pending(tx_id):
            doc["status"] = "pending"
        return doc

    def _register_metrics(self) -> None:
        """Serve the node's counters and gauges at ``/metrics`` (read from the services per scrape)."""
        self.metrics.serve_figures(self._metric_figures)

    def _metric_figures(self) -> Figures:
        now_ms = self._now_ms()
        ledger: LedgerFigures | None = None
        if self.store is not None:

            def read(view: Any) -> LedgerFigures:
                account = view.get_account(self.key.public_key)
                return LedgerFigures(
                    last_epoch=view.last_epoch(),
                    total_supply=view.get_meta().total_supply,
                    balance=0 if account is None else account.balance,
                    validators=len(validator_set(view)),
                )

            ledger = self.store.read(read)
        pool = self.pool
        return node_figures(
            epoch_now=self.schedule.epoch_at(now_ms),
            ledger=ledger,
            transport=self.transport,
            gossip=self.gossip,
            consensus=self.consensus,
            pool=pool,
            pending=None if pool is None else pool.collect(self.schedule.epoch_at(now_ms)),
            txpool=self.txpool,
            witness=self.witness,
        )

    def _check_proof(self, verified: wire.Verified, check: Callable[[], None]) -> None:
        """Run the gossip check of one proof (the pool's rules), timed for /metrics."""
        now_ms = self._now_ms()
        created = getattr(verified.message, "sent_at_ms", None)
        kind = "beacon"
        if created is None:
            created, kind = getattr(verified.message, "received_at_ms", None), "report"
        if created is not None:
            self.metrics.proof_delay.labels(kind).observe(max(0, now_ms - created) / 1000)
        started = time.perf_counter()
        try:
            check()
        finally:
            self.metrics.proof_check.observe(time.perf_counter() - started)

    def _on_commit(self, epoch: int) -> None:
        """Per committed epoch: the round it took; its latency when it committed live."""
        consensus = self.consensus
        if consensus is None:
            return
        rounds = consensus.counters.rounds_used
        self.metrics.commit_round.observe(rounds - self._rounds_seen - 1)
        self._rounds_seen = rounds
        now_ms = self._now_ms()
        due_ms = self.schedule.end_of(epoch) + self._grace_ms
        if due_ms <= now_ms < due_ms + self.genesis.epoch_length_ms:
            self.metrics.commit_latency.observe((now_ms - due_ms) / 1000)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``task_status.started()`` once every service is up.

        Raises:
            ConfigError: a bad start (ports, data dir, devices).
        Cancellation: every service stops; the ledger store is closed.
        """
        self.check_ports()
        clock = Clock()
        self._clock = clock
        cfg = self.config
        net = self.genesis.network_id
        with open_node_store(cfg, self.genesis) as store:
            self.store = store
            transport = Libp2pTransport(
                self.key, network_id=net, clock=clock, config=Libp2pConfig(listen_addr=cfg.listen.text)
            )
            services = assemble(
                transport,
                store,
                StoreSignState(store),
                clock,
                devices=self._drivers(store, clock),
                config=AssemblyConfig(
                    network_id=net,
                    schedule=self.schedule,
                    emission_per_epoch=self.genesis.emission_per_epoch,
                    key=self.key,
                    startup_wait_epochs=cfg.startup_wait_epochs,
                    grace_ms=self._grace_ms,
                    observe_check=self._check_proof,
                    on_commit=self._on_commit,
                ),
            )
            self.services = services
            self.transport, self.pool, self.gossip = transport, services.pool, services.gossip
            self.witness, self.txpool, self.consensus = services.witness, services.txpool, services.consensus
            txs, consensus = services.txs, services.consensus
            self._register_metrics()
            api = ApiServer(
                status=self._status_doc,
                registry=self.metrics.registry,
                port=cfg.api_port,
                tx=TxApi(
                    submit=txs.submit,
                    account=self._account_doc,
                    tx_status=self._tx_doc,
                    account_proof=self._account_proof_doc,
                ),
            )
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(transport.run)
                except TransportError as exc:
                    raise ConfigError(f"network.listen {cfg.listen.text}: {exc}") from None
                await nursery.start(services.run)
                try:
                    self.api_port = await nursery.start(api.run)
                except OSError as exc:
                    raise ConfigError(f"api.port {cfg.api_port}: {exc.strerror}") from None
                self._write_runtime_file(transport)
                nursery.start_soon(self._bootstrap, transport, consensus)
                log.info(
                    "node.started",
                    address=self.key.address,
                    peer_id=self.key.peer_id,
                    listen=list(transport.listen_addrs()),
                    api_port=self.api_port,
                    network=net,
                )
                task_status.started()

    def _write_runtime_file(self, transport: Libp2pTransport) -> None:
        doc = {
            "pid": os.getpid(),
            "api_port": self.api_port,
            "listen": list(transport.listen_addrs()),
            "peer_id": self.key.peer_id,
        }
        path = self.config.home / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, path)

    async def _bootstrap(self, transport: Libp2pTransport, consensus: ConsensusService) -> None:
        """Dial the bootstrap peers until they answer (the transport re-dials them), then catch up if behind.

        A bootstrap peer that does not listen yet is dialled again with
        back-off until it does; catch-up starts once every bootstrap peer is
        connected or after ``BOOTSTRAP_WAIT_S``, and looks for peers again later.
        """
        wanted: set[PeerId] = set()
        with transport.peer_events() as events:
            for addr in self.config.bootstrap:
                try:
                    wanted.add(transport.keep_dialling(addr.text))
                except TransportError as exc:
                    log.info("node.bootstrap.failed", addr=addr.text, error=str(exc))
            with trio.move_on_after(BOOTSTRAP_WAIT_S):
                while wanted - transport.peers():
                    await events.receive()  # a peer connected or went: look again
            if wanted - transport.peers():
                log.info("node.bootstrap.waiting", peers=sorted(wanted - transport.peers()))
        while True:
            behind_to = self.schedule.epoch_at(self._now_ms()) - 1
            if consensus.last_epoch() >= behind_to - 1:
                return  # at most the running epoch away: live consensus and certificates do the rest
            peers = sorted(transport.peers())
            if peers:
                applied = await consensus.catch_up_from_any([PeerId(p) for p in peers], behind_to)
                log.info("node.catch_up", applied=applied, last_epoch=consensus.last_epoch())
            with trio.move_on_after(CATCH_UP_RETRY_S):  # a commit, or a retry for new peers
                await consensus.committed.wait()


def _counters(obj: object) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in getattr(obj, "__dataclass_fields__", {})}


async def run_until_signalled(node: Node) -> None:
    """Run ``node`` until SIGINT or SIGTERM, then shut it down cleanly."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(node.run)
            async for signum in signals:
                log.info("node.stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
