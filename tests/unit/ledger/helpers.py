"""Shared builders for ledger tests: seeded keys, a genesis state, both backends."""

from __future__ import annotations

from pathlib import Path

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import (
    Account,
    EpochValue,
    InitialState,
    Reward,
    Slash,
    StateChanges,
    compute_genesis_changes,
)
from depin_p2p.ledger.store import LedgerStore

NETWORK = "ledger-test"
GENESIS_HASH = bytes.fromhex("aa" * 32)
KEYS = [KeyPair.from_seed(bytes([i]) * 32) for i in range(1, 9)]
IDS = [k.public_key for k in KEYS]
START_BALANCE = 1_000_000


def initial_state(validator_stakes: dict[int, int] | None = None) -> InitialState:
    stakes = {0: 500_000} if validator_stakes is None else validator_stakes
    return InitialState(
        accounts=tuple(sorted((aid, Account(START_BALANCE, 0)) for aid in IDS)),
        devices=(),
        validators=tuple(sorted((IDS[i], s) for i, s in stakes.items())),
        genesis_hash=GENESIS_HASH,
    )


def memory_ledger(initial: InitialState | None = None) -> MemoryLedger:
    mem = MemoryLedger()
    mem.commit(compute_genesis_changes(mem, initial or initial_state()), b"")
    return mem


def open_store(path: Path, initial: InitialState | None = None) -> LedgerStore:
    store = LedgerStore.open(path)
    store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, initial or initial_state())))
    return store


def epoch_value(
    epoch: int,
    prev: bytes,
    txs: tuple[wire.Envelope, ...] = (),
    rewards: tuple[Reward, ...] = (),
    slashes: tuple[Slash, ...] = (),
) -> EpochValue:
    return EpochValue(epoch, prev, txs, rewards, slashes, sum(r.amount for r in rewards))


def certificate(epoch: int) -> bytes:
    return b"certificate-%d" % epoch


def codes(changes: StateChanges) -> list[str | None]:
    return [r.code for r in changes.tx_results]
