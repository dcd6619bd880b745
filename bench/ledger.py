"""Ledger benchmark: epoch-apply throughput vs raw LMDB puts, and Merkle root-update time.

Run: ``.venv/bin/python bench/ledger.py [--sizes 10000,100000] [--accounts 1000000]``.
Prints one JSON object.

* ``apply``: for each size N, a store holding N funded accounts applies an
  epoch whose N rewards touch all N of them: ``LedgerStore.apply``
  (``state.apply_epoch`` incl. the Merkle update) plus ``commit_epoch``
  (one synced write txn). Throughput is state records written per second,
  best of ``--repeat`` consecutive epochs (baselines: best of as many runs).
  The baseline, measured in the same run on a fresh LMDB environment with
  the same settings, puts the same N encoded account records in one write
  transaction with ``cursor.putmulti``. ``ratio`` = ours / baseline.
  For context only, ``raw_lmdb_put_loop_per_s`` puts the same records with a
  Python loop of ``txn.put`` (what a per-record Python write path costs at
  best) and ``ratio_vs_put_loop`` compares with it; ``ratio_vs_all_records``
  compares with ``putmulti`` of every row our commit writes (accounts plus
  Merkle bucket rows and bucket hashes), pre-encoded. ``apply_us_per_change``
  and ``commit_us_per_change`` split the cost of one change; ``cpu_s`` is
  the thread CPU time of the fastest epoch (less sensitive than wall time to
  other processes on a shared machine; excludes the wait for fsync). The
  baselines run right after each epoch, so both sides see the same load.
* ``signed_transfers``: an epoch of signed transfers (Ed25519 verification
  dominates), applied and committed.
* ``root_update``: a store with ``--accounts`` accounts; the time of
  ``merkle.compute_update`` for 10 000 changed accounts (reads the touched
  buckets from LMDB and untouched siblings from the store's in-memory tree,
  hashes the new buckets and paths). ``tree_rebuild_s``: the one-off cost,
  after a reopen, of rebuilding that tree from the stored bucket hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger import merkle
from depin_p2p.ledger.state import (
    Account,
    EpochValue,
    InitialState,
    Reward,
    Transfer,
    account_key,
    compute_genesis_changes,
)
from depin_p2p.ledger.store import LedgerStore

NETWORK = "bench"
GENESIS_HASH = b"\x42" * 32


def account_ids(n: int, salt: bytes = b"") -> list[bytes]:
    return [hashlib.blake2b(salt + i.to_bytes(8, "big"), digest_size=32).digest() for i in range(n)]


def make_store(path: Path, ids: list[bytes], *, chunk: int = 200_000) -> LedgerStore:
    """A store whose genesis funds ``ids``, grown through reward epochs beyond ``chunk`` accounts."""
    store = LedgerStore.open(path)
    first = ids[:chunk]
    init = InitialState(tuple(sorted((a, Account(1_000, 0)) for a in first)), (), (), GENESIS_HASH)
    store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, init)))
    for start in range(chunk, len(ids), chunk):
        part = ids[start : start + chunk]
        prev = store.read(lambda v: v.last_certificate_hash())
        rewards = tuple(Reward(a, 1_000) for a in part)
        commit_value(store, EpochValue(store.last_epoch() + 1, prev, (), rewards, (), 1_000 * len(part)))
    return store


def commit_value(store: LedgerStore, value: EpochValue) -> int:
    changes = store.apply(value, NETWORK)
    store.commit_epoch(changes, b"cert-%d" % value.epoch, b"")
    return changes.change_count


def bench_apply(n: int, tmp: Path, repeat: int) -> dict[str, float | int]:
    ids = account_ids(n, b"apply")
    store = make_store(tmp / f"apply-{n}", ids)
    best = (float("inf"), 0.0, 0.0, 0.0)
    raw_s = loop_s = raw_all_s = float("inf")
    try:
        for r in range(repeat):  # consecutive epochs, each touching all n accounts; keep the fastest
            prev = store.read(lambda v: v.last_certificate_hash())
            value = EpochValue(r + 1, prev, (), tuple(Reward(a, 5) for a in ids), (), 5 * n)
            t0, c0 = time.perf_counter(), time.thread_time()
            changes = store.apply(value, NETWORK)
            t1 = time.perf_counter()
            store.commit_epoch(changes, b"cert-%d" % value.epoch, b"")
            t2, c2 = time.perf_counter(), time.thread_time()
            best = min(best, (t2 - t0, t1 - t0, t2 - t1, c2 - c0))
            # The baselines run right after each epoch, on its records, so that both
            # sides of the ratio see the same load on a shared machine.
            records = [(aid, wire.encode(acct)) for aid, acct in changes.accounts]
            pack = msgpack.Packer().pack
            touched = changes.merkle.buckets
            buckets = [(b.to_bytes(2, "big"), pack((keys, leaves))) for b, _, keys, leaves in touched]
            bucket_hashes = [(b.to_bytes(2, "big"), bh) for b, bh, _, _ in touched]
            tables = {b"accounts": records, b"buckets": buckets, b"bucket_hashes": bucket_hashes}
            raw_s = min(raw_s, raw_puts(tmp / f"raw-{n}-{r}", {b"accounts": records}))
            loop_s = min(loop_s, raw_puts(tmp / f"loop-{n}-{r}", {b"accounts": records}, loop=True))
            raw_all_s = min(raw_all_s, raw_puts(tmp / f"raw-all-{n}-{r}", tables))
    finally:
        store.close()

    ours = changes.change_count / best[0]
    raw = len(records) / raw_s
    loop = len(records) / loop_s
    raw_all = len(records) / raw_all_s
    written = sum(len(rows) for rows in tables.values())
    return {
        "changes": changes.change_count,
        "apply_s": round(best[1], 4),
        "commit_s": round(best[2], 4),
        "apply_us_per_change": round(best[1] / changes.change_count * 1e6, 2),
        "commit_us_per_change": round(best[2] / changes.change_count * 1e6, 2),
        "cpu_s": round(best[3], 4),
        "changes_per_s": round(ours),
        "raw_lmdb_puts_per_s": round(raw),
        "ratio": round(ours / raw, 4),
        "raw_lmdb_put_loop_per_s": round(loop),
        "ratio_vs_put_loop": round(ours / loop, 4),
        "records_written_per_change": round(written / len(records), 2),
        "raw_all_records_changes_per_s": round(raw_all),
        "ratio_vs_all_records": round(ours / raw_all, 4),
    }


def raw_puts(path: Path, tables: dict[bytes, list[tuple[bytes, bytes]]], *, loop: bool = False) -> float:
    """Seconds to put ``tables`` (pre-encoded, in one synced write txn) into a fresh LMDB env.

    With ``loop``, one ``txn.put`` call per row instead of ``cursor.putmulti``.
    """
    env = lmdb.open(str(path), map_size=1 << 30, max_dbs=8, sync=True, metasync=True)
    try:
        dbs = {name: env.open_db(name) for name in tables}
        r0 = time.perf_counter()
        with env.begin(write=True) as txn:
            for name, rows in tables.items():
                if loop:
                    db = dbs[name]
                    for key, value in rows:
                        txn.put(key, value, db=db)
                else:
                    txn.cursor(db=dbs[name]).putmulti(rows)
        return time.perf_counter() - r0
    finally:
        env.close()


def bench_signed_transfers(n: int, tmp: Path) -> dict[str, float | int]:
    """An epoch of ``n`` signed transfers among 1 000 accounts: dominated by Ed25519 verification."""
    keys = [KeyPair.from_seed(hashlib.blake2b(b"k%d" % i, digest_size=32).digest()) for i in range(1_000)]
    store = make_store(tmp / "transfers", [k.public_key for k in keys])
    try:
        m = len(keys)
        txs = tuple(
            wire.seal(Transfer(i // m, keys[(i + 1) % m].public_key, 1), keys[i % m], NETWORK)
            for i in range(n)
        )
        value = EpochValue(1, GENESIS_HASH, txs, (), (), 0)
        t0 = time.perf_counter()
        changes = store.apply(value, NETWORK)
        store.commit_epoch(changes, b"cert", b"")
        elapsed = time.perf_counter() - t0
    finally:
        store.close()
    assert all(r.code is None for r in changes.tx_results), "benchmark transfers must all apply"
    return {"txs": n, "seconds": round(elapsed, 4), "txs_per_s": round(n / elapsed)}


def bench_root_update(n_accounts: int, k: int, tmp: Path) -> dict[str, float | int]:
    ids = account_ids(n_accounts, b"root")
    t0 = time.perf_counter()
    store = make_store(tmp / "root", ids)
    build_s = time.perf_counter() - t0
    try:
        changed = ids[:: max(1, n_accounts // k)][:k]
        updates: dict[bytes, bytes | None] = {account_key(a): wire.encode(Account(7, 1)) for a in changed}
        with store.view() as view:
            t1 = time.perf_counter()
            update = merkle.compute_update(view, updates)
            t2 = time.perf_counter()
    finally:
        store.close()
    with LedgerStore.open(tmp / "root", readonly=True) as store:
        t3 = time.perf_counter()
        store.read(lambda v: v.merkle_node(merkle.ROOT_NODE))  # the first node read rebuilds the tree
        rebuild_s = time.perf_counter() - t3
    return {
        "accounts": n_accounts,
        "changed": len(updates),
        "seconds": round(t2 - t1, 4),
        "nodes_rewritten": len(update.buckets) + len(update.nodes),
        "tree_rebuild_s": round(rebuild_s, 4),
        "build_s": round(build_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="changes per epoch, comma-separated")
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts for the root-update run")
    parser.add_argument("--changed", type=int, default=10_000, help="changed keys for the root-update run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the fastest counts")
    parser.add_argument("--transfers", type=int, default=5_000, help="signed transfers in one epoch")
    args = parser.parse_args()
    out: dict[str, object] = {"machine": platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        out["apply"] = {str(n): bench_apply(int(n), Path(tmp), args.repeat) for n in args.sizes.split(",")}
        out["signed_transfers"] = bench_signed_transfers(args.transfers, Path(tmp))
        out["root_update"] = bench_root_update(args.accounts, args.changed, Path(tmp))
    out["targets"] = {"ratio_min": 0.3, "root_update_max_s": 1.0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
