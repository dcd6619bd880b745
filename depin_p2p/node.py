"""The composition root: builds every service of a node and runs them in one nursery.

Start order: ledger store, transport (listening), peer manager (which dials
the bootstrap list and keeps the degree), proof gossip, witness service,
transaction pool gossip, consensus service, local API; then catch-up.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from depin_p2p import wire
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
from depin_p2p.config import NodeConfig, check_port_free, load_node_key, read_api_token
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.state import Certificate
from depin_p2p.crypto import KeyPair, load_key_file
from depin_p2p.errors import ConfigError, StorageError, TransportError
from depin_p2p.gossip.degree import DegreePolicy
from depin_p2p.gossip.genesis_fetch import serve_genesis
from depin_p2p.gossip.libp2p import Libp2pConfig, Libp2pTransport
from depin_p2p.gossip.transport import PeerId
from depin_p2p.heapdump import dump_heap_snapshots, settings_from_env
from depin_p2p.ledger.genesis import Genesis, load_genesis
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.metrics import NodeMetrics
from depin_p2p.model import DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.syncprogress import SyncProgress
from depin_p2p.views import CommitTimer, LedgerView, NodeView, timed_check
from depin_p2p.witness.devices import (
    ComputeDriver,
    LocalComputeDriver,
    RadioDriver,
    SimulatedCompute,
    SimulatedRadio,
)
from depin_p2p.witness.world import World

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.node")

RUNTIME_FILE = "run.json"  # written at start: pid, API port, listen addresses (read by `status`)
CATCH_UP_RETRY_S = 2.0


class StoreSignState:
    """The signer's durable storage: the ledger's synced sign-state record."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def load(self) -> bytes | None:
        return self._store.load_sign_state()

    def save(self, data: bytes) -> None:
        self._store.save_sign_state(data)


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
        store = LedgerStore.open(config.data_dir, keep_versions=config.keep_versions)
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
        self.key: KeyPair = load_node_key(config)
        self.genesis = load_genesis(config.genesis_file)
        self.schedule = EpochSchedule(self.genesis.genesis_time_ms, self.genesis.epoch_length_ms)
        self.metrics = NodeMetrics(self.genesis.network_id)

    def check_ports(self) -> None:
        """ConfigError when a configured port is taken (port 0 is always fine)."""
        check_port_free(self.config.listen.host, self.config.listen.port, what="network.listen")
        check_port_free(self.config.api_host, self.config.api_port, what="api.port")

    def _transport(self, clock: Clock) -> Libp2pTransport:
        """The node's libp2p transport (a devnet adversary subclasses Node to replace it)."""
        listen = self.config.listen.text
        return Libp2pTransport(
            self.key, network_id=self.genesis.network_id, clock=clock, config=Libp2pConfig(listen_addr=listen)
        )

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

    async def run(self, *, task_status: TaskStatus[NodeView] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the node until cancelled; ``task_status.started(view)`` once every service is up.

        The :class:`~depin_p2p.views.NodeView` it starts with is the running
        node, every part of it built in one step.

        Raises:
            ConfigError: a bad start (ports, data dir, devices).
        Cancellation: every service stops; the ledger store is closed.
        """
        self.check_ports()
        clock = Clock()
        cfg = self.config
        net = self.genesis.network_id
        grace_ms = default_grace_ms(self.genesis.epoch_length_ms)
        heap_dumps = settings_from_env(os.environ)  # debug only, off by default (depin_p2p/heapdump.py)
        with open_node_store(cfg, self.genesis) as store:
            transport = self._transport(clock)
            sync = SyncProgress(self.schedule)
            services: NodeServices  # bound below, before the first commit reads it
            timer = CommitTimer(
                self.metrics,
                self.schedule,
                clock,
                grace_ms,
                rounds_used=lambda: services.consensus.counters.rounds_used,
            )

            def on_commit(epoch: int) -> None:
                timer.on_commit(epoch)
                sync.on_commit(clock.now_ms(), epoch, services.consensus.counters.synced)

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
                    grace_ms=grace_ms,
                    observe_check=timed_check(self.metrics, clock),
                    on_commit=on_commit,
                    observe_step=lambda step, s: self.metrics.consensus_step.labels(step).observe(s),
                    bootstrap=tuple(a.text for a in cfg.bootstrap),
                    announce=cfg.announce_addrs(self.key.peer_id),
                    degree=DegreePolicy(target=cfg.target_peers),
                ),
            )
            ledger = LedgerView(store, services.txpool)
            view = NodeView(
                self.key, net, self.schedule, clock, self.metrics, ledger, transport, services, sync
            )
            self.metrics.serve_figures(view.metric_figures)
            token = None
            if cfg.api_token_file is not None:
                token = read_api_token(cfg.api_token_file, where="api.token_file")
            api = ApiServer(
                status=view.status_doc,
                registry=self.metrics.registry,
                port=cfg.api_port,
                host=cfg.api_host,
                token=token,
                tx=TxApi(
                    submit=services.txs.submit,
                    account=ledger.account_doc,
                    tx_status=ledger.tx_doc,
                    account_proof=ledger.account_proof_doc,
                ),
            )
            async with trio.open_nursery() as nursery:
                if heap_dumps is not None:
                    await nursery.start(dump_heap_snapshots, heap_dumps, cfg.home.name)
                try:
                    await nursery.start(transport.run)
                except TransportError as exc:
                    raise ConfigError(f"network.listen {cfg.listen.text}: {exc}") from None
                serve_genesis(transport, self.config.genesis_file.read_bytes())
                await nursery.start(services.run)
                try:
                    api_port = await nursery.start(api.run)
                except OSError as exc:
                    raise ConfigError(f"api.port {cfg.api_port}: {exc.strerror}") from None
                self._write_runtime_file(transport, api_port)
                nursery.start_soon(self._catch_up, transport, services.consensus, clock)
                log.info(
                    "node.started",
                    address=self.key.address,
                    peer_id=self.key.peer_id,
                    listen=list(transport.listen_addrs()),
                    api_port=api_port,
                    network=net,
                )
                task_status.started(view)

    def _write_runtime_file(self, transport: Libp2pTransport, api_port: int) -> None:
        doc = {
            "pid": os.getpid(),
            "api_port": api_port,
            "api_host": self.config.api_host,
            "api_token_file": None if self.config.api_token_file is None else str(self.config.api_token_file),
            "listen": list(transport.listen_addrs()),
            "peer_id": self.key.peer_id,
        }
        path = self.config.home / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n")
        os.replace(tmp, path)

    async def _catch_up(self, transport: Libp2pTransport, consensus: ConsensusService, clock: Clock) -> None:
        """Catch up if behind, from whichever peers we have (the peer manager dials the bootstrap list)."""
        while True:
            behind_to = self.schedule.epoch_at(clock.now_ms()) - 1
            if consensus.last_epoch() >= behind_to - 1:
                return  # at most the running epoch away: live consensus and certificates do the rest
            peers = sorted(transport.peers())
            if peers:
                applied = await consensus.catch_up_from_any([PeerId(p) for p in peers], behind_to)
                log.info("node.catch_up", applied=applied, last_epoch=consensus.last_epoch())
            with trio.move_on_after(CATCH_UP_RETRY_S):  # a commit, or a retry for new peers
                await consensus.committed.wait()


async def run_until_signalled(node: Node) -> None:
    """Run ``node`` until SIGINT or SIGTERM, then shut it down cleanly."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(node.run)
            async for signum in signals:
                log.info("node.stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
