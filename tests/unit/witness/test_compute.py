"""Compute challenges: derivation spec, Freivalds soundness, the witness's verdicts."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import Reject
from depin_p2p.witness import compute as c
from tests.unit.witness import support as s

WITNESS = s.key("compute-witness")
PROVIDER = s.key("provider")
OTHER = s.key("other-provider")
REG = s.DictRegistry(
    [
        s.radio_device(WITNESS, s.cell(s.SF_LAT, s.SF_LNG)),
        s.compute_device(PROVIDER, owner=s.key("provider-owner").public_key, capacity=10),
        s.compute_device(OTHER, owner=s.key("other-owner").public_key),
    ]
)
ISSUED, DEADLINE = 5_000, 65_000
SECRET = b"the witness's own secret"


def seed_of(i: int) -> bytes:
    return hashlib.blake2b(i.to_bytes(8, "big"), digest_size=32).digest()


def issue(n: int = 8, seed: bytes = b"\x11" * 32, provider: s.KeyPair = PROVIDER) -> wire.Envelope:
    ch = c.Challenge(WITNESS.public_key, provider.public_key, 4, seed, n, c.MODULUS, ISSUED, DEADLINE)
    return wire.seal(ch, WITNESS, s.NETWORK)


def answer(
    ch_env: wire.Envelope, signer: s.KeyPair = PROVIDER, product: bytes | None = None
) -> wire.Envelope:
    ch = wire.decode_as(ch_env.body, c.Challenge)
    resp = c.respond(ch, ch_env)
    if product is not None:
        resp = dataclasses.replace(resp, product=product)
    return wire.seal(resp, signer, s.NETWORK)


def one_wrong_entry(product: bytes, index: int) -> bytes:
    arr = np.frombuffer(product, dtype="<u4").copy()
    arr[index] = (int(arr[index]) + 1) % c.MODULUS
    return arr.astype("<u4").tobytes()


def test_derivation_follows_the_written_spec() -> None:
    # Recompute entries with nothing but hashlib, as another implementation would.
    seed, n = seed_of(1), 5
    a, b = c.derive_matrices(seed, n)
    for tag, m in ((b"A", a), (b"B", b)):
        for i in range(n * n):
            block = hashlib.blake2b(tag + seed + (i // 16).to_bytes(8, "big"), digest_size=64).digest()
            word = int.from_bytes(block[4 * (i % 16) : 4 * (i % 16) + 4], "little")
            assert m[i // n, i % n] == word % c.MODULUS


def test_no_int64_overflow_at_the_largest_safe_n() -> None:
    n, top = c.OVERFLOW_SAFE_N, c.MODULUS - 1
    full = np.full((n, n), top, dtype=np.int64)
    raw = np.matmul(full, full)
    assert int(raw[0, 0]) == n * top * top  # exact: no wrap-around
    assert n * top * top < 2**63
    assert (c.compute_product(full, full) == n % c.MODULUS).all()  # (p-1)^2 = 1 mod p


@settings(max_examples=40)
@given(st.integers(0, 2**32), st.integers(1, 24))
def test_a_correct_product_always_passes(i: int, n: int) -> None:
    seed = seed_of(i)
    a, b = c.derive_matrices(seed, n)
    prod = c.compute_product(a, b)
    r = c.freivalds_vectors(seed_of(i + 1), n, c.DEFAULT_ROUNDS)
    assert c.freivalds_check(a, b, prod, r)


def test_one_wrong_entry_is_always_caught_with_field_vectors() -> None:
    # Miss probability per trial < 2^-80: 300 trials must catch all.
    n = 12
    for i in range(300):
        seed = seed_of(i)
        a, b = c.derive_matrices(seed, n)
        bad = one_wrong_entry(c.encode_product(c.compute_product(a, b)), i % (n * n))
        r = c.freivalds_vectors(seed_of(50_000 + i), n, c.DEFAULT_ROUNDS)
        assert not c.freivalds_check(a, b, c.decode_product(bad, n), r)


@pytest.mark.parametrize("rounds", [1, 3])
def test_binary_vectors_miss_one_wrong_entry_with_probability_2_to_minus_k(rounds: int) -> None:
    # The textbook 0/1 Freivalds: one wrong entry in column j is missed iff r_j = 0
    # in every round, i.e. with probability 2^-k. 1200 seeded trials, 5-sigma band.
    n, trials, missed = 6, 1200, 0
    for i in range(trials):
        seed = seed_of(10_000 + i)
        a, b = c.derive_matrices(seed, n)
        bad = c.decode_product(one_wrong_entry(c.encode_product(c.compute_product(a, b)), i % (n * n)), n)
        bits = hashlib.blake2b(b"bits" + seed, digest_size=64).digest()
        r = np.array([bits[j] & 1 for j in range(n * rounds)], dtype=np.int64).reshape(n, rounds)
        missed += c.freivalds_check(a, b, bad, r)
    p = 2.0**-rounds
    sigma = (trials * p * (1 - p)) ** 0.5
    assert abs(missed - trials * p) < 5 * sigma


# -------------------------------------------------------------- the witness's verdicts


def pending(n: int = 8) -> tuple[wire.Envelope, c.PendingChallenge]:
    env = issue(n)
    return env, c.prepare_challenge(env, witness_secret=SECRET)


def test_full_round_passes_and_attests() -> None:
    env, p = pending()
    resp = answer(env)
    assert c.validate_response(p, resp, registry=REG, network_id=s.NETWORK, now_ms=ISSUED + 1234) == 1234
    att = c.judge_response(p, resp, registry=REG, network_id=s.NETWORK, now_ms=ISSUED + 1234)
    assert att.passed and att.outcome is c.Outcome.PASSED and att.elapsed_ms == 1234 and att.n == 8


def test_response_at_n_256_fits_the_message_cap() -> None:
    env = issue(256)
    data = wire.encode(answer(env))
    assert 256 * 256 * 4 < len(data) < wire.MAX_MESSAGE_BYTES
    assert wire.decode_as(data, wire.Envelope).signer == PROVIDER.public_key


def _bad(product: bytes) -> bytes:
    return one_wrong_entry(product, 3)


@pytest.mark.parametrize(
    ("name", "code", "outcome"),
    [
        ("wrong_entry", "wrong_result", c.Outcome.WRONG_RESULT),
        ("unreduced_entry", "wrong_result", c.Outcome.WRONG_RESULT),
        ("short_product", "wrong_result", c.Outcome.WRONG_RESULT),
        ("late", "deadline_missed", c.Outcome.DEADLINE_MISSED),
        ("unregistered_provider", "unknown_provider", None),
        ("signed_by_someone_else", "wrong_signer", None),
        ("answers_another_challenge", "wrong_challenge", None),
    ],
)
def test_response_rejections(name: str, code: str, outcome: c.Outcome | None) -> None:
    env, p = pending()
    now = ISSUED + 10
    good = wire.decode_as(answer(env).body, c.Response)
    registry: s.DictRegistry = REG
    if name == "wrong_entry":
        resp = answer(env, product=_bad(good.product))
    elif name == "unreduced_entry":
        arr = np.frombuffer(good.product, dtype="<u4").copy()
        arr[0] = c.MODULUS
        resp = answer(env, product=arr.tobytes())
    elif name == "short_product":
        resp = answer(env, product=good.product[:-4])
    elif name == "late":
        resp, now = answer(env), DEADLINE + 1
    elif name == "unregistered_provider":
        resp, registry = answer(env), s.DictRegistry([])
    elif name == "signed_by_someone_else":
        resp = answer(env, signer=OTHER)
    else:
        resp = answer(issue(seed=b"\x22" * 32))
    with pytest.raises(Reject) as info:
        c.validate_response(p, resp, registry=registry, network_id=s.NETWORK, now_ms=now)
    assert info.value.code == code
    if outcome is None:
        with pytest.raises(Reject):
            c.judge_response(p, resp, registry=registry, network_id=s.NETWORK, now_ms=now)
    else:
        att = c.judge_response(p, resp, registry=registry, network_id=s.NETWORK, now_ms=now)
        assert att.outcome is outcome and not att.passed


def test_no_response_is_attested_as_such() -> None:
    _, p = pending()
    att = c.judge_response(p, None, registry=REG, network_id=s.NETWORK, now_ms=DEADLINE + 1)
    assert att.outcome is c.Outcome.NO_RESPONSE and att.elapsed_ms == DEADLINE + 1 - ISSUED


def test_deadline_is_inclusive() -> None:
    env, p = pending()
    c.validate_response(p, answer(env), registry=REG, network_id=s.NETWORK, now_ms=DEADLINE)


# -------------------------------------------------------------- provider side and consensus side


@pytest.mark.parametrize(
    ("mutate", "allowed", "code"),
    [
        ({}, frozenset(), "not_assigned"),
        ({"modulus": 97}, None, "bad_modulus"),
        ({"n": 0}, None, "bad_size"),
        ({"n": c.MAX_N + 1}, None, "bad_size"),
        ({"provider": OTHER.public_key}, None, "unknown_provider"),
    ],
)
def test_challenge_rejections(mutate: dict[str, object], allowed: frozenset[bytes] | None, code: str) -> None:
    ch = dataclasses.replace(wire.decode_as(issue().body, c.Challenge), **mutate)  # type: ignore[arg-type]
    env = wire.seal(ch, WITNESS, s.NETWORK)
    ok = frozenset({WITNESS.public_key}) if allowed is None else allowed
    with pytest.raises(Reject) as info:
        c.validate_challenge(
            env, provider=PROVIDER.public_key, network_id=s.NETWORK, allowed_witnesses=ok, expected_n=ch.n
        )
    assert info.value.code == code


def test_valid_challenge_is_accepted() -> None:
    allowed = frozenset({WITNESS.public_key})
    ch = c.validate_challenge(
        issue(), provider=PROVIDER.public_key, network_id=s.NETWORK, allowed_witnesses=allowed, expected_n=8
    )
    assert ch.n == 8
    with pytest.raises(Reject) as info:  # PROVIDER's capacity 10 sets n = 10: an n = 8 proof would not count
        c.validate_challenge(
            issue(),
            provider=PROVIDER.public_key,
            network_id=s.NETWORK,
            allowed_witnesses=allowed,
            expected_n=c.challenge_size(10),
        )
    assert info.value.code == "wrong_size"


def test_attestation_validation() -> None:
    env, p = pending()
    att = c.judge_response(p, answer(env), registry=REG, network_id=s.NETWORK, now_ms=ISSUED + 1)
    sealed = wire.seal(att, WITNESS, s.NETWORK)
    assigned = frozenset({WITNESS.public_key})
    ok = {"epoch": 4, "assigned": assigned, "expected_n": 8}
    assert c.validate_attestation(sealed, network_id=s.NETWORK, **ok) == att  # type: ignore[arg-type]
    for kwargs, code in (
        ({**ok, "epoch": 5}, "wrong_epoch"),
        ({**ok, "assigned": frozenset()}, "not_assigned"),
        ({**ok, "expected_n": c.challenge_size(10)}, "wrong_size"),  # the provider's capacity sets n = 10
    ):
        with pytest.raises(Reject) as info:
            c.validate_attestation(sealed, network_id=s.NETWORK, **kwargs)  # type: ignore[arg-type]
        assert info.value.code == code
    forged = wire.seal(att, OTHER, s.NETWORK)
    with pytest.raises(Reject) as info:
        c.validate_attestation(forged, network_id=s.NETWORK, epoch=4, assigned=assigned, expected_n=8)
    assert info.value.code == "wrong_signer"


def test_published_verdicts_can_be_audited() -> None:
    env, p = pending()
    ch = wire.decode_as(env.body, c.Challenge)
    good = wire.decode_as(answer(env).body, c.Response)
    att = c.judge_response(p, answer(env), registry=REG, network_id=s.NETWORK, now_ms=ISSUED + 1)
    assert att.passed and c.audit(ch, good, att)
    bad = dataclasses.replace(good, product=_bad(good.product))
    assert not c.audit(ch, bad, att)  # a PASSED verdict on this product would be a provable lie
    assert att.r_seed == c.private_r_seed(SECRET, p.challenge_id)


def test_vectors_depend_on_the_witness_secret_not_only_on_public_data() -> None:
    env = issue()
    a = c.prepare_challenge(env, witness_secret=b"one")
    b = c.prepare_challenge(env, witness_secret=b"two")
    assert not np.array_equal(a.r, b.r)
    # Both still accept the right answer and reject a wrong one.
    good = answer(env)
    wrong = answer(env, product=_bad(wire.decode_as(good.body, c.Response).product))
    for pend in (a, b):
        c.validate_response(pend, good, registry=REG, network_id=s.NETWORK, now_ms=ISSUED)
        with pytest.raises(Reject):
            c.validate_response(pend, wrong, registry=REG, network_id=s.NETWORK, now_ms=ISSUED)
