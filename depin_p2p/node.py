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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from depin_p2p import __version__, wire
from depin_p2p.api import ApiServer, TxApi
from depin_p2p.clock import Clock
from depin_p2p.config import NodeConfig, check_port_free
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.signer import Signer
from depin_p2p.consensus.state import Certificate
from depin_p2p.consensus.value import ValueParams
from depin_p2p.crypto import KeyPair, address_from_public_key, load_key_file, peer_id_from_public_key
from depin_p2p.errors import ConfigError, InternalError, StorageError, TransportError
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.gossip.transport import PeerId
from depin_p2p.ledger.genesis import Genesis, load_genesis
from depin_p2p.ledger.state import validator_set
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.metrics import Figures, LedgerFigures, NodeMetrics, node_figures
from depin_p2p.model import Device, DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.txpool import TxPool, TxService
from depin_p2p.witness.devices import (
    ComputeDriver,
    LocalComputeDriver,
    RadioDriver,
    SimulatedCompute,
    SimulatedRadio,
)
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import LedgerContext, WitnessService, proof_rules
from depin_p2p.witness.world import World

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.node")

RUNTIME_FILE = "run.json"  # written at start: pid, API port, listen addresses (read by `status`)
CATCH_UP_RETRY_S = 2.0


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


class StoreRegistry:
    """Device lookups against the store's latest committed state (a fresh read each time)."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def get_device(self, device_id: bytes) -> Device | None:
        return self._store.read(lambda v: v.get_device(device_id))


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
        self._grace_ms = min(1_000, self.genesis.epoch_length_ms // 10)
        self.status = NodeStatus()
        self.api_port = 0
        self.transport: Libp2pTransport | None = None
        self.consensus: ConsensusService | None = None
        self.gossip: ProofGossip | None = None
        self.witness: WitnessService | None = None
        self.pool: ProofPool | None = None
        self.store: LedgerStore | None = None
        self.txpool: TxPool | None = None
        self._clock: Clock | None = None

    def _now_ms(self) -> int:
        return self._clock.now_ms() if self._clock is not None else 0

    def check_ports(self) -> None:
        """ConfigError when a configured port is taken (port 0 is always fine)."""
        check_port_free(self.config.listen.host, self.config.listen.port, what="network.listen")
        check_port_free("127.0.0.1", self.config.api_port, what="api.port")

    def _drivers(
        self, store: LedgerStore, clock: Clock
    ) -> tuple[list[RadioDriver], dict[bytes, ComputeDriver], dict[bytes, KeyPair]]:
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
        return radios, computes, keys

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
                    "total_supply": meta.total_supply,
                    "validators": [{"address": v.address.hex(), "power": v.power} for v in validators],
                }

            doc.update(store.read(read))
            account = store.read(lambda v: v.get_account(self.key.public_key))
            doc["balance"] = 0 if account is None else account.balance
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
            return {"exists": False, "balance": 0, "nonce": 0, "next_nonce": 0, "stake": 0, "unbonding": 0}

        def read(view: Any) -> dict[str, Any]:
            account = view.get_account(account_id)
            stake = view.get_validator(account_id)
            return {
                "address": address_from_public_key(account_id),
                "exists": account is not None,
                "balance": 0 if account is None else account.balance,
                "nonce": 0 if account is None else account.nonce,
                "stake": 0 if stake is None else stake.stake,
                "unbonding": 0 if stake is None else stake.unbonding_total,
                "epoch": view.last_epoch(),
            }

        doc = store.read(read)
        pool = self.txpool
        doc["next_nonce"] = doc["nonce"] if pool is None else pool.next_nonce(account_id, doc["nonce"])
        return doc

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

    def _check_proof(self, verified: wire.Verified, peer: PeerId) -> None:
        """The gossip check of one proof (the pool's rules), timed for /metrics."""
        pool, clock = self.pool, self._clock
        if pool is None or clock is None:
            raise InternalError("proof check before the node started")
        now_ms = clock.now_ms()
        created = getattr(verified.message, "sent_at_ms", None)
        kind = "beacon"
        if created is None:
            created, kind = getattr(verified.message, "received_at_ms", None), "report"
        if created is not None:
            self.metrics.proof_delay.labels(kind).observe(max(0, now_ms - created) / 1000)
        started = time.perf_counter()
        try:
            pool.check(verified, now_ms)
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
            self.transport = transport
            registry = StoreRegistry(store)
            pool = ProofPool(registry, net)
            self.pool = pool
            gossip = ProofGossip(
                transport,
                network_id=net,
                clock=clock,
                rules=proof_rules(self.genesis.epoch_length_ms),
                check_item=self._check_proof,
            )
            self.gossip = gossip
            radios, computes, device_keys = self._drivers(store, clock)

            def context() -> LedgerContext:
                def read(view: Any) -> LedgerContext:
                    validators = validator_set(view)
                    return LedgerContext(
                        registry,
                        tuple(view.iter_devices()),
                        validators,
                        view.last_certificate_hash(),
                        view.last_epoch(),
                    )

                return store.read(read)

            witness = WitnessService(
                network_id=net,
                clock=clock,
                schedule=self.schedule,
                transport=transport,
                gossip=gossip,
                pool=pool,
                context=context,
                radios=radios,
                computes=computes,
                device_keys=device_keys,
                peer_of=lambda owner: PeerId(peer_id_from_public_key(owner)),
            )
            self.witness = witness
            txpool = TxPool(store, net)
            self.txpool = txpool
            txs = TxService(txpool, transport, net)
            signer = Signer(
                self.key,
                StoreSignState(store),
                net,
                current_epoch=first_signing_epoch(
                    store.last_epoch(), self.schedule.epoch_at(clock.now_ms()), cfg.startup_wait_epochs
                ),
                startup_wait_epochs=cfg.startup_wait_epochs,
            )
            consensus = ConsensusService(
                network_id=net,
                clock=clock,
                schedule=self.schedule,
                transport=transport,
                ledger=store,
                signer=signer,
                pool=pool,
                value_params=ValueParams(network_id=net, emission_per_epoch=self.genesis.emission_per_epoch),
                grace_ms=self._grace_ms,
                pending_txs=txpool.pending,
                on_tx_results=txpool.on_committed,
                on_commit=self._on_commit,
            )
            self.consensus = consensus
            self._register_metrics()
            api = ApiServer(
                status=self._status_doc,
                registry=self.metrics.registry,
                port=cfg.api_port,
                tx=TxApi(submit=txs.submit, account=self._account_doc, tx_status=self._tx_doc),
            )
            async with trio.open_nursery() as nursery:
                try:
                    await nursery.start(transport.run)
                except TransportError as exc:
                    raise ConfigError(f"network.listen {cfg.listen.text}: {exc}") from None
                await nursery.start(gossip.run)
                await nursery.start(witness.run)
                await nursery.start(txs.run)
                await nursery.start(consensus.run)
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
        """Dial the bootstrap peers (the transport re-dials them), then catch up if behind."""
        for addr in self.config.bootstrap:
            try:
                with trio.move_on_after(10):
                    await transport.connect(addr.text)
            except TransportError as exc:
                log.info("node.bootstrap.failed", addr=addr.text, error=str(exc))
        while True:
            behind_to = self.schedule.epoch_at(self._now_ms()) - 1
            if consensus.last_epoch() >= behind_to - 1:
                return  # at most the running epoch away: live consensus and certificates do the rest
            peers = sorted(transport.peers())
            if peers:
                applied = await consensus.catch_up_from_any([PeerId(p) for p in peers], behind_to)
                log.info("node.catch_up", applied=applied, last_epoch=consensus.last_epoch())
            await trio.sleep(CATCH_UP_RETRY_S)


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
