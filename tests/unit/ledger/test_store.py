"""The LMDB store: persistence, one-transaction commits, map growth, locking, sign state."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import InternalError, StorageError
from depin_p2p.ledger import merkle
from depin_p2p.ledger.state import (
    Account,
    InitialState,
    Reward,
    Stake,
    Transfer,
    Unbonding,
    Unstake,
    ValidatorStake,
    account_key,
    compute_genesis_changes,
    validator_key,
)
from depin_p2p.ledger.store import FORMAT, LedgerStore, LmdbView, _decode_account
from tests.unit.ledger.helpers import (
    GENESIS_HASH,
    IDS,
    KEYS,
    NETWORK,
    START_BALANCE,
    certificate,
    epoch_value,
    initial_state,
    memory_ledger,
    open_store,
)

ROOT = Path(__file__).resolve().parents[3]


def commit_next(store: LedgerStore, *txs: wire.Envelope, rewards: tuple[Reward, ...] = ()) -> None:
    value = epoch_value(store.last_epoch() + 1, store.read(lambda v: v.last_certificate_hash()), txs, rewards)
    store.commit_epoch(store.apply(value, NETWORK), certificate(value.epoch))


def test_state_survives_reopen_and_matches_memory(tmp_path: Path) -> None:
    mem = memory_ledger()
    with open_store(tmp_path) as store:
        assert store.last_epoch() == 0
        assert store.state_root() == mem.state_root()
        commit_next(store, wire.seal(Transfer(0, IDS[1], 10), KEYS[0], NETWORK), rewards=(Reward(IDS[2], 3),))
        commit_next(store)
        root = store.state_root()
    with LedgerStore.open(tmp_path, readonly=True) as store, store.view() as view:
        assert view.last_epoch() == 2
        assert view.state_root() == root == merkle.compute_root(view.entries())
        assert view.get_account(IDS[0]) == Account(START_BALANCE - 10, 1)
        assert view.get_certificate(1) == certificate(1)
        assert view.get_certificate(2) == certificate(2)
        assert view.get_certificate(3) is None
        assert view.last_certificate_hash() == wire.content_id(certificate(2))
        assert view.get_meta().epoch == 2


def test_an_epoch_value_is_stored_once(tmp_path: Path) -> None:
    # Issue 12 item 7: every epoch's value was written twice, in its certificate (which
    # carries it) and in an ``epoch_values`` database, so the data file, mapped and
    # counted in RSS, grew twice as fast as needed. A value bigger than a page lives in
    # overflow pages of its own, so its copies in the file can be counted.
    value = epoch_value(1, GENESIS_HASH, rewards=(Reward(IDS[0], 5),))
    blob = wire.encode(value) + bytes(range(256)) * 64
    with open_store(tmp_path) as store:
        store.commit_epoch(store.apply(value, NETWORK), b"certificate-1:" + blob)
        assert store.read(lambda v: v.get_certificate(1)) == b"certificate-1:" + blob
    assert (tmp_path / "data.mdb").read_bytes().count(blob) == 1


def test_a_failed_commit_leaves_no_trace(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        value = epoch_value(1, GENESIS_HASH, rewards=(Reward(IDS[0], 5),))
        changes = store.apply(value, NETWORK)
        before = store.state_root()
        # Records and tree nodes are written first; a stale entry that is not bytes fails the txn late.
        bad_stale = (*changes.merkle.stale, 12345)
        broken = dataclasses.replace(changes, merkle=dataclasses.replace(changes.merkle, stale=bad_stale))
        with pytest.raises(TypeError):
            store.commit_epoch(broken, certificate(1))
        assert store.last_epoch() == 0
        assert store.state_root() == before
        assert store.read(lambda v: v.get_account(IDS[0])) == Account(START_BALANCE, 0)
        assert store.read(lambda v: v.get_certificate(1)) is None
        store.commit_epoch(changes, certificate(1))  # the good one still applies
        assert store.last_epoch() == 1


def test_out_of_order_or_stale_changes_are_refused(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        value = epoch_value(1, GENESIS_HASH)
        changes = store.apply(value, NETWORK)
        store.commit_epoch(changes, certificate(1))
        with pytest.raises(InternalError, match="commit of epoch 1 onto epoch 1"):
            store.commit_epoch(changes, certificate(1))
        stale = dataclasses.replace(changes, epoch=2)
        with pytest.raises(InternalError, match="another state"):
            store.commit_epoch(stale, certificate(2))
        assert store.last_epoch() == 1


def test_the_map_grows_when_full(tmp_path: Path) -> None:
    store = LedgerStore.open(tmp_path, map_size=256 << 10)
    try:
        init = InitialState((), (), (), GENESIS_HASH)
        store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, init)))
        many = tuple(Reward(i.to_bytes(32, "big"), 1) for i in range(1, 5_001))
        commit_next(store, rewards=many)
        assert store._env.info()["map_size"] > 256 << 10
        assert store.read(lambda v: v.get_account((77).to_bytes(32, "big"))) == Account(1, 0)
        assert store.state_root() == store.read(lambda v: merkle.compute_root(v.entries()))
    finally:
        store.close()


class _CountingEnv:
    """The store's LMDB environment, counting the write transactions begun (a spy on lmdb, not on us)."""

    def __init__(self, env: object) -> None:
        self.env = env
        self.writes = 0

    def begin(self, *, write: bool = False, **kwargs: object) -> object:
        self.writes += write
        return self.env.begin(write=write, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.env, name)


