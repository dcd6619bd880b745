"""Reads of the LMDB store do not wait for one another, nor for a commit (real LMDB, real threads).

Found in a 16-node devnet: consensus checks a proposed value in a worker
thread inside one read view (every proof of the epoch re-checked, seconds
under load), and the store's single lock made every read of the event loop
thread (the device lookup of each gossiped proof, the witness service's
context, ``/status``) wait for it: the whole node stalled, pings and gossip
included.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from depin_p2p.ledger.state import Account, EpochValue, Reward
from depin_p2p.ledger.store import LedgerStore
from tests.unit.ledger.helpers import IDS, NETWORK, certificate, open_store

HOLD_S = 1.0


def _hold_a_view(store: LedgerStore, entered: threading.Event, seconds: float) -> None:
    with store.view() as view:
        view.last_epoch()
        entered.set()
        time.sleep(seconds)


def _reader_elsewhere(store: LedgerStore) -> threading.Thread:
    entered = threading.Event()
    thread = threading.Thread(target=_hold_a_view, args=(store, entered, HOLD_S), daemon=True)
    thread.start()
    assert entered.wait(5)
    return thread


def test_a_read_does_not_wait_for_a_long_view_in_another_thread(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    try:
        thread = _reader_elsewhere(store)
        started = time.monotonic()
        assert store.last_epoch() == 0
        assert store.read(lambda v: v.get_account(IDS[0])) is not None
        waited = time.monotonic() - started
        thread.join(5)
        assert waited < HOLD_S / 2, f"the read waited {waited:.2f} s for another thread's view"
    finally:
        store.close()


def test_a_commit_beside_a_long_view_is_not_seen_by_it_and_is_by_the_next(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    try:
        seen: list[int] = []
        entered, release = threading.Event(), threading.Event()

        def old_reader() -> None:
            with store.view() as view:
                entered.set()
                release.wait(5)
                seen.append(view.last_epoch())

        thread = threading.Thread(target=old_reader, daemon=True)
        thread.start()
        assert entered.wait(5)
        prev = store.read(lambda v: v.last_certificate_hash())
        value = EpochValue(1, prev, (), (Reward(IDS[1], 5),), (), 5)
        started = time.monotonic()
        store.commit_epoch(store.apply(value, NETWORK), certificate(1))  # while the view is open
        assert time.monotonic() - started < 2.5  # the reader lets go after 5 s: it did not wait
        assert store.last_epoch() == 1
        release.set()
        thread.join(5)
        assert seen == [0]  # the open view kept its snapshot
    finally:
        store.close()


def test_the_map_grows_while_another_thread_reads(tmp_path: Path) -> None:
    # Growing the map needs no transaction open in this process: the write waits for the
    # reader, then grows the map and commits; nothing is lost.
    store = LedgerStore.open(tmp_path / "store", map_size=1 << 20)
    try:
        from depin_p2p.ledger.state import InitialState, compute_genesis_changes  # noqa: PLC0415

        many = tuple(sorted((bytes([i % 256, i // 256]) * 16, Account(1, 0)) for i in range(5_000)))
        init = InitialState(many, (), (), b"\xaa" * 32)
        changes = store.read(lambda v: compute_genesis_changes(v, init))
        thread = _reader_elsewhere(store)
        store.commit_genesis(changes)
        thread.join(5)
        assert store.last_epoch() == 0
        assert store.read(lambda v: v.get_account(many[-1][0])) == Account(1, 0)
    finally:
        store.close()
