"""Four nodes witness each other for one epoch on the memory network, in virtual time."""

from __future__ import annotations

import json

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus.value import ValueParams, build_content, check_content
from depin_p2p.gossip.memory import MemoryNetwork
from depin_p2p.gossip.service import ProofGossip
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import compute_genesis_changes, validator_set
from depin_p2p.model import DeviceKind, Validator
from depin_p2p.schedule import EpochSchedule
from depin_p2p.witness.devices import ComputeDriver, SimulatedCompute, SimulatedRadio
from depin_p2p.witness.pool import ProofPool
from depin_p2p.witness.service import LedgerContext, WitnessService, proof_rules
from depin_p2p.witness.world import World
from devnet.genesis import DevnetPlan, plan_devnet

T0 = 1_767_225_600_000
EPOCH_MS = 20_000


def _ledger(genesis_text: str) -> MemoryLedger:
    mem = MemoryLedger()
    mem.commit(compute_genesis_changes(mem, parse_genesis(genesis_text).initial_state()), b"")
    return mem


async def test_one_epoch_of_witnessing_fills_every_pool(autojump_clock: trio.testing.MockClock) -> None:
    devnet = plan_devnet(
        DevnetPlan(nodes=4, seed=b"witness-sim", epoch_seconds=EPOCH_MS / 1000), genesis_time_ms=T0
    )
    text = json.dumps(devnet.genesis)
    net_id = devnet.network_id
    schedule = EpochSchedule(T0, EPOCH_MS)
    network = MemoryNetwork(seed=7)
    transports = [network.create_node(k.peer_id) for k in devnet.node_keys]
    peer_of_owner = {k.public_key: t.peer_id for k, t in zip(devnet.node_keys, transports, strict=True)}
    ledgers = [_ledger(text) for _ in devnet.node_keys]
    devices = tuple(ledgers[0].iter_devices())
    world = World(b"world", devices)
    pools: list[ProofPool] = []
    gossips: list[ProofGossip] = []
    services: list[WitnessService] = []
    clock = Clock(wall_anchor_ms=T0 - 1_000)
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
        radios = [
            SimulatedRadio(
                key=d.key,
                device=view.get_device(d.key.public_key),
                world=world,
                clock=clock,
                network_id=net_id,
            )  # type: ignore[arg-type]
            for d in mine
            if d.kind == "radio"
        ]
        computes: dict[bytes, ComputeDriver] = {
            d.key.public_key: SimulatedCompute(key=d.key, world=world, clock=clock, network_id=net_id)
            for d in mine
            if d.kind == "compute"
        }
        validators = validator_set(view)

        def context(
            view: MemoryLedger = view, validators: tuple[Validator, ...] = validators
        ) -> LedgerContext:
            return LedgerContext(view, tuple(view.iter_devices()), validators, view.last_certificate_hash())

        service = WitnessService(
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
        pools.append(pool)
        services.append(service)
        gossips.append(gossip)

    async with trio.open_nursery() as nursery:
        for t in transports:
            await nursery.start(t.run)
        for t in transports[1:]:
            await t.connect(transports[0].listen_addrs()[0])
        for t in transports[2:]:
            await t.connect(transports[1].listen_addrs()[0])
        for gossip in gossips:
            await nursery.start(gossip.run)
        for service in services:
            await nursery.start(service.run)
        await clock.sleep_until_ms(schedule.end_of(1) - 1)
        nursery.cancel_scope.cancel()

    radios_total = sum(1 for d in devices if d.kind is DeviceKind.RADIO)
    providers = sum(1 for d in devices if d.kind is DeviceKind.COMPUTE)
    for pool in pools:
        got = pool.collect(1)
        assert len(got.beacons) == radios_total
        assert len(got.reports) >= radios_total  # every beacon is heard by someone
        assert len(got.attestations) == providers * 3
    # All nodes hold the same proofs, and a value built from one node's pool checks on another's ledger.
    assert len({frozenset(wire.encode(e) for e in p.collect(1).reports) for p in pools}) == 1
    params = ValueParams(network_id=net_id, emission_per_epoch=int(devnet.genesis["emission_per_epoch"]))  # type: ignore[call-overload]
    got = pools[0].collect(1)
    built = build_content(
        ledgers[0],
        epoch=1,
        beacons=got.beacons,
        reports=got.reports,
        attestations=got.attestations,
        txs=(),
        evidence=(),
        params=params,
    )
    assert built.dropped == ()
    assert len(built.content.ledger.rewards) > 0
    assert check_content(ledgers[3], built.content, params).root == built.content.state_root
    assert all(s.challenges_answered + s.challenges_failed > 0 for s in services)
    print(
        f"beacons={len(got.beacons)} reports={len(got.reports)} attestations={len(got.attestations)}",
        f"paid={len(built.content.ledger.rewards)} accounts",
    )
