"""Pinned state roots and proofs: the state encoding, the tree and the proofs cannot change unnoticed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack

from depin_p2p import wire
from depin_p2p.ledger import merkle
from tests.vectors import ledger_roots

PINNED = json.loads((Path(__file__).parent / "ledger_roots.json").read_text())
STATES = ("genesis", "epoch_1")


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


EMPTY = _h(b"\x01")


def _bit(path: bytes, depth: int) -> int:
    return (path[depth // 8] >> (7 - depth % 8)) & 1


def independent_root(entries: list[dict[str, str]]) -> bytes:
    """The root from the spec in ledger/merkle.py's docstring, with plain hashlib only."""
    leaves = []
    for e in entries:
        key, value = bytes.fromhex(e["key"]), bytes.fromhex(e["value"])
        path = _h(b"\x03" + key)
        assert path.hex() == e["path"]
        value_hash = _h(b"\x04" + value)
        assert value_hash.hex() == e["value_hash"]
        leaf = _h(b"\x00" + len(key).to_bytes(4, "big") + key + value_hash)
        assert leaf.hex() == e["leaf"]
        leaves.append((path, leaf))

    def subtree(depth: int, rows: list[tuple[bytes, bytes]]) -> bytes:
        if not rows:
            return EMPTY
        if len(rows) == 1:  # one entry: its leaf, as high as it is alone
            return rows[0][1]
        left = [r for r in rows if _bit(r[0], depth) == 0]
        right = [r for r in rows if _bit(r[0], depth) == 1]
        return _h(b"\x02" + subtree(depth + 1, left) + subtree(depth + 1, right))

    return subtree(0, leaves)


def independent_verify(root: bytes, key: bytes, value: bytes | None, proof: bytes) -> bool:
    """A one-key proof checked from its msgpack bytes and the spec alone."""
    version, type_id, terminals, empties, siblings = msgpack.unpackb(proof)
    assert (version, type_id) == (1, 26)
    [(tkey, depth, other_key, other_value_hash)] = terminals
    assert tkey == key
    path = _h(b"\x03" + key)
    if value is not None:
        acc = _h(b"\x00" + len(key).to_bytes(4, "big") + key + _h(b"\x04" + value))
    elif other_key:
        other = _h(b"\x03" + other_key)
        assert all(_bit(other, d) == _bit(path, d) for d in range(depth))
        acc = _h(b"\x00" + len(other_key).to_bytes(4, "big") + other_key + other_value_hash)
    else:
        acc = EMPTY
    chain, used = [], 0
    for d in range(depth):  # siblings from the root down; a set bit is an empty sibling
        if _bit(empties, d):
            chain.append(EMPTY)
        else:
            chain.append(siblings[used : used + 32])
            used += 32
    assert used == len(siblings)
    for d in reversed(range(depth)):
        acc = _h(b"\x02" + (chain[d] + acc if _bit(path, d) else acc + chain[d]))
    return acc == root


def test_vectors_match_this_implementation() -> None:
    assert ledger_roots.compute() == PINNED


def test_roots_reproduce_from_the_spec_alone() -> None:
    for name in STATES:
        assert independent_root(PINNED[name]["entries"]).hex() == PINNED[name]["root"]
    assert independent_root([]).hex() == PINNED["empty_root"] == merkle.EMPTY_ROOT.hex()
    assert PINNED["genesis"]["root"] != PINNED["epoch_1"]["root"]


def test_proofs_verify_from_the_spec_alone() -> None:
    for name in STATES:
        state = PINNED[name]
        root = bytes.fromhex(state["root"])
        values = {bytes.fromhex(e["key"]): bytes.fromhex(e["value"]) for e in state["entries"]}
        present, absent = state["proofs"]["present"], state["proofs"]["absent"]
        pkey, akey = bytes.fromhex(present["key"]), bytes.fromhex(absent["key"])
        assert independent_verify(root, pkey, values[pkey], bytes.fromhex(present["proof"]))
        assert independent_verify(root, akey, None, bytes.fromhex(absent["proof"]))
        assert not independent_verify(root, pkey, b"another value", bytes.fromhex(present["proof"]))
        both = wire.decode_as(bytes.fromhex(state["proofs"]["both"]), merkle.MerkleProof)
        merkle.verify_many(root, {pkey: values[pkey], akey: None}, both)
