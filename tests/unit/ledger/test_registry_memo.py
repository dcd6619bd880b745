"""The node's device registry remembers lookups only until the ledger's next commit (real LMDB)."""

from __future__ import annotations

from pathlib import Path

from depin_p2p import wire
from depin_p2p.assemble import LedgerRegistry, SinceCommit
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import RegisterDevice, apply_epoch, sign_device_binding
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.model import DeviceKind
from tests.unit.ledger.helpers import KEYS, NETWORK, certificate, epoch_value, memory_ledger, open_store

DEVICE = KeyPair.from_seed(b"\x51" * 32)


def _register(nonce: int) -> wire.Envelope:
    sig = sign_device_binding(DEVICE, KEYS[0].public_key, NETWORK)
    tx = RegisterDevice(
        nonce, DEVICE.public_key, DeviceKind.RADIO, 0x8C2A100D2C49DFF, 868_100_000, 1400, 300, 0, sig
    )
    return wire.seal(tx, KEYS[0], NETWORK)


def _commit(ledger: LedgerStore | MemoryLedger, *txs: wire.Envelope) -> None:
    value = epoch_value(ledger.last_epoch() + 1, ledger.read(lambda v: v.last_certificate_hash()), txs)
    if isinstance(ledger, LedgerStore):
        ledger.commit_epoch(ledger.apply(value, NETWORK), certificate(value.epoch))
    else:
        ledger.commit(apply_epoch(ledger, value, NETWORK), certificate(value.epoch))


def test_a_device_registered_after_a_lookup_is_found_once_its_epoch_commits(tmp_path: Path) -> None:
    for ledger in (open_store(tmp_path / "store"), memory_ledger()):
        registry = LedgerRegistry(ledger)
        assert registry.get_device(DEVICE.public_key) is None  # looked up (and kept) before it exists
        _commit(ledger)  # an epoch without it: still absent
        assert registry.get_device(DEVICE.public_key) is None
        _commit(ledger, _register(0))
        found = registry.get_device(DEVICE.public_key)
        assert found is not None and found.owner == KEYS[0].public_key
        if isinstance(ledger, LedgerStore):
            ledger.close()


def test_a_kept_value_is_served_without_a_read_until_the_next_commit(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    try:
        memo: SinceCommit[bytes, int] = SinceCommit(store, limit=2)
        reads: list[bytes] = []

        def read(key: bytes) -> int:
            reads.append(key)
            return store.last_epoch()

        assert [memo.get(k, lambda k=k: read(k)) for k in (b"a", b"a", b"b", b"c", b"c")] == [0] * 5
        assert reads == [b"a", b"b", b"c", b"c"]  # at most 2 kept: c is read each time
        _commit(store)
        assert memo.get(b"a", lambda: read(b"a")) == 1
        assert reads[-1] == b"a"
    finally:
        store.close()


def test_a_store_view_decodes_each_device_once_and_a_later_view_sees_the_next_commit(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    try:
        with store.view() as before:
            assert before.get_device(DEVICE.public_key) is None
            assert before.get_device(DEVICE.public_key) is None
        _commit(store, _register(0))
        with store.view() as after:
            found = after.get_device(DEVICE.public_key)
            assert found is not None and found.owner == KEYS[0].public_key
            assert after.get_device(DEVICE.public_key) is found  # decoded once for the view's life
    finally:
        store.close()
