"""The epoch transition: each transaction rule, value-level rejects, supply conservation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Reject
from depin_p2p.ledger import merkle
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import (
    EVIDENCE_MAX_AGE_EPOCHS,
    MIN_NEW_ACCOUNT_TRANSFER,
    UNBONDING_EPOCHS,
    Account,
    DeviceBinding,
    RegisterDevice,
    Reward,
    Slash,
    Stake,
    Transfer,
    Unbonding,
    Unstake,
    UsedEvidence,
    ValidatorStake,
    apply_epoch,
    encode_account,
    sign_device_binding,
    validate_evidence_age,
    validator_set,
)
from depin_p2p.model import DeviceKind, Validator
from tests.unit.ledger.helpers import (
    GENESIS_HASH,
    IDS,
    KEYS,
    NETWORK,
    START_BALANCE,
    certificate,
    codes,
    epoch_value,
    initial_state,
    memory_ledger,
    open_store,
)

OUTSIDER = KeyPair.from_seed(b"\x77" * 32)
DEVICE = KeyPair.from_seed(b"\x55" * 32)


def step(mem: MemoryLedger, *txs: wire.Envelope, rewards: tuple[Reward, ...] = (), slashes=()):  # type: ignore[no-untyped-def]
    value = epoch_value(mem.meta.epoch + 1, mem.last_certificate_hash(), txs, rewards, slashes)
    changes = apply_epoch(mem, value, NETWORK)
    mem.commit(changes, certificate(value.epoch))
    return changes


def total_held(mem: MemoryLedger) -> int:
    return sum(a.balance for a in mem.accounts.values()) + sum(
        v.stake + v.unbonding_total for v in mem.validators.values()
    )


def register(owner: KeyPair, device: KeyPair, nonce: int, signed_owner: bytes | None = None) -> wire.Envelope:
    sig = sign_device_binding(device, signed_owner or owner.public_key, NETWORK)
    tx = RegisterDevice(
        nonce, device.public_key, DeviceKind.RADIO, 0x8C2A100D2C49DFF, 868_100_000, 1400, 300, 0, sig
    )
    return wire.seal(tx, owner, NETWORK)


def test_transfer_moves_funds_and_bumps_the_nonce() -> None:
    mem = memory_ledger()
    changes = step(mem, wire.seal(Transfer(0, IDS[1], 250), KEYS[0], NETWORK))
    assert codes(changes) == [None]
    assert mem.accounts[IDS[0]] == Account(START_BALANCE - 250, 1)
    assert mem.accounts[IDS[1]] == Account(START_BALANCE + 250, 0)
    new = KeyPair.from_seed(b"\x66" * 32).public_key
    step(mem, wire.seal(Transfer(1, new, MIN_NEW_ACCOUNT_TRANSFER), KEYS[0], NETWORK))
    assert mem.accounts[new] == Account(MIN_NEW_ACCOUNT_TRANSFER, 0)


def test_creating_an_account_takes_a_minimum_first_transfer() -> None:
    # State spam: each account is a leaf every node stores; dust cannot create one.
    mem = memory_ledger()
    new, other = (KeyPair.from_seed(bytes([s]) * 32).public_key for s in (0x67, 0x68))
    changes = step(
        mem,
        wire.seal(Transfer(0, new, MIN_NEW_ACCOUNT_TRANSFER - 1), KEYS[0], NETWORK),  # judged: nonce used
        wire.seal(Transfer(1, other, MIN_NEW_ACCOUNT_TRANSFER), KEYS[0], NETWORK),
        wire.seal(Transfer(2, other, 1), KEYS[0], NETWORK),  # it exists now: any amount
    )
    assert codes(changes) == ["below_new_account_minimum", None, None]
    assert new not in mem.accounts
    assert mem.accounts[other] == Account(MIN_NEW_ACCOUNT_TRANSFER + 1, 0)
    assert mem.accounts[IDS[0]] == Account(START_BALANCE - MIN_NEW_ACCOUNT_TRANSFER - 1, 3)


def test_invalid_transactions_are_skipped_with_a_reason() -> None:
    mem = memory_ledger()
    good = wire.seal(Transfer(2, IDS[1], 1), KEYS[0], NETWORK)
    tampered = wire.Envelope(good.network_id, good.signer, bytes(64), good.body)
    changes = step(
        mem,
        wire.seal(Transfer(3, IDS[1], 1), KEYS[0], NETWORK),  # nonce too high
        wire.seal(Transfer(0, IDS[1], START_BALANCE + 1), KEYS[0], NETWORK),  # fails, uses nonce 0
        wire.seal(Transfer(1, IDS[1], 0), KEYS[0], NETWORK),  # fails, uses nonce 1
        wire.seal(Transfer(0, IDS[1], 1), OUTSIDER, NETWORK),
        wire.seal(Transfer(0, IDS[1], 1), KEYS[0], "other-net"),
        tampered,
        wire.seal(DeviceBinding(IDS[2], IDS[0]), KEYS[0], NETWORK),
        good,
        good,  # replay within the epoch: the nonce is used up
    )
    assert codes(changes) == [
        "bad_nonce",
        "insufficient_balance",
        "zero_amount",
        "unknown_account",
        "wrong_network",
        "bad_signature",
        "not_a_transaction",
        None,
        "bad_nonce",
    ]
    assert mem.accounts[IDS[0]] == Account(START_BALANCE - 1, 3)
    assert len({r.tx_id for r in changes.tx_results}) == 8  # tx ids are content ids


def test_register_device_needs_the_device_signature() -> None:
    mem = memory_ledger()
    changes = step(
        mem,
        register(KEYS[0], DEVICE, 0, signed_owner=IDS[1]),  # the device agreed to another owner
        register(KEYS[0], DEVICE, 1),  # the failed one used nonce 0
        register(KEYS[1], DEVICE, 0),
    )
    assert codes(changes) == ["bad_device_signature", None, "device_exists"]
    device = mem.devices[DEVICE.public_key]
    assert (device.owner, device.registered_epoch, device.kind) == (IDS[0], 1, DeviceKind.RADIO)
    assert mem.get_device(DEVICE.public_key) == device


def test_stake_then_unstake_returns_funds_after_the_unbonding_period() -> None:
    mem = memory_ledger(initial_state({}))
    assert validator_set(mem) == ()
    step(mem, wire.seal(Stake(0, 400), KEYS[1], NETWORK))
    assert mem.accounts[IDS[1]].balance == START_BALANCE - 400
    assert validator_set(mem) == (Validator(IDS[1], 400),)
    changes = step(
        mem,
        wire.seal(Unstake(1, 500), KEYS[1], NETWORK),
        wire.seal(Unstake(2, 300), KEYS[1], NETWORK),
        wire.seal(Unstake(3, 100), KEYS[1], NETWORK),  # same epoch: one entry
        wire.seal(Unstake(0, 1), KEYS[2], NETWORK),
    )
    assert codes(changes) == ["insufficient_stake", None, None, "not_a_validator"]
    assert mem.validators[IDS[1]] == ValidatorStake(0, (Unbonding(400, 2 + UNBONDING_EPOCHS),))
    assert validator_set(mem) == ()  # power is gone at once
    for _ in range(UNBONDING_EPOCHS - 1):
        step(mem)
        assert mem.accounts[IDS[1]].balance == START_BALANCE - 400  # funds still bonded (slashable)
    step(mem)
    assert mem.accounts[IDS[1]].balance == START_BALANCE
    assert IDS[1] not in mem.validators  # nothing left: the record is deleted


def test_slash_burns_stake_and_lowers_supply() -> None:
    mem = memory_ledger(initial_state({0: 10_000, 1: 3}))
    supply = mem.meta.total_supply
    ev = [bytes([i]) * 32 for i in range(3)]
    step(mem, wire.seal(Unstake(0, 1_000), KEYS[0], NETWORK))
    step(mem, wire.seal(Unstake(1, 3_000), KEYS[0], NETWORK))
    changes = step(
        mem,
        slashes=(
            Slash(IDS[0], 2_500, ev[0]),  # 25% of 6000 stake + 4000 unbonding
            Slash(IDS[0], 10_000, ev[0]),  # same evidence twice
            Slash(IDS[5], 10_000, ev[1]),
            Slash(IDS[1], 5_000, ev[2]),  # 1.5 rounds down to 1
        ),
    )
    assert [r.code for r in changes.slash_results] == [None, "duplicate_evidence", "not_a_validator", None]
    assert [r.burned for r in changes.slash_results] == [2_500, 0, 0, 1]
    assert mem.validators[IDS[0]] == ValidatorStake(3_500, (Unbonding(1_000, 4), Unbonding(3_000, 5)))
    assert mem.meta.total_supply == supply - 2_501 == total_held(mem)
    # More than the stake: the rest is burned from the soonest-released unbonding entry.
    # Epoch 4: slashes apply before the entry due now is released.
    balance = mem.accounts[IDS[0]].balance
    changes = step(mem, slashes=(Slash(IDS[0], 5_000, b"\x09" * 32),))  # 50% of 7500
    assert changes.burned == 3_750
    assert mem.validators[IDS[0]] == ValidatorStake(0, (Unbonding(3_000, 5),))
    assert mem.accounts[IDS[0]].balance == balance + 750
    assert mem.meta.total_supply == supply - 2_501 - 3_750 == total_held(mem)


def test_used_evidence_is_remembered_while_it_could_still_be_admissible() -> None:
    mem = memory_ledger()
    ev = b"\x33" * 32
    step(mem, slashes=(Slash(IDS[0], 100, ev),))  # epoch 1: evidence of epoch 0 at the latest
    assert mem.evidence == {ev: UsedEvidence(IDS[0], 1)}
    for epoch in range(2, 1 + EVIDENCE_MAX_AGE_EPOCHS):
        validate_evidence_age(0, epoch)  # still admissible: the record must stay
        step(mem)
        assert ev in mem.evidence
    with pytest.raises(Reject, match="evidence_too_old"):
        validate_evidence_age(0, 1 + EVIDENCE_MAX_AGE_EPOCHS)
    step(mem)  # epoch 1 + MAX_AGE: no evidence of epoch <= 0 is admissible any more
    assert mem.evidence == {}
    assert mem.state_root() == merkle.compute_root(mem.entries())
    with pytest.raises(Reject, match="evidence_too_early"):
        validate_evidence_age(5, 5)


def test_rewards_must_sum_to_the_declared_emission() -> None:
    mem = memory_ledger()
    value = epoch_value(1, GENESIS_HASH, rewards=(Reward(IDS[0], 10), Reward(IDS[1], 5)))
    ok = apply_epoch(mem, value, NETWORK)
    assert ok.minted == 15
    assert ok.meta.total_supply == mem.meta.total_supply + 15
    for emission in (14, 16, 0):
        bad = wire.decode(wire.encode(value))
        bad = type(value)(bad.epoch, bad.prev_certificate_hash, bad.txs, bad.rewards, bad.slashes, emission)
        with pytest.raises(Reject) as info:
            apply_epoch(mem, bad, NETWORK)
        assert info.value.code == "reward_sum_mismatch"


@pytest.mark.parametrize(
    ("epoch", "prev", "rewards", "code"),
    [
        (2, GENESIS_HASH, (), "wrong_epoch"),
        (0, GENESIS_HASH, (), "wrong_epoch"),
        (1, b"\x01" * 32, (), "wrong_prev_certificate"),
        (1, GENESIS_HASH, (Reward(IDS[0], wire.UINT64_MAX - 100),), "supply_overflow"),
    ],
)
def test_values_that_cannot_apply_are_rejected(epoch, prev, rewards, code) -> None:  # type: ignore[no-untyped-def]
    mem = memory_ledger()
    with pytest.raises(Reject) as info:
        apply_epoch(mem, epoch_value(epoch, prev, rewards=rewards), NETWORK)
    assert info.value.code == code


def test_next_epoch_must_build_on_the_committed_certificate() -> None:
    mem = memory_ledger()
    step(mem)
    assert mem.last_certificate_hash() == wire.content_id(certificate(1))
    with pytest.raises(Reject, match="wrong_prev_certificate"):
        apply_epoch(mem, epoch_value(2, GENESIS_HASH), NETWORK)
    assert step(mem).meta.prev_certificate_hash == wire.content_id(certificate(1))


# --------------------------------------------------------------------------
# Properties over random transaction sequences

_tx = st.tuples(
    st.sampled_from(["transfer", "stake", "unstake"]),
    st.integers(0, 4),  # sender
    st.integers(0, 5),  # recipient (5 = a fresh account)
    st.integers(0, START_BALANCE // 2),
    st.integers(-1, 1),  # nonce offset: mostly right, sometimes wrong
)
_epoch = st.tuples(
    st.lists(_tx, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10_000)), max_size=3),
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 10_000)), max_size=2),
)
FRESH = KeyPair.from_seed(b"\x99" * 32).public_key


def _build(mem: MemoryLedger, epoch_spec, counter: list[int]):  # type: ignore[no-untyped-def]
    txs, rewards, slashes = epoch_spec
    nonces = {i: (mem.accounts.get(IDS[i]) or Account(0, 0)).nonce for i in range(5)}
    envs = []
    for kind, sender, to, amount, offset in txs:
        nonce = max(0, nonces[sender] + offset)
        if offset == 0:
            nonces[sender] += 1
        dest = FRESH if to == 5 else IDS[to]
        msg = {"transfer": Transfer(nonce, dest, amount), "stake": Stake(nonce, amount),
               "unstake": Unstake(nonce, amount)}[kind]
        envs.append(wire.seal(msg, KEYS[sender], NETWORK))
    rw = tuple(Reward(FRESH if a == 5 else IDS[a], amt) for a, amt in rewards)
    sl = []
    for v, bp in slashes:
        counter[0] += 1
        sl.append(Slash(IDS[v], bp, counter[0].to_bytes(32, "big")))
    return epoch_value(mem.meta.epoch + 1, mem.last_certificate_hash(), tuple(envs), rw, tuple(sl))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_epoch, min_size=1, max_size=4))
def test_supply_is_conserved_except_for_emission_and_slashing(epochs) -> None:  # type: ignore[no-untyped-def]
    mem = memory_ledger(initial_state({0: 100_000, 1: 50_000}))
    counter = [0]
    assert total_held(mem) == mem.meta.total_supply
    for spec in epochs:
        before = mem.meta.total_supply
        changes = apply_epoch(mem, _build(mem, spec, counter), NETWORK)
        mem.commit(changes, certificate(changes.epoch))
        assert changes.meta.total_supply == before + changes.minted - changes.burned
        assert total_held(mem) == mem.meta.total_supply
        assert mem.state_root() == merkle.compute_root(mem.entries())


@settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(_epoch, min_size=1, max_size=3))
def test_same_values_give_identical_roots_on_fresh_stores(tmp_path_factory, epochs) -> None:  # type: ignore[no-untyped-def]
    mem = memory_ledger()
    values = []
    counter = [0]
    for spec in epochs:
        value = _build(mem, spec, counter)
        values.append(value)
        mem.commit(apply_epoch(mem, value, NETWORK), certificate(value.epoch))
    roots = []
    for _ in range(2):
        store = open_store(tmp_path_factory.mktemp("store"))
        try:
            for value in values:
                changes = store.apply(value, NETWORK)
                store.commit_epoch(changes, certificate(value.epoch))
            roots.append(store.state_root())
            assert store.read(lambda v: merkle.compute_root(v.entries())) == roots[-1]
        finally:
            store.close()
    assert roots[0] == roots[1] == mem.state_root()


def test_root_changes_with_every_epoch(tmp_path: Path) -> None:
    mem = memory_ledger()
    seen = {mem.state_root()}
    for _ in range(3):
        seen.add(step(mem).root)
    assert len(seen) == 4  # meta (epoch) changes each time, so must the root


@given(st.integers(0, wire.UINT64_MAX), st.integers(0, wire.UINT64_MAX))
def test_fast_account_encoding_is_the_wire_encoding(balance: int, nonce: int) -> None:
    assert encode_account(Account(balance, nonce)) == wire.encode(Account(balance, nonce))