def test_a_commit_larger_than_the_map_is_written_once(tmp_path: Path) -> None:
    # A full map aborts the write transaction and the store redoes it whole: a commit that
    # would not fit must grow the map first, so its records are written once.
    store = LedgerStore.open(tmp_path, map_size=256 << 10)
    try:
        init = InitialState((), (), (), GENESIS_HASH)
        store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, init)))
        spy = _CountingEnv(store._env)
        store._env = spy  # type: ignore[assignment]
        many = tuple(Reward(i.to_bytes(32, "big"), 1) for i in range(1, 5_001))
        commit_next(store, rewards=many)
        assert spy.writes == 1
        assert store.read(lambda v: v.get_account((77).to_bytes(32, "big"))) == Account(1, 0)
    finally:
        store.close()


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    with open_store(tmp_path), pytest.raises(StorageError, match="in use by another process"):
        LedgerStore.open(tmp_path)
    LedgerStore.open(tmp_path).close()  # released on close


def test_missing_or_corrupt_store_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no ledger"):
        LedgerStore.open(tmp_path / "nothing", readonly=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(b"this is not an lmdb file" * 1000)
    with pytest.raises(StorageError, match="cannot open ledger"):
        LedgerStore.open(bad)


def test_sign_state_round_trip(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.load_sign_state() is None
        store.save_sign_state(b"vote-1")
        store.save_sign_state(b"vote-2")
    with LedgerStore.open(tmp_path) as store:
        assert store.load_sign_state() == b"vote-2"


async def test_async_wrappers(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        value = epoch_value(1, GENESIS_HASH, rewards=(Reward(IDS[1], 9),))
        with trio.fail_after(30):
            changes = await store.apply_async(value, NETWORK)
            await store.commit_epoch_async(changes, certificate(1))
            await store.save_sign_state_async(b"s")
            assert await store.load_sign_state_async() == b"s"
            account = await store.read_async(lambda v: v.get_account(IDS[1]))
        assert account == Account(START_BALANCE + 9, 0)
        assert store.last_epoch() == 1
    finally:
        store.close()


def test_proof_from_the_store_verifies_against_its_root(tmp_path: Path) -> None:
    with open_store(tmp_path) as store, store.view() as view:
        key = account_key(IDS[4])
        proof = merkle.prove(view, key)
        value = wire.encode(Account(START_BALANCE, 0))
        merkle.verify_proof(view.state_root(), key, value, proof)
        with pytest.raises(Exception, match="proof_root_mismatch"):
            merkle.verify_proof(view.state_root(), key, wire.encode(Account(START_BALANCE + 1, 0)), proof)


# Another process commits epoch 1, a reward of 7 to IDS[2].
WRITER = """
import sys
from pathlib import Path
from depin_p2p.ledger.state import Reward
from depin_p2p.ledger.store import LedgerStore
from tests.unit.ledger.helpers import IDS
from tests.unit.ledger.test_store import commit_next
with LedgerStore.open(Path(sys.argv[1])) as store:
    commit_next(store, rewards=(Reward(IDS[2], 7),))
"""


def test_a_reader_follows_commits_of_another_process(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    with LedgerStore.open(tmp_path, readonly=True) as reader:
        key = account_key(IDS[2])
        before = wire.encode(Account(START_BALANCE, 0))
        with reader.view() as view:  # builds the reader's in-memory tree at epoch 0
            merkle.verify_proof(view.state_root(), key, before, merkle.prove(view, key))
        subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], check=True, cwd=ROOT, timeout=60)
        with reader.view() as view:
            assert view.last_epoch() == 1
            proof = merkle.prove(view, key)
            merkle.verify_proof(view.state_root(), key, wire.encode(Account(START_BALANCE + 7, 0)), proof)
            assert merkle.root_of(view) == view.state_root() == merkle.compute_root(view.entries())


def test_a_missing_tree_node_is_a_storage_error(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        root = store.state_root()
        with store._env.begin(write=True) as txn:
            assert txn.delete(root, db=store._dbs["merkle_nodes"])
    with LedgerStore.open(tmp_path) as store:
        assert store.last_epoch() == 0  # records and the stored root still read
        with pytest.raises(StorageError, match="corrupt"):
            store.apply(epoch_value(1, GENESIS_HASH), NETWORK)


# Format 3 has the pre-F01 Merkle leaves (not bound to the key through the value's hash),
# format 4 the bucketed tree whose proofs a key grinder can inflate (F11), format 5 a second
# copy of every epoch value beside its certificate, format 6 one record per tree node.
@pytest.mark.parametrize(
    "old",
    [b"depin-p2p/ledger/%d" % n for n in (1, 3, 4, 5, 6)],
)
def test_a_store_of_another_format_is_refused(tmp_path: Path, old: bytes) -> None:
    assert old != FORMAT
    with open_store(tmp_path) as store, store._env.begin(write=True) as txn:
        txn.put(b"format", old, db=store._dbs["meta"])
    for readonly in (False, True):
        with pytest.raises(StorageError, match=r"holds ledger format .*: re-run `depin-p2p init`"):
            LedgerStore.open(tmp_path, readonly=readonly)


def test_a_corrupt_record_is_a_storage_error(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        with store._env.begin(write=True) as txn:
            txn.put(IDS[0], b"\x94\x01\x17\x01\x02", db=store._dbs["accounts"])  # a ValidatorStake's bytes
            txn.put(IDS[1], b"\xff\xff", db=store._dbs["accounts"])
        with pytest.raises(StorageError, match="bad account record"):
            store.read(lambda v: v.get_account(IDS[0]))
        with pytest.raises(StorageError, match="bad account record"):
            store.read(lambda v: v.get_account(IDS[1]))


@given(st.integers(0, wire.UINT64_MAX), st.integers(0, wire.UINT64_MAX))
def test_fast_account_decoding_is_the_wire_decoding(balance: int, nonce: int) -> None:
    encoded = wire.encode(Account(balance, nonce))
    assert _decode_account(encoded) == wire.decode(encoded) == Account(balance, nonce)


@pytest.mark.parametrize(
    "raw",
    [
        msgpack.packb((1, 22, -1, 0)),
        msgpack.packb((1, 22, 1, 0, 9)),
        msgpack.packb((1, 23, 1, 0)),
        msgpack.packb((1, 22, True, 0)),
        msgpack.packb((1, 22, b"x", 0)),
        b"\xc1",
    ],
)
def test_fast_account_decoding_rejects_what_the_wire_rejects(raw: bytes) -> None:
    with pytest.raises(StorageError, match="bad account record"):
        _decode_account(raw)


def _stored_nodes(view: LmdbView) -> set[bytes]:
    return {bytes(k) for k, _ in view._txn.cursor(db=view._dbs["merkle_nodes"])}


def _reachable(view: LmdbView, root: bytes) -> set[bytes]:
    seen: set[bytes] = set()
    todo = [] if root == merkle.EMPTY else [root]
    while todo:
        node = todo.pop()
        seen.add(node)
        record = view.merkle_node(node)
        assert record is not None
        todo += merkle.record_children(record)
    return seen


@pytest.mark.parametrize("keep", [0, 1, 4])
def test_old_versions_are_kept_then_pruned(tmp_path: Path, keep: int) -> None:
    # A validator stakes 10 in epoch 1 and unstakes it in epoch 2: its record returns, byte for
    # byte, to the genesis one when the unbonding is released in epoch 5. That leaf left the tree
    # in epoch 1 and is written again in epoch 5, when epoch 1's dropped records may be pruned:
    # it must survive.
    store = LedgerStore.open(tmp_path, keep_versions=keep)
    try:
        store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, initial_state())))
        roots = {0: store.state_root()}
        genesis_record = store.read(lambda v: v.merkle_value(validator_key(IDS[0])))
        commit_next(store, wire.seal(Stake(0, 10), KEYS[0], NETWORK))
        roots[1] = store.state_root()
        commit_next(store, wire.seal(Unstake(1, 10), KEYS[0], NETWORK))
        roots[2] = store.state_root()
        for e in range(3, 10):
            commit_next(store, rewards=(Reward(IDS[e % 8], e),))
            roots[e] = store.state_root()
            with store.view() as view:
                if e >= 5:
                    assert view.merkle_value(validator_key(IDS[0])) == genesis_record
                kept = [v for v in roots if v >= e - keep]
                for v in roots:
                    assert (view.state_root_at(v) is not None) == (v in kept)
                live = set().union(*(_reachable(view, roots[v]) for v in kept))
                assert live == _stored_nodes(view)
                # Each kept version still proves what it held then.
                oldest = min(kept)
                key = validator_key(IDS[0])
                proof = merkle.prove(view, key, root=roots[oldest])
                merkle.verify_proof(roots[oldest], key, proof_value(oldest, genesis_record), proof)
    finally:
        store.close()


def proof_value(epoch: int, genesis_record: bytes | None) -> bytes:
    # The validator record of IDS[0] after ``epoch`` in the test above.
    if epoch in (1, 2, 3, 4):
        stake = wire.decode_as(genesis_record or b"", ValidatorStake).stake
        after = ValidatorStake(stake + 10) if epoch == 1 else ValidatorStake(stake, (Unbonding(10, 5),))
        return wire.encode(after)
    assert genesis_record is not None
    return genesis_record
