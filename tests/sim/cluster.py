"""An in-process devnet on the memory network, in virtual time: the sim tests' fixture.

Each node is built by :func:`depin_p2p.assemble.assemble`, the function
``depin-p2p run`` uses; only the transport (memory network), the ledger
(in memory), the sign-state store (in memory) and the devices (simulated,
on one shared world) differ.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from depin_p2p.assemble import AssemblyConfig, Devices, NodeServices, assemble
from depin_p2p.clock import Clock
from depin_p2p.consensus.service import ConsensusService
from depin_p2p.consensus.signer import MemorySignStateStore
from depin_p2p.gossip.degree import DegreePolicy
from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork, MemoryTransport
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import compute_genesis_changes
from depin_p2p.model import DeviceKind
from depin_p2p.schedule import EpochSchedule
from depin_p2p.txpool import TxService
from depin_p2p.witness.devices import ComputeDriver, RadioDriver, SimulatedCompute, SimulatedRadio
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import WitnessService
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
    nodes: list[NodeServices] = field(default_factory=list)
    sign_stores: list[MemorySignStateStore] = field(default_factory=list)
    with_consensus: bool = False
    mesh: bool = True  # dial a full mesh at start; False: the peer managers dial their bootstrap lists

    @property
    def pools(self) -> list[ProofPool]:
        return [n.pool for n in self.nodes]

    @property
    def gossips(self) -> list[ProofGossip]:
        return [n.gossip for n in self.nodes]

    @property
    def services(self) -> list[WitnessService]:
        return [n.witness for n in self.nodes]

    @property
    def consensus(self) -> list[ConsensusService]:
        return [n.consensus for n in self.nodes] if self.with_consensus else []

    @property
    def txs(self) -> list[TxService]:
        return [n.txs for n in self.nodes] if self.with_consensus else []

    async def start(self, nursery: trio.Nursery, nodes: list[int] | None = None) -> None:
        chosen = range(len(self.transports)) if nodes is None else nodes
        for i in chosen:
            await nursery.start(self.transports[i].run)
        # A full mesh, as in a small devnet, unless the peer managers are to find each other.
        for i in chosen if self.mesh else ():
            for j in chosen:
                if j < i:
                    await self.transports[i].connect(self.transports[j].listen_addrs()[0])
        for i in chosen:
            if self.with_consensus:
                await nursery.start(self.nodes[i].run)  # as the node process starts them
            else:  # witnessing only
                await nursery.start(self.nodes[i].gossip.run)
                await nursery.start(self.nodes[i].witness.run)

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
    validators: int | None = None,
    radios_per_node: int = 3,
    bootstrap: Callable[[int], Sequence[int]] | None = None,
    degree: DegreePolicy | None = None,
    epoch_ms: int = EPOCH_MS,
) -> Cluster:
    """``nodes`` nodes on one memory network; with ``bootstrap``, node i knows only the nodes
    ``bootstrap(i)`` and its peer manager finds the rest (no full mesh is dialled)."""
    plan = DevnetPlan(
        nodes=nodes,
        validators=validators,
        radios_per_node=radios_per_node,
        seed=seed,
        epoch_seconds=epoch_ms / 1000,
    )
    devnet = plan_devnet(plan, genesis_time_ms=T0)
    text = json.dumps(devnet.genesis)
    net_id = devnet.network_id
    schedule = EpochSchedule(T0, epoch_ms)
    network = MemoryNetwork(seed=7, default_link=link)
    transports = [network.create_node(k.peer_id) for k in devnet.node_keys]
    peer_of_owner = {k.public_key: t.peer_id for k, t in zip(devnet.node_keys, transports, strict=True)}
    ledgers = [_ledger(text) for _ in devnet.node_keys]
    world = World(b"world", tuple(ledgers[0].iter_devices()))
    clock = Clock(wall_anchor_ms=start_ms)
    c = Cluster(devnet, clock, schedule, network, transports, ledgers, with_consensus=with_consensus)
    c.mesh = bootstrap is None
    for i, (transport, view) in enumerate(zip(transports, ledgers, strict=True)):
        mine = devnet.devices_of(i)
        radios: list[RadioDriver] = []
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
        store = MemorySignStateStore()
        c.sign_stores.append(store)
        config = AssemblyConfig(
            network_id=net_id,
            schedule=schedule,
            emission_per_epoch=c.emission(),
            key=devnet.node_keys[i],
            grace_ms=500,
            offload_io=False,  # a worker thread would let the autojump clock skip ahead
            peer_of=lambda owner: peer_of_owner[owner],
            bootstrap=tuple(transports[j].listen_addrs()[0] for j in (bootstrap(i) if bootstrap else ())),
            degree=degree or DegreePolicy(),
        )
        devices = Devices(radios, computes, {d.key.public_key: d.key for d in mine})
        c.nodes.append(assemble(transport, view, store, clock, devices=devices, config=config))
    return c
