"""Ledger benchmark: epoch apply+commit beside a real peer (HexaryTrie) and the cost floor; proofs at scale.

Run: ``.venv/bin/python bench/ledger.py`` (needs the ``bench`` extra for the
``trie`` package: ``pip install -e '.[bench]'``). Prints one JSON object; the
top-level keys are stable:

* ``ratio_vs_hexary_trie``: epoch apply+commit throughput (state changes per
  second) over the ``trie`` package's ``HexaryTrie`` doing the same updates
  (the same keys and encoded values) on an LMDB-backed node store, one synced
  write transaction per epoch (``squash_changes``: only the final nodes are
  written). The worse of the runs at ``--sizes`` changes (default 10 000 and
  100 000) over ``--base`` accounts (default 100 000).
* ``ratio_vs_floor``: the same throughput over the floor, the least work
  our design needs for that epoch, as plain Python loops: one ``txn.put``
  per record the commit wrote (account records, tree records, stale
  entries, root, meta, certificate) into a fresh LMDB
  environment in one synced transaction, plus one ``blake2b`` per hash the
  tree update made (key paths, value hashes, leaves, nodes) on inputs of
  the same sizes. The worse of the runs.
* ``root_update_s``: ``merkle.compute_update`` for ``--changed`` (10 000)
  accounts of a store holding ``--accounts`` (1 000 000), the median of
  ``--scale-repeat`` (5) runs on one read view; beside it, in ``scale``, its
  floor measured after each run (``root_update_floor_cpu_s``: one LMDB get
  per record the update read (the pages it replaced) and one BLAKE2b per hash it made, as plain
  loops; median) and the median of the per-run ratios ``root_update_vs_floor``
  (the runs themselves in ``root_update_runs``).
* ``proof_bytes_p99``: p99 of the encoded size of proofs for 10 000 present
  and 1 000 absent accounts of that store.
* ``proof_verifies_per_s``: ``merkle.verify_proof`` calls per second on those
  proofs (decoded); ``proof_bytes_verifies_per_s`` includes the decoding.

Times are the measuring thread's CPU time (``time.thread_time``; LMDB and
hashing run in that thread), less sensitive than wall time to the other
processes of a shared machine; wall times are reported beside them. The
measured epochs are the first after genesis, so no old version is pruned
during them (the default store keeps 4); the floor counts exactly the
records those commits wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import lmdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from depin_p2p import wire
from depin_p2p.ledger import merkle
from depin_p2p.ledger.state import (
    Account,
    EpochValue,
    InitialState,
    Reward,
    StateChanges,
    account_key,
    compute_genesis_changes,
    encode_account,
)
from depin_p2p.ledger.store import LedgerStore

NETWORK = "bench"
GENESIS_HASH = b"\x42" * 32
TARGETS = {
    "ratio_vs_hexary_trie_min": 10.0,
    "ratio_vs_floor_min": 0.3,
    "root_update_s_max": 0.3,
    "proof_bytes_p99_max": 1_000,
    "proof_verifies_per_s_min": 20_000,
}


def account_ids(n: int, salt: bytes) -> list[bytes]:
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
        value = EpochValue(store.last_epoch() + 1, prev, (), rewards, (), 1_000 * len(part))
        store.commit_epoch(store.apply(value, NETWORK), b"cert-%d" % value.epoch)
    return store


class Clock:
    """Wall and thread-CPU time of one measured block."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.thread_time() - self.cpu0


# ------------------------------------------------------------------ ours and the floor


def floor_s(path: Path, changes: StateChanges, certificate: bytes) -> tuple[float, float]:
    """(CPU s, wall s) of the floor of ``changes``: the commit's records put in a loop, and its hashes."""
    update = changes.merkle
    version = changes.epoch.to_bytes(8, "big")
    rows = [(key, value) for key, value in changes.records if value is not None]
    rows += list(update.nodes)
    rows += [(version + node, b"") for node in update.stale]
    rows += [(version, changes.root), (b"state_root", changes.root), (b"last_epoch", version)]
    rows += [(version + b"c", certificate), (b"last_cert", bytes(32))]
    # The hash inputs, of the sizes the tree hashes: key paths, values, leaves, nodes.
    keys = [key for key, _ in changes.records]
    values = [value for _, value in changes.records if value is not None]
    leaf_inputs = [b"\0\0\0\0\x21" + key + bytes(32) for key in keys[: len(values)]]
    node_count = update.hashes - len(keys) - 2 * len(values)
    node_inputs = [b"\x02" + node[:32] + node[:32] for node, _ in update.nodes[:node_count]]
    node_inputs += [bytes(65)] * (node_count - len(node_inputs))
    env = lmdb.open(str(path), map_size=1 << 34, max_dbs=4, sync=True, metasync=True)
    try:
        db = env.open_db(b"floor")
        blake2b = hashlib.blake2b
        with Clock() as clock:
            for data in keys:
                blake2b(b"\x03" + data, digest_size=32).digest()
            for data in values:
                blake2b(b"\x04" + data, digest_size=32).digest()
            for data in leaf_inputs:
                blake2b(data, digest_size=32).digest()
            for data in node_inputs:
                blake2b(data, digest_size=32).digest()
            with env.begin(write=True) as txn:
                for key, value in rows:
                    txn.put(key, value, db=db)
        return clock.cpu, clock.wall
    finally:
        env.close()


