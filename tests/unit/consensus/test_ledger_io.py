"""Where the consensus loop's ledger work runs: a small value on the loop, a big one in a worker thread.

Drives :class:`~depin_p2p.consensus.ledger_io.EpochLedger` on a real LMDB
store: the epoch-1 value built from an empty pool, checked and committed, with
the thread that ran each step of it recorded.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import driver as d
from depin_p2p.consensus.ledger_io import EpochLedger
from depin_p2p.consensus.state import Candidate, Certificate, proposer_for, value_id_of
from depin_p2p.consensus.sync import ReadView
from depin_p2p.consensus.value import EpochContent, ValueParams
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.genesis import parse_genesis
from depin_p2p.ledger.state import StateChanges, Transfer, compute_genesis_changes
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.witness.pool import ProofPool
from devnet.genesis import DevnetPlan, plan_devnet

T = TypeVar("T")


class Recorded:
    """A real store that notes the thread of each read and write consensus asks of it."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.step = ""  # what the test is running
        self.threads: dict[str, set[bool]] = {}  # step -> {ran on the test's own thread}

    def _note(self, call: str) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        self.threads.setdefault(f"{self.step}.{call}", set()).add(on_main)

    def read(self, fn: Callable[[ReadView], T]) -> T:
        self._note("read")
        return self.store.read(fn)

    def commit_epoch(
        self, changes: StateChanges, certificate: bytes, *, certificate_hash: bytes | None = None
    ) -> None:
        self._note("commit")
        self.store.commit_epoch(changes, certificate, certificate_hash=certificate_hash)

    async def commit_epoch_async(
        self, changes: StateChanges, certificate: bytes, *, certificate_hash: bytes | None = None
    ) -> None:
        commit = functools.partial(self.commit_epoch, certificate_hash=certificate_hash)
        await trio.to_thread.run_sync(commit, changes, certificate)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[LedgerStore, str]]:
    devnet = plan_devnet(DevnetPlan(nodes=4, seed=b"ledger-io"), genesis_time_ms=1_767_225_600_000)
    genesis = parse_genesis(json.dumps(devnet.genesis))
    s = LedgerStore.open(tmp_path / "ledger")
    try:
        s.commit_genesis(s.read(lambda v: compute_genesis_changes(v, genesis.initial_state())))
        yield s, devnet.network_id
    finally:
        s.close()


def _epoch_ledger(rec: Recorded, network_id: str, inline_bytes: int, inline_items: int) -> EpochLedger:
    return EpochLedger(
        rec,
        ProofPool(rec.store, network_id),
        ValueParams(network_id=network_id, emission_per_epoch=1_000),
        pending_txs=lambda: (),
        on_tx_results=lambda _e, _r: None,
        on_commit=lambda _e: None,
        offload=True,
        inline_items=inline_items,
        inline_bytes=inline_bytes,
    )


async def _build_check_commit(ledger: EpochLedger, rec: Recorded) -> None:
    rec.step = "build"
    built = await ledger.build(d.BuildRequest(1, 0, ()))
    rec.step = "head"
    cand = Candidate(1, ledger.head().prev_cert_hash, built.value)
    rec.step = "check"
    checked = await ledger.check(built.value, value_id_of(cand))
    assert checked.ok
    rec.step = "commit"
    committed = await ledger.commit(Certificate(cand, 0, ()), checked.payload)
    assert committed.epoch == 1 and committed.head.next_epoch == 2


