"""An in-process devnet on the memory network, in virtual time: the sim tests' fixture."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import trio

from depin_p2p.clock import Clock
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.signer import MemorySignStateStore, Signer
from depin_p2p.consensus.state import Timeouts
from depin_p2p.consensus.value import ValueParams
from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork, MemoryTransport
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import compute_genesis_changes, validator_set
from depin_p2p.model import DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.txpool import TxPool, TxService
from depin_p2p.witness.devices import ComputeDriver, SimulatedCompute, SimulatedRadio
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import LedgerContext, WitnessService, proof_rules
from depin_p2p.witness.world import World
from devnet.genesis import Devnet, DevnetPlan, plan_devnet

T0 = 1_767_225_600_000
EPOCH_MS = 20_000


@dataclass
class Cluster:
    devnet: Devnet
    clock: Clock
    schedule: EpochSchedule
    network: MemoryNetwork
    transports: list[MemoryTransport]
    ledgers: list[MemoryLedger]
    pools: list[ProofPool]
    gossips: list[ProofGossip]
    services: list[WitnessService]
    consensus: list[ConsensusService] = field(default_factory=list)
    sign_stores: list[MemorySignStateStore] = field(default_factory=list)
    txs: list[TxService] = field(default_factory=list)

    async def start(self, nursery: trio.Nursery, nodes: list[int] | None = None) -> None:
        chosen = range(len(self.transports)) if nodes is None else nodes
        for i in chosen:
            await nursery.start(self.transports[i].run)
        # A full mesh, as in a devnet: direct requests (challenges, sync) need a connection.
        for i in chosen:
            for j in chosen:
                if j < i:
                    await self.transports[i].connect(self.transports[j].listen_addrs()[0])
        for i in chosen:
            await nursery.start(self.gossips[i].run)
            await nursery.start(self.services[i].run)
            if self.txs:
                await nursery.start(self.txs[i].run)
            if self.consensus:
                await nursery.start(self.consensus[i].run)

    def emission(self) -> int:
        return int(self.devnet.genesis["emission_per_epoch"])  # type: ignore[call-overload]


def _ledger(genesis_text: str) -> MemoryLedger:
    mem = MemoryLedger()
    mem.commit(compute_genesis_changes(mem, parse_genesis(genesis_text).initial_state()), b"")
    return mem


def make_cluster(
    *,
    nodes: int = 4,
    seed: bytes = b"witness-sim",
    with_consensus: bool = False,
    link: LinkProfile | None = None,
    start_ms: int = T0 - 1_000,
) -> Cluster:
    devnet = plan_devnet(
        DevnetPlan(nodes=nodes, seed=seed, epoch_seconds=EPOCH_MS / 1000), genesis_time_ms=T0
    )
    text = json.dumps(devnet.genesis)
    net_id = devnet.network_id
    schedule = EpochSchedule(T0, EPOCH_MS)
    network = MemoryNetwork(seed=7, default_link=link)
    transports = [network.create_node(k.peer_id) for k in devnet.node_keys]
    peer_of_owner = {k.public_key: t.peer_id for k, t in zip(devnet.node_keys, transports, strict=True)}
    ledgers = [_ledger(text) for _ in devnet.node_keys]
    world = World(b"world", tuple(ledgers[0].iter_devices()))
    clock = Clock(wall_anchor_ms=start_ms)
    c = Cluster(devnet, clock, schedule, network, transports, ledgers, [], [], [])
    value_params = ValueParams(network_id=net_id, emission_per_epoch=c.emission())
    for i, (transport, view) in enumerate(zip(transports, ledgers, strict=True)):
        pool = ProofPool(view, net_id)
        gossip = ProofGossip(
            transport,
            network_id=net_id,
            clock=clock,
            rules=proof_rules(EPOCH_MS),
            check_item=lambda v, peer, pool=pool: pool.check(v, clock.now_ms()),
        )
        mine = devnet.devices_of(i)
        radios = []
        for d in mine:
            device = view.get_device(d.key.public_key)
            if device is not None and device.kind is DeviceKind.RADIO:
                radios.append(
                    SimulatedRadio(key=d.key, device=device, world=world, clock=clock, network_id=net_id)
                )
        computes: dict[bytes, ComputeDriver] = {
            d.key.public_key: SimulatedCompute(key=d.key, world=world, clock=clock, network_id=net_id)
            for d in mine
            if d.kind == "compute"
        }

        def context(view: MemoryLedger = view) -> LedgerContext:
            validators = validator_set(view)
            return LedgerContext(
                view, tuple(view.iter_devices()), validators, view.last_certificate_hash(), view.last_epoch()
            )

        c.pools.append(pool)
        c.gossips.append(gossip)
        c.services.append(
            WitnessService(
                network_id=net_id,
                clock=clock,
                schedule=schedule,
                transport=transport,
                gossip=gossip,
                pool=pool,
                context=context,
                radios=radios,
                computes=computes,
                device_keys={d.key.public_key: d.key for d in mine},
                peer_of=lambda owner: peer_of_owner[owner],
            )
        )
        if with_consensus:
            store = MemorySignStateStore()
            c.sign_stores.append(store)
            signer = Signer(
                devnet.node_keys[i],
                store,
                net_id,
                current_epoch=view.last_epoch() + 1,  # as depin_p2p.node.first_signing_epoch, no wait
                startup_wait_epochs=0,
            )
            txpool = TxPool(view, net_id)
            c.txs.append(TxService(txpool, transport, net_id))
            c.consensus.append(
                ConsensusService(
                    network_id=net_id,
                    clock=clock,
                    schedule=schedule,
                    transport=transport,
                    ledger=view,
                    signer=signer,
                    pool=pool,
                    value_params=value_params,
                    timeouts=Timeouts(),
                    offload_io=False,
                    pending_txs=txpool.pending,
                    on_tx_results=txpool.on_committed,
                )
            )
    return c