def bench_ours(store: LedgerStore, ids: list[bytes], n: int, tmp: Path, repeat: int) -> dict[str, Any]:
    """Epochs rewarding the first ``n`` accounts (each one changed record), best of ``repeat``."""
    best: dict[str, Any] = {}
    for _ in range(repeat):
        epoch = store.last_epoch() + 1
        prev = store.read(lambda v: v.last_certificate_hash())
        value = EpochValue(epoch, prev, (), tuple(Reward(a, 5) for a in ids[:n]), (), 5 * n)
        # A stand-in certificate that, like consensus's, carries the encoded value.
        certificate = b"certificate-%d:" % epoch + wire.encode(value)
        with Clock() as apply_clock:
            changes = store.apply(value, NETWORK)
        with Clock() as commit_clock:
            store.commit_epoch(changes, certificate)
        cpu = apply_clock.cpu + commit_clock.cpu
        floor_cpu, floor_wall = floor_s(tmp / f"floor-{n}-{epoch}", changes, certificate)
        if not best or cpu < best["cpu_s"]:
            best = {
                "changes": changes.change_count,
                "cpu_s": round(cpu, 4),
                "wall_s": round(apply_clock.wall + commit_clock.wall, 4),
                "apply_cpu_s": round(apply_clock.cpu, 4),
                "commit_cpu_s": round(commit_clock.cpu, 4),
                "changes_per_s": round(changes.change_count / cpu),
                "tree_records_written": len(changes.merkle.nodes),
                "stale_records": len(changes.merkle.stale),
                "hashes": changes.merkle.hashes,
                "floor_cpu_s": round(floor_cpu, 4),
                "floor_wall_s": round(floor_wall, 4),
                "ratio_vs_floor": round(floor_cpu / cpu, 4),
            }
    return best


# ------------------------------------------------------------------ HexaryTrie on LMDB