@pytest.mark.parametrize(
    ("inline_bytes", "inline_items", "on_loop"),
    [(64 * 1024, 300, True), (0, -1, False)],
    ids=["small-value-on-the-loop", "big-value-in-a-thread"],
)
def test_build_check_and_commit_run_on_the_loop_only_for_a_small_value(
    store: tuple[LedgerStore, str], inline_bytes: int, inline_items: int, on_loop: bool
) -> None:
    s, network_id = store
    rec = Recorded(s)
    ledger = _epoch_ledger(rec, network_id, inline_bytes, inline_items)
    trio.run(_build_check_commit, ledger, rec)
    # The build's read of the ledger, the check's, the commit's write; the head is read on the loop always.
    assert rec.threads == {
        "build.read": {on_loop},
        "head.read": {True},
        "check.read": {on_loop},
        "commit.commit": {on_loop},
        "commit.read": {True},
    }
    assert s.last_epoch() == 1
    raw = s.read(lambda v: v.get_certificate(1))
    assert wire.decode_as(raw or b"", Certificate).epoch == 1  # committed for real


def _ahead_ledger(s: LedgerStore, network_id: str, txs: list[wire.Envelope]) -> EpochLedger:
    return EpochLedger(
        s,
        ProofPool(s, network_id),
        ValueParams(network_id=network_id, emission_per_epoch=1_000),
        pending_txs=lambda: txs,
        on_tx_results=lambda _e, _r: None,
        on_commit=lambda _e: None,
        offload=True,
    )


EPOCHS = d.EpochClock(origin_ms=1_000_000, length_ms=2_000)  # epoch 1 due at 1,002,000


async def _built_ahead_then_asked(
    ledger: EpochLedger, me: bytes, change: Callable[[], None] = lambda: None
) -> d.ValueBuilt:
    clock = Clock(wall_anchor_ms=EPOCHS.origin_ms - 5_000)  # started before the genesis
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.build_ahead, clock, EPOCHS, me, lambda: (), 100)
        await clock.sleep_until_ms(EPOCHS.due_ms(1) - 50)  # built 100 ms ahead; due in 50 ms
        change()
        await clock.sleep_until_ms(EPOCHS.due_ms(1))
        built = await ledger.build(d.BuildRequest(1, 0, ()))
        nursery.cancel_scope.cancel()
    return built


def _proposer(ledger: EpochLedger) -> bytes:
    head = ledger.head()
    return proposer_for(head.validators, head.prev_cert_hash, 1, 0)


def _transfer(network_id: str) -> wire.Envelope:
    return wire.seal(Transfer(0, b"\x07" * 32, 5), KeyPair.from_seed(b"\x33" * 32), network_id)


async def test_the_round_0_proposer_builds_ahead_and_uses_that_value_when_nothing_changed(
    store: tuple[LedgerStore, str], autojump_clock: trio.testing.MockClock
) -> None:
    s, network_id = store
    ledger = _ahead_ledger(s, network_id, [_transfer(network_id)])
    built = await _built_ahead_then_asked(ledger, _proposer(ledger))
    assert ledger.build_ahead_counts == {"used": 1, "stale": 0}
    fresh = await _ahead_ledger(s, network_id, [_transfer(network_id)]).build(d.BuildRequest(1, 0, ()))
    assert built.value == fresh.value and built.round == 0


async def test_a_value_built_ahead_is_built_again_when_its_inputs_changed(
    store: tuple[LedgerStore, str], autojump_clock: trio.testing.MockClock
) -> None:
    s, network_id = store
    txs: list[wire.Envelope] = []
    ledger = _ahead_ledger(s, network_id, txs)
    late_tx = _transfer(network_id)
    built = await _built_ahead_then_asked(ledger, _proposer(ledger), lambda: txs.append(late_tx))
    assert ledger.build_ahead_counts == {"used": 0, "stale": 1}
    content = wire.decode_as(built.value, EpochContent)
    assert content.ledger.txs == (_transfer(network_id),)  # the transaction that came after the early build


async def test_a_validator_that_does_not_propose_round_0_builds_nothing_ahead(
    store: tuple[LedgerStore, str], autojump_clock: trio.testing.MockClock
) -> None:
    s, network_id = store
    ledger = _ahead_ledger(s, network_id, [])
    others = [v.address for v in ledger.head().validators.members if v.address != _proposer(ledger)]
    await _built_ahead_then_asked(ledger, others[0])
    assert ledger.build_ahead_counts == {"used": 0, "stale": 0}
