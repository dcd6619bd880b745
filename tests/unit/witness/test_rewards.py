"""Rewards: the HIP-15 table, the lottery, exact payout of the pool."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p.errors import InternalError
from depin_p2p.witness import compute
from depin_p2p.witness import rewards as r
from depin_p2p.witness.assign import ComputeAssignment
from tests.unit.witness import support as s

SCALE = r.SHARE_SCALE


def test_known_table_five_witnesses() -> None:
    beaconer, witness = r.beacon_shares(5)
    assert Fraction(witness, SCALE) == Fraction(76, 100)
    assert Fraction(beaconer, SCALE) == Fraction(120, 100)


@pytest.mark.parametrize("w", [1, 2, 3, 4])
def test_known_table_up_to_redundancy(w: int) -> None:
    beaconer, witness = r.beacon_shares(w)
    assert witness == SCALE
    assert beaconer == SCALE * w // 4


@pytest.mark.parametrize("w", range(5, 15))
def test_shape_matches_exact_rationals(w: int) -> None:
    decay = Fraction(4, 5) ** (w - 4)
    beaconer, witness = r.beacon_shares(w)
    assert beaconer == int(SCALE * (2 - decay))  # floor of a positive rational
    assert witness == int(SCALE * (3 + decay) / w)
    # More witnesses: the beaconer gains, each witness earns less; past N the
    # beacon's total stays (2 - d) + (3 + d) = 5 units, up to flooring.
    b_prev, w_prev = r.beacon_shares(w - 1)
    assert beaconer > b_prev and witness < w_prev
    assert 5 * SCALE - (w + 1) <= beaconer + w * witness <= 5 * SCALE


def test_zero_witnesses_earn_nothing() -> None:
    assert r.beacon_shares(0) == (0, 0)


# -------------------------------------------------------------- lottery


def test_lottery_caps_and_ignores_input_order() -> None:
    ws = [bytes([i]) * 32 for i in range(30)]
    a = r.select_rewarded_witnesses(b"\x01" * 32, 5, b"\x02" * 32, ws)
    b = r.select_rewarded_witnesses(b"\x01" * 32, 5, b"\x02" * 32, list(reversed(ws)) + ws[:3])
    assert a == b and len(a) == 14 and len(set(a)) == 14
    c = r.select_rewarded_witnesses(b"\x03" * 32, 5, b"\x02" * 32, ws)
    assert set(a) != set(c)  # another certificate hash, another draw
    d = r.select_rewarded_witnesses(b"\x01" * 32, 6, b"\x02" * 32, ws)
    assert set(a) != set(d)  # another epoch, another draw


def test_lottery_is_fair_over_many_beacons() -> None:
    # 20 witnesses compete for 14 places on each of 700 beacons: each wins ~70%.
    ws = [bytes([i]) * 32 for i in range(20)]
    wins = dict.fromkeys(ws, 0)
    for i in range(700):
        for w in r.select_rewarded_witnesses(b"\x09" * 32, 1, i.to_bytes(32, "big"), ws):
            wins[w] += 1
    assert all(430 < n < 550 for n in wins.values())  # mean 490, sd ~12


# -------------------------------------------------------------- pool split


@settings(max_examples=300)
@given(
    st.integers(0, 10**15),
    st.dictionaries(st.binary(min_size=32, max_size=32), st.integers(0, 10**18), max_size=30),
)
def test_split_pays_exactly_the_pool_and_is_proportional(pool: int, weights: dict[bytes, int]) -> None:
    out = r.split_pool(pool, weights)
    total = sum(weights.values())
    if total == 0:
        assert out == {}
        return
    assert sum(out.values()) == pool
    for account, amount in out.items():
        exact = Fraction(pool * weights[account], total)
        assert exact - 1 < amount < exact + 1  # off by less than one micro-unit


def test_split_remainder_goes_to_largest_remainders_then_lower_account() -> None:
    a, b, c = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    assert r.split_pool(10, {a: 1, b: 1, c: 1}) == {a: 4, b: 3, c: 3}
    assert r.split_pool(10, {c: 1, b: 1, a: 1}) == {a: 4, b: 3, c: 3}
    assert r.split_pool(100, {a: 1, b: 2}) == {a: 33, b: 67}


# -------------------------------------------------------------- whole epoch

OWNERS = [s.key(f"owner-{i}").public_key for i in range(8)]
RADIOS = [
    s.radio_device(s.key(f"radio-{i}"), s.cell(s.SF_LAT, s.SF_LNG), owner=OWNERS[i % 6]) for i in range(12)
]
PROVIDERS = [
    s.compute_device(s.key(f"cp-{i}"), owner=OWNERS[6 + i % 2], capacity=10 * (i + 1)) for i in range(3)
]
REG = s.DictRegistry(RADIOS + PROVIDERS)
IDS = [d.device_id for d in RADIOS]


def beacons() -> list[r.BeaconProof]:
    return [
        r.BeaconProof(b"\xb0" * 32, IDS[0], tuple(IDS[1:6])),  # 5 witnesses
        r.BeaconProof(b"\xb1" * 32, IDS[1], tuple(IDS[2:4])),  # 2 witnesses
        r.BeaconProof(b"\xb2" * 32, IDS[2], ()),  # unheard
    ]


def test_epoch_pays_the_emission_to_the_last_micro_unit() -> None:
    compute = [
        r.ComputeProof(PROVIDERS[0].device_id, 10, (b"w1", b"w2")),
        r.ComputeProof(PROVIDERS[1].device_id, 20, (b"w1",)),
    ]
    payouts = r.compute_epoch_rewards(
        prev_cert_hash=b"\x00" * 32,
        epoch=1,
        emission=1_000_000_007,
        beacons=beacons(),
        compute=compute,
        registry=REG,
    )
    assert sum(v for _, v in payouts) == 1_000_000_007
    assert [a for a, _ in payouts] == sorted(a for a, _ in payouts)
    # Provider 1 had one pass (< quorum 2): its owner only earns if it also owns radios.
    assert dict(payouts)[OWNERS[6]] == 1_000_000_007 - 700_000_004  # whole compute pool
    assert OWNERS[7] not in dict(payouts)


def test_empty_pool_side_goes_to_the_other() -> None:
    payouts = r.compute_epoch_rewards(
        prev_cert_hash=b"\x00" * 32, epoch=1, emission=999, beacons=beacons(), compute=[], registry=REG
    )
    assert sum(v for _, v in payouts) == 999
    nothing = r.compute_epoch_rewards(
        prev_cert_hash=b"\x00" * 32, epoch=1, emission=999, beacons=[], compute=[], registry=REG
    )
    assert nothing == ()


def test_unregistered_or_repeated_proofs_fail_loudly() -> None:
    with pytest.raises(InternalError):
        r.compute_epoch_rewards(
            prev_cert_hash=b"\x00" * 32,
            epoch=1,
            emission=5,
            beacons=beacons() + beacons()[:1],
            compute=[],
            registry=REG,
        )
    with pytest.raises(InternalError):  # one beacon per beaconer: the lottery draws per beaconer
        r.compute_epoch_rewards(
            prev_cert_hash=b"\x00" * 32,
            epoch=1,
            emission=5,
            beacons=[*beacons(), r.BeaconProof(b"\xb9" * 32, IDS[0], (IDS[7],))],
            compute=[],
            registry=REG,
        )
    twice = [r.ComputeProof(PROVIDERS[0].device_id, 10, ())] * 2
    with pytest.raises(InternalError):
        r.compute_epoch_rewards(
            prev_cert_hash=b"\x00" * 32, epoch=1, emission=5, beacons=[], compute=twice, registry=REG
        )
    with pytest.raises(InternalError):
        r.compute_epoch_rewards(
            prev_cert_hash=b"\x00" * 32,
            epoch=1,
            emission=5,
            beacons=[r.BeaconProof(b"\x01" * 32, b"\xee" * 32, (IDS[1],))],
            compute=[],
            registry=REG,
        )


def test_only_assigned_passing_witnesses_count_toward_a_claim() -> None:
    p1, p2 = PROVIDERS[0].device_id, PROVIDERS[1].device_id
    w1, w2, w3, outsider = (bytes([i]) * 32 for i in (1, 2, 3, 9))
    assignments = [ComputeAssignment(p1, (w1, w2, w3)), ComputeAssignment(p2, (w1, w2, w3))]

    size = {
        p1: compute.challenge_size(PROVIDERS[0].capacity),
        p2: compute.challenge_size(PROVIDERS[1].capacity),
    }

    def att(witness: bytes, provider: bytes, outcome: compute.Outcome, n: int = 0) -> compute.Attestation:
        n = n or size[provider]
        return compute.Attestation(witness, provider, 1, b"\0" * 32, outcome, 10, n, b"\0" * 32)

    proofs = r.collect_compute_proofs(
        assignments,
        [
            att(w1, p1, compute.Outcome.PASSED),
            att(w1, p1, compute.Outcome.PASSED),  # counted once
            att(outsider, p1, compute.Outcome.PASSED),  # not assigned
            att(w2, p1, compute.Outcome.WRONG_RESULT),
            att(w3, p1, compute.Outcome.PASSED, n=size[p1] + 1),  # another size: other work
            att(w1, p2, compute.Outcome.PASSED),
            att(w3, p2, compute.Outcome.PASSED),
        ],
        REG,
    )
    assert proofs == tuple(
        sorted([r.ComputeProof(p1, 10, (w1,)), r.ComputeProof(p2, 20, (w1, w3))], key=lambda p: p.provider)
    )
    weights = r.compute_weights(proofs, REG)
    assert weights == {PROVIDERS[1].owner: 20**3}  # only p2 reached quorum 2; paid its verified n³


def test_compute_pays_verified_work_not_declared_capacity() -> None:
    assert [compute.challenge_size(c) for c in (0, 1, 8, 9, 255, 256, 257, 10**15)] == [
        8,
        8,
        8,
        9,
        255,
        256,
        256,
        256,
    ]
    huge = s.compute_device(s.key("cp-huge"), owner=OWNERS[7], capacity=10**15)
    reg = s.DictRegistry([*PROVIDERS, huge])
    passes = (b"w1", b"w2")
    weights = r.compute_weights([r.ComputeProof(huge.device_id, 256, passes)], reg)
    assert weights == {OWNERS[7]: compute.work_units(256)}  # capped at the largest challenge
    with pytest.raises(InternalError):  # a proof at another size than the capacity sets
        r.compute_weights([r.ComputeProof(huge.device_id, 8, passes)], reg)


@settings(max_examples=100)
@given(
    st.integers(0, 10**13),
    st.lists(st.tuples(st.integers(0, 11), st.sets(st.integers(0, 11), max_size=12)), max_size=12),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 4)), max_size=3),
    st.integers(0, 10_000),
)
def test_any_epoch_pays_exactly_the_emission_or_nothing(
    emission: int, beacon_specs: list[tuple[int, set[int]]], compute_specs: list[tuple[int, int]], bps: int
) -> None:
    beacon_list = [
        r.BeaconProof(i.to_bytes(32, "big"), IDS[b], tuple(IDS[w] for w in ws if w != b))
        for i, (b, ws) in enumerate(dict(beacon_specs).items())  # one beacon per beaconer
    ]
    compute_list = [
        r.ComputeProof(
            PROVIDERS[p].device_id,
            compute.challenge_size(PROVIDERS[p].capacity),
            tuple(bytes([j]) * 32 for j in range(passes)),
        )
        for p, passes in dict(compute_specs).items()  # one proof per provider
    ]
    payouts = r.compute_epoch_rewards(
        prev_cert_hash=b"\x05" * 32,
        epoch=1,
        emission=emission,
        beacons=beacon_list,
        compute=compute_list,
        registry=REG,
        params=r.RewardParams(radio_pool_bps=bps),
    )
    earned = any(b.witnesses for b in beacon_list) or any(len(c.passed_by) >= 2 for c in compute_list)
    assert sum(v for _, v in payouts) == (emission if earned else 0)
    assert all(v > 0 for _, v in payouts)
    assert [a for a, _ in payouts] == sorted({a for a, _ in payouts})
