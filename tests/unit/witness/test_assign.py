"""Compute-witness assignment: deterministic, fair to the rules, not steerable by the provider."""

from __future__ import annotations

import dataclasses
import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p.model import MICRO, Device, DeviceKind, Validator
from depin_p2p.witness import assign
from tests.unit.witness import support as s

VALIDATORS = [s.key(f"validator-{i}").public_key for i in range(5)]
STAKES = [Validator(v, 1_000 * MICRO) for v in VALIDATORS]
VALIDATOR_DEVICES = [
    s.radio_device(s.key(f"vdev-{i}"), s.cell(s.SF_LAT, s.SF_LNG), owner=VALIDATORS[i % 5]) for i in range(12)
]
OUTSIDER_DEVICES = [s.radio_device(s.key(f"odev-{i}"), s.cell(s.SF_LAT, s.SF_LNG)) for i in range(4)]


def providers(count: int) -> list[Device]:
    return [
        s.compute_device(s.key(f"prov-{i}"), owner=s.key(f"powner-{i}").public_key, capacity=5)
        for i in range(count)
    ]


def run(devices: list[Device], prev: bytes, epoch: int, k: int = 3) -> dict[bytes, tuple[bytes, ...]]:
    out = assign.assign_compute_witnesses(
        prev_cert_hash=prev, epoch=epoch, devices=devices, validators=STAKES, k=k
    )
    return {a.provider: a.witnesses for a in out}


hashes = st.binary(min_size=32, max_size=32)


@settings(max_examples=50)
@given(hashes, st.integers(0, 2**40), st.integers(1, 8), st.randoms(use_true_random=False))
def test_deterministic_and_order_independent(prev: bytes, epoch: int, k: int, rnd: object) -> None:
    devices = VALIDATOR_DEVICES + OUTSIDER_DEVICES + providers(4)
    shuffled = list(devices)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert run(devices, prev, epoch, k) == run(shuffled, prev, epoch, k)


@settings(max_examples=50)
@given(hashes, st.integers(0, 2**40), st.integers(1, 10**9), st.integers(0, 2**60), st.integers(0, 200))
def test_independent_of_the_providers_own_inputs(
    prev: bytes, epoch: int, capacity: int, location: int, registered: int
) -> None:
    base = providers(3)
    target = base[0]
    changed = dataclasses.replace(target, capacity=capacity, location=location, registered_epoch=registered)
    before = run(VALIDATOR_DEVICES + base, prev, epoch)[target.device_id]
    # The provider's own fields, and the presence of other providers, change nothing.
    assert run([*VALIDATOR_DEVICES, changed, *base[1:]], prev, epoch)[target.device_id] == before
    assert run([*VALIDATOR_DEVICES, changed], prev, epoch)[target.device_id] == before


@settings(max_examples=50)
@given(hashes, st.integers(0, 2**40), st.integers(1, 8))
def test_k_distinct_validators_one_device_each_never_the_providers_owner(
    prev: bytes, epoch: int, k: int
) -> None:
    # One provider is owned by a validator: its own owner's devices must be excluded.
    own = s.compute_device(s.key("validator-owned-provider"), owner=VALIDATORS[0], capacity=3)
    table = run(VALIDATOR_DEVICES + OUTSIDER_DEVICES + providers(3) + [own], prev, epoch, k)
    owners = {d.device_id: d.owner for d in [*VALIDATOR_DEVICES, own]}  # any validator-owned device
    for provider, witnesses in table.items():
        assert all(w in owners for w in witnesses)  # validator-owned only
        assert len({owners[w] for w in witnesses}) == len(witnesses)  # one device per validator
        assert provider not in witnesses
    assert len(table[own.device_id]) == min(k, 4)  # the 4 other validators
    assert all(owners[w] != VALIDATORS[0] for w in table[own.device_id])
    for p in providers(3):
        assert len(table[p.device_id]) == min(k, 5)


def test_previous_certificate_changes_the_draw() -> None:
    devices = VALIDATOR_DEVICES + providers(6)
    draws = {tuple(sorted(run(devices, bytes([i]) * 32, 9).items())) for i in range(20)}
    assert len(draws) > 15  # 20 different hashes: essentially always different tables


def test_only_compute_devices_with_capacity_are_providers() -> None:
    idle = s.compute_device(s.key("idle"), owner=s.key("idle-owner").public_key, capacity=0)
    table = run([*VALIDATOR_DEVICES, idle, *providers(2)], b"\x00" * 32, 1)
    assert idle.device_id not in table
    assert all(d.kind is DeviceKind.COMPUTE for d in providers(2))
    assert set(table) == {p.device_id for p in providers(2)}


def test_witness_view_lists_its_providers() -> None:
    out = assign.assign_compute_witnesses(
        prev_cert_hash=b"\x01" * 32,
        epoch=2,
        devices=VALIDATOR_DEVICES + providers(5),
        validators=STAKES,
    )
    w = out[0].witnesses[0]
    assert out[0].provider in assign.assignments_of_witness(out, w)
    assert all(w in a.witnesses for a in out if a.provider in assign.assignments_of_witness(out, w))


def test_slots_follow_stake_and_dust_stake_gets_none() -> None:
    # Stakes 1:2:3:4 (x 1000 tokens) and a dust validator with 40 devices; one slot per provider.
    stakes = [Validator(v, (i + 1) * 1_000 * MICRO) for i, v in enumerate(VALIDATORS[:4])]
    dust = s.key("dust-validator").public_key
    devices = [
        *(s.radio_device(s.key(f"stake-dev-{i}"), 0, owner=v.address) for i, v in enumerate(stakes)),
        *(s.radio_device(s.key(f"dust-dev-{i}"), 0, owner=dust) for i in range(40)),
        *providers(250),
    ]
    owner = {d.device_id: d.owner for d in devices}
    wins = dict.fromkeys([v.address for v in stakes] + [dust], 0)
    for epoch in range(4):
        out = assign.assign_compute_witnesses(
            prev_cert_hash=b"\x07" * 32,
            epoch=epoch,
            devices=devices,
            validators=[*stakes, Validator(dust, assign.MIN_WITNESS_STAKE - 1)],
            k=1,
        )
        for a in out:
            wins[owner[a.witnesses[0]]] += 1
    assert wins[dust] == 0
    # 1000 draws: validator i wins ~100·(i+1) (sd <= 16).
    for i, v in enumerate(stakes):
        assert abs(wins[v.address] - 100 * (i + 1)) < 70, wins


def test_draw_is_a_pure_function_of_its_spec() -> None:
    # Recompute one assignment from the module docstring's rules alone.
    prev, epoch = b"\x05" * 32, 11
    devices = VALIDATOR_DEVICES + providers(1)
    (got,) = assign.assign_compute_witnesses(
        prev_cert_hash=prev, epoch=epoch, devices=devices, validators=STAKES
    )
    pid = got.provider
    pool = sorted((v.address, v.power) for v in STAKES)
    expected = []
    for j in range(3):
        digest = hashlib.blake2b(
            b"depin-p2p/assign-draw" + prev + epoch.to_bytes(8, "big") + pid + j.to_bytes(4, "big"),
            digest_size=64,
        ).digest()
        x = int.from_bytes(digest, "big") % sum(st for _, st in pool)
        i = 0
        while x >= pool[i][1]:
            x -= pool[i][1]
            i += 1
        address, _ = pool.pop(i)
        mine = [d.device_id for d in VALIDATOR_DEVICES if d.owner == address]
        expected.append(min(mine, key=lambda d: assign.assignment_score(prev, epoch, pid, d)))
    assert got.witnesses == tuple(expected)