class LmdbNodes(MutableMapping[bytes, bytes]):
    """HexaryTrie's node store: one LMDB database, read and written through the current transaction."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.db = env.open_db(b"trie")
        self.txn: Any = None

    def __getitem__(self, key: bytes) -> bytes:
        got = self.txn.get(key, db=self.db)
        if got is None:
            raise KeyError(key)
        return bytes(got)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.db)

    def __delitem__(self, key: bytes) -> None:
        self.txn.delete(key, db=self.db)

    def __iter__(self) -> Iterator[bytes]:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.txn.stat(self.db)["entries"])


def hexary_epoch(trie: Any, nodes: LmdbNodes, updates: list[tuple[bytes, bytes]]) -> Clock:
    """Apply ``updates`` to ``trie`` and commit them in one synced LMDB write transaction."""
    with Clock() as clock:
        with nodes.env.begin(write=True) as txn:
            nodes.txn = txn
            with trie.squash_changes() as batch:
                for key, value in updates:
                    batch[key] = value
        nodes.txn = None
    return clock


def bench_hexary(tmp: Path, ids: list[bytes], sizes: list[int]) -> dict[str, Any]:
    from trie import HexaryTrie  # noqa: PLC0415 (the bench extra)

    env = lmdb.open(str(tmp / "hexary"), map_size=1 << 36, max_dbs=2, sync=True, metasync=True)
    try:
        nodes = LmdbNodes(env)
        trie = HexaryTrie(nodes)
        keys = [account_key(a) for a in ids]
        build = hexary_epoch(trie, nodes, [(k, encode_account(Account(1_000, 0))) for k in keys])
        out: dict[str, Any] = {"base": len(keys), "build_cpu_s": round(build.cpu, 1)}
        for round_, n in enumerate(sizes, 1):
            value = encode_account(Account(1_000 + 5 * round_, 0))
            clock = hexary_epoch(trie, nodes, [(k, value) for k in keys[:n]])
            out[str(n)] = {
                "cpu_s": round(clock.cpu, 3),
                "wall_s": round(clock.wall, 3),
                "changes_per_s": round(n / clock.cpu),
            }
        with env.begin() as txn:
            nodes.txn = txn
            sample = keys[:: max(1, len(keys) // 2000)]
            sizes_b = sorted(sum(len(node) for node in raw_proof(trie, k)) for k in sample)
        out["proof_bytes_p50"] = sizes_b[len(sizes_b) // 2]
        return out
    finally:
        env.close()


def raw_proof(trie: Any, key: bytes) -> list[bytes]:
    import rlp  # noqa: PLC0415 (a dependency of trie)

    return [rlp.encode(node) for node in trie.get_proof(key)]


# ------------------------------------------------------------------ 1M accounts: root update, proofs


def bench_scale(n_accounts: int, k: int, tmp: Path, repeat: int) -> dict[str, Any]:
    ids = account_ids(n_accounts, b"scale")
    with Clock() as build:
        store = make_store(tmp / "scale", ids)
    try:
        changed = ids[:: max(1, n_accounts // k)][:k]
        updates: dict[bytes, bytes | None] = {account_key(a): encode_account(Account(7, 1)) for a in changed}
        with store.view() as view:
            epoch = view.last_epoch() + 1
            runs: list[tuple[Clock, Clock]] = []
            for _ in range(repeat):
                with Clock() as clock:
                    update = merkle.compute_update(view, updates, epoch)
                # The same update's floor: one LMDB get per record it read (the pages it replaced;
                # the leaves it replaced are known from their pages), one BLAKE2b per hash.
                get, nodes_db, node_input = view._txn.get, view._nodes, b"\x02" + bytes(64)
                pages = [node for node in update.stale if get(node, db=nodes_db)[0]]
                with Clock() as floor:
                    for node in pages:
                        get(node, db=nodes_db)
                    for _ in range(update.hashes):
                        hashlib.blake2b(node_input, digest_size=32).digest()
                runs.append((clock, floor))
            root = view.state_root()
            present = [account_key(a) for a in ids[:: max(1, n_accounts // 10_000)][:10_000]]
            absent = [account_key(a) for a in account_ids(1_000, b"absent")]
            proofs = [(key, view.merkle_value(key), merkle.prove(view, key)) for key in present + absent]
    finally:
        store.close()
    encoded = [wire.encode(proof) for _, _, proof in proofs]
    sizes = sorted(len(e) for e in encoded)
    with Clock() as verify:
        for key, value, proof in proofs:
            merkle.verify_proof(root, key, value, proof)
    with Clock() as verify_bytes:
        for (key, value, _), data in zip(proofs, encoded, strict=True):
            merkle.verify_proof_bytes(root, key, value, data)
    depths = sorted(proof.depth for _, _, proof in proofs)
    return {
        "accounts": n_accounts,
        "changed": len(updates),
        "root_update_cpu_s": round(statistics.median(c.cpu for c, _ in runs), 4),
        "root_update_wall_s": round(statistics.median(c.wall for c, _ in runs), 4),
        "root_update_floor_cpu_s": round(statistics.median(f.cpu for _, f in runs), 4),
        "root_update_vs_floor": round(statistics.median(c.cpu / f.cpu for c, f in runs), 2),
        "root_update_runs": [[round(c.cpu, 4), round(f.cpu, 4)] for c, f in runs],
        "tree_records_written": len(update.nodes),
        "tree_records_read": len(pages),
        "hashes": update.hashes,
        "proofs": len(proofs),
        "proof_bytes_p50": sizes[len(sizes) // 2],
        "proof_bytes_p99": sizes[len(sizes) * 99 // 100],
        "proof_bytes_max": sizes[-1],
        "proof_depth_p50": depths[len(depths) // 2],
        "proof_depth_max": depths[-1],
        "proof_verifies_per_s": round(len(proofs) / verify.cpu),
        "proof_bytes_verifies_per_s": round(len(proofs) / verify_bytes.cpu),
        "build_wall_s": round(build.wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="changes per epoch, comma-separated")
    parser.add_argument("--base", type=int, default=100_000, help="accounts in the store for those epochs")
    parser.add_argument("--accounts", type=int, default=1_000_000, help="accounts for the root-update run")
    parser.add_argument("--changed", type=int, default=10_000, help="changed keys for the root-update run")
    parser.add_argument("--scale-repeat", type=int, default=5, help="root updates timed; the median counts")
    parser.add_argument("--repeat", type=int, default=2, help="epochs per size; the fastest counts")
    parser.add_argument("--no-hexary", action="store_true", help="skip the HexaryTrie baseline")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    out: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp_name:
        tmp = Path(tmp_name)
        ids = account_ids(args.base, b"apply")
        store = make_store(tmp / "ours", ids)
        try:
            ours = {str(n): bench_ours(store, ids, n, tmp, args.repeat) for n in sizes}
        finally:
            store.close()
        out["ours"] = ours
        out["ratio_vs_floor"] = min(run["ratio_vs_floor"] for run in ours.values())
        if not args.no_hexary:
            hexary = bench_hexary(tmp, ids, sizes)
            out["hexary_trie"] = hexary
            ratios = {n: ours[n]["changes_per_s"] / hexary[n]["changes_per_s"] for n in ours}
            out["ratio_vs_hexary_trie_by_size"] = {n: round(r, 2) for n, r in ratios.items()}
            out["ratio_vs_hexary_trie"] = round(min(ratios.values()), 2)
        scale = bench_scale(args.accounts, args.changed, tmp, max(1, args.scale_repeat))
        out["scale"] = scale
    out["root_update_s"] = scale["root_update_cpu_s"]
    out["proof_bytes_p99"] = scale["proof_bytes_p99"]
    out["proof_verifies_per_s"] = scale["proof_verifies_per_s"]
    out["targets"] = TARGETS
    print(json.dumps(out))


if __name__ == "__main__":
    main()
