"""One whole witnessing epoch in virtual time: drivers, validation, assignment, rewards."""

from __future__ import annotations

import hashlib

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.errors import Reject
from depin_p2p.model import MICRO, Validator
from depin_p2p.witness import assign, compute, radio, rewards
from depin_p2p.witness.devices import SimulatedCompute, SimulatedRadio
from depin_p2p.witness.world import World
from tests.unit.witness import support as s

EPOCH, PREV = 7, hashlib.blake2b(b"prev-cert", digest_size=32).digest()
VALIDATORS = [s.key(f"epoch-validator-{i}") for i in range(4)]


def _fleet() -> tuple[list[s.KeyPair], list[s.Device]]:
    keys, devices = [], []
    for i in range(24):
        k = s.key(f"epoch-radio-{i}")
        owner = VALIDATORS[i % 4].public_key if i < 8 else None
        # A 6 x 4 grid with ~1.5 km spacing: neighbours hear each other, none too close.
        cell = s.cell(s.SF_LAT + 0.0135 * (i % 6), s.SF_LNG + 0.017 * (i // 6))
        keys.append(k)
        devices.append(s.radio_device(k, cell, owner=owner))
    return keys, devices


async def test_one_epoch_end_to_end(autojump_clock: trio.testing.MockClock) -> None:
    clock = Clock(wall_anchor_ms=1_700_000_000_000)
    keys, radios = _fleet()
    pkeys = [s.key(f"epoch-provider-{i}") for i in range(3)]
    providers = [
        s.compute_device(k, owner=s.key(f"epoch-powner-{i}").public_key, capacity=8)
        for i, k in enumerate(pkeys)
    ]
    registry = s.DictRegistry([*radios, *providers])
    world = World(b"epoch-world", list(registry.devices.values()))
    drivers = [
        SimulatedRadio(key=k, device=d, world=world, clock=clock, network_id=s.NETWORK)
        for k, d in zip(keys, radios, strict=True)
    ]

    # Radio: every device beacons once; everyone else listens; the node validates.
    proofs = []
    for nonce, beaconer in enumerate(drivers[:6]):
        env = await beaconer.beacon(epoch=EPOCH, nonce=nonce)
        checked = radio.validate_beacon(env, registry=registry, network_id=s.NETWORK, epoch=EPOCH)
        reports: list[wire.Envelope | None] = []

        async def listen(d: SimulatedRadio, env: wire.Envelope = env, out: list = reports) -> None:
            out.append(await d.witness(env))

        async with trio.open_nursery() as nursery:
            for d in drivers:
                if d is not beaconer:
                    nursery.start_soon(listen, d)
        seen: set[bytes] = set()
        for rep in reports:
            if rep is None:
                continue
            try:
                ok = radio.validate_witness_report(
                    checked, rep, registry=registry, network_id=s.NETWORK, seen=seen
                )
            except Reject as exc:
                # Honest devices only fail on distance, or on witnessing a sibling of their owner.
                witness = registry.get_device(rep.signer)
                assert witness is not None
                same = witness.owner == checked.device.owner
                assert exc.code == ("same_owner" if same else "too_far"), exc
                continue
            seen.add(ok.report.witness)
        assert len(seen) > 4  # more than N: the decay applies
        proofs.append(rewards.BeaconProof(checked.beacon_id, checked.beacon.device, tuple(sorted(seen))))

    # Compute: assigned validator devices challenge each provider; provider 2 cheats.
    table = assign.assign_compute_witnesses(
        prev_cert_hash=PREV,
        epoch=EPOCH,
        devices=registry.devices.values(),
        validators=[Validator(v.public_key, 1_000 * MICRO) for v in VALIDATORS],
        k=3,
    )
    witness_keys = {k.public_key: k for k in keys}
    attestations = []
    for a in table:
        pk = next(k for k in pkeys if k.public_key == a.provider)
        driver = SimulatedCompute(
            key=pk, world=world, clock=clock, network_id=s.NETWORK, faulty=pk is pkeys[2]
        )
        for w in a.witnesses:
            now = clock.now_ms()
            ch = compute.Challenge(
                w,
                a.provider,
                EPOCH,
                hashlib.blake2b(w + a.provider, digest_size=32).digest(),
                compute.challenge_size(8),
                compute.MODULUS,
                now,
                now + 60_000,
            )
            ch_env = wire.seal(ch, witness_keys[w], s.NETWORK)
            compute.validate_challenge(
                ch_env,
                provider=a.provider,
                network_id=s.NETWORK,
                allowed_witnesses=frozenset(a.witnesses),
                expected_n=compute.challenge_size(8),
            )
            pending = compute.prepare_challenge(ch_env, witness_secret=witness_keys[w].seed)
            answer = await driver.answer(ch_env)
            att = compute.judge_response(
                pending, answer.envelope, registry=registry, network_id=s.NETWORK, now_ms=clock.now_ms()
            )
            att_env = wire.seal(att, witness_keys[w], s.NETWORK)
            attestations.append(
                compute.validate_attestation(
                    att_env,
                    network_id=s.NETWORK,
                    epoch=EPOCH,
                    assigned=frozenset(a.witnesses),
                    expected_n=compute.challenge_size(8),
                )
            )
    cproofs = rewards.collect_compute_proofs(table, attestations, registry)
    assert {p.provider for p in cproofs if len(p.passed_by) == 3} == {
        pkeys[0].public_key,
        pkeys[1].public_key,
    }
    assert [p.passed_by for p in cproofs if p.provider == pkeys[2].public_key] == [()]

    payouts = rewards.compute_epoch_rewards(
        prev_cert_hash=PREV,
        epoch=EPOCH,
        emission=5_000 * 10**6,
        beacons=proofs,
        compute=cproofs,
        registry=registry,
    )
    paid = dict(payouts)
    assert sum(paid.values()) == 5_000 * 10**6
    assert s.key("epoch-powner-2").public_key not in paid  # the cheater earns nothing
    assert paid[s.key("epoch-powner-0").public_key] == paid[s.key("epoch-powner-1").public_key] == 750 * 10**6
