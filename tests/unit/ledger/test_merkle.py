"""Sparse Merkle tree: incremental == from scratch in any order, proofs verify and catch tampering."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import InternalError, Reject
from depin_p2p.ledger import merkle


class DictSource:
    """A minimal MerkleSource: the committed records in a dict, stale ones dropped at once."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.nodes: dict[bytes, bytes] = {}
        self.root = merkle.EMPTY_ROOT
        self.node_reads = 0
        self.version = 0

    def merkle_root(self) -> bytes:
        return self.root

    def merkle_node(self, node: bytes) -> bytes | None:
        self.node_reads += 1
        return self.nodes.get(node)

    def apply(self, updates: dict[bytes, bytes | None]) -> merkle.MerkleUpdate:
        self.version += 1
        update = merkle.compute_update(self, updates, self.version)
        for node in update.stale:
            del self.nodes[node]
        for node, record in update.nodes:
            assert node not in self.nodes
            self.nodes[node] = record
        self.root = update.root
        for key, value in updates.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        return update

    def reachable(self) -> set[bytes]:
        """Every stored record the root reaches."""
        seen: set[bytes] = set()
        todo = [] if self.root == merkle.EMPTY else [self.root]
        while todo:
            node = todo.pop()
            seen.add(node)
            record = self.nodes[node]
            todo += merkle.record_children(record)
        return seen


keys = st.binary(min_size=1, max_size=8)
batches = st.lists(st.dictionaries(keys, st.none() | st.binary(max_size=8), max_size=12), max_size=6)


@settings(max_examples=200, deadline=None)
@given(batches)
def test_incremental_root_equals_from_scratch_and_keeps_no_garbage(updates_list) -> None:  # type: ignore[no-untyped-def]
    src = DictSource()
    assert merkle.root_of(src) == merkle.EMPTY_ROOT == merkle.compute_root([])
    for updates in updates_list:
        update = src.apply(updates)
        assert update.root == merkle.root_of(src) == merkle.compute_root(src.state.items())
        # Exactly the live tree is stored: every stale record was reported, every new one written.
        assert src.reachable() == set(src.nodes)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(keys, st.binary(max_size=6), min_size=1, max_size=40), st.randoms())
def test_any_order_of_the_same_updates_gives_the_same_root(final, rng) -> None:  # type: ignore[no-untyped-def]
    # One source gets everything at once; another in random batches, with detours
    # (keys set to another value or deleted first), in a shuffled order.
    once = DictSource()
    once.apply(dict(final))
    other = DictSource()
    items = list(final.items())
    rng.shuffle(items)
    detours = {k: (None if rng.random() < 0.5 else b"detour") for k, _ in items[: len(items) // 2]}
    other.apply(detours)
    while items:
        cut = rng.randint(1, len(items))
        other.apply(dict(items[:cut]))
        items = items[cut:]
    assert other.root == once.root == merkle.compute_root(final.items())
    assert set(other.nodes) == set(once.nodes)


def _filled(n: int = 300) -> DictSource:
    src = DictSource()
    src.apply({b"key-%d" % i: b"value-%d" % i for i in range(n)})
    return src


def test_deleting_everything_leaves_the_empty_tree() -> None:
    src = _filled(50)
    src.apply(dict.fromkeys(list(src.state)[:49]))
    assert src.root == merkle.leaf_hash(b"key-49", b"value-49")  # one entry: its leaf is the root
    src.apply({b"key-49": None})
    assert src.root == merkle.EMPTY_ROOT
    assert src.nodes == {}


def test_updating_k_keys_reads_and_writes_o_k_log_n_nodes() -> None:
    src = _filled(4_000)
    src.node_reads = 0
    update = merkle.compute_update(src, {b"key-5": b"new", b"key-77": b"new"}, 99)
    # Two paths of ~log2(4000) + a few nodes each, not the whole tree (~8000 records).
    assert len(update.nodes) <= 2 * 30
    assert src.node_reads <= 2 * 30
    assert len(update.stale) == len(update.nodes)  # an overwrite replaces each node on the path


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 299), st.binary(max_size=12))
def test_proofs_verify_and_catch_tampering(i: int, other: bytes) -> None:
    src = _filled()
    root = merkle.root_of(src)
    key, value = b"key-%d" % i, b"value-%d" % i
    proof = merkle.prove(src, key)
    merkle.verify_proof(root, key, value, proof)
    assert wire.decode(wire.encode(proof)) == proof  # proofs travel on the wire
    assert merkle.verify_proof_bytes(root, key, value, wire.encode(proof)) == proof
    if other != value:
        with pytest.raises(Reject, match="proof_root_mismatch"):
            merkle.verify_proof(root, key, other, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_proof(bytes(32), key, value, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_proof(root, key, None, proof)  # present key claimed absent
    # Any flipped bit of any sibling breaks it.
    blob = bytearray(proof.siblings)
    blob[(i * 7) % len(blob)] ^= 1 << (i % 8)
    tampered = merkle.MerkleProof(proof.terminals, proof.empties, bytes(blob))
    with pytest.raises(Reject, match=r"proof_root_mismatch|proof_malformed"):
        merkle.verify_proof(root, key, value, tampered)


def test_absence_proofs_at_an_empty_subtree_and_at_another_leaf() -> None:
    src = _filled()
    root = merkle.root_of(src)
    kinds = set()
    for i in range(200):
        missing = b"missing-%d" % i
        proof = merkle.prove(src, missing)
        merkle.verify_proof(root, missing, None, proof)
        (term,) = proof.terminals
        kinds.add(bool(term.other_key))
        with pytest.raises(Reject, match="proof_root_mismatch"):
            merkle.verify_proof(root, missing, b"value", proof)
        if term.other_key:  # the other key's own value cannot be moved onto the missing key
            with pytest.raises(Reject, match="proof_root_mismatch"):
                merkle.verify_proof(root, missing, src.state[term.other_key], proof)
    assert kinds == {True, False}  # both kinds of terminal occur


def test_a_proof_for_an_old_root_from_a_source_that_still_holds_it() -> None:
    src = _filled(20)
    old_root, old_nodes = src.root, dict(src.nodes)
    src.apply({b"key-3": b"changed"})
    kept = DictSource()
    kept.nodes, kept.root = {**old_nodes, **src.nodes}, src.root
    proof = merkle.prove(kept, b"key-3", root=old_root)
    merkle.verify_proof(old_root, b"key-3", b"value-3", proof)
    merkle.verify_proof(src.root, b"key-3", b"changed", merkle.prove(kept, b"key-3"))


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 399), min_size=1, max_size=25))
def test_multiproofs_verify_and_share_siblings(picks: set[int]) -> None:
    src = _filled()
    root = src.root
    wanted = {b"key-%d" % i: (b"value-%d" % i if i < 300 else None) for i in picks}
    proof = merkle.prove_many(src, wanted)
    merkle.verify_many(root, wanted, proof)
    assert wire.decode(wire.encode(proof)) == proof
    singles = sum(len(merkle.prove(src, k).siblings) for k in wanted)
    assert len(proof.siblings) <= singles
    some = next(iter(wanted))
    wrong = {**wanted, some: b"wrong"}
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_many(root, wrong, proof)
    with pytest.raises(Reject, match="proof_key_mismatch"):
        merkle.verify_many(root, {**wanted, b"extra": None}, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_many(bytes(32), wanted, proof)


def test_malformed_proofs_are_rejected() -> None:
    src = _filled()
    root = src.root
    proof = merkle.prove(src, b"key-1")
    (term,) = proof.terminals
    with pytest.raises(Reject, match="proof_key_mismatch"):
        merkle.verify_proof(root, b"key-2", b"value-1", proof)
    extra = merkle.MerkleProof(proof.terminals, proof.empties, proof.siblings + bytes(32))
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof(root, b"key-1", b"value-1", extra)
    padded = merkle.MerkleProof(proof.terminals, proof.empties + b"\0", proof.siblings)
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof(root, b"key-1", b"value-1", padded)
    deeper_term = merkle.ProofTerminal(b"key-1", term.depth + 1)
    deeper = merkle.MerkleProof((deeper_term,), proof.empties, proof.siblings)
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof(root, b"key-1", b"value-1", deeper)
    # An empty sibling spelled out instead of flagged: one encoding per proof.
    spelled = merkle.MerkleProof(proof.terminals, b"\0" * len(proof.empties), proof.siblings)
    if proof.empties.strip(b"\0"):
        with pytest.raises(Reject, match="proof_malformed"):
            merkle.verify_proof(root, b"key-1", b"value-1", spelled)
    # An absence proof pointing at a leaf off the key's path.
    absent = merkle.prove(src, b"nope")
    (t,) = absent.terminals
    off = merkle.ProofTerminal(b"nope", t.depth, b"key-1", merkle.value_hash(b"value-1"))
    if merkle.key_path(b"key-1") >> (256 - t.depth) != merkle.key_path(b"nope") >> (256 - t.depth):
        with pytest.raises(Reject, match="proof_malformed"):
            off_path = merkle.MerkleProof((off,), absent.empties, absent.siblings)
            merkle.verify_proof(root, b"nope", None, off_path)
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof_bytes(root, b"key-1", b"value-1", b"\x93\x01\x1a")


def test_hashing_is_domain_separated() -> None:
    left, right = bytes(32), bytes(range(32))
    assert merkle.leaf_hash(b"ab", b"c") != merkle.leaf_hash(b"a", b"bc")
    assert merkle.leaf_hash(b"k", b"v") == merkle.leaf_of(b"k", merkle.value_hash(b"v"))
    tags = {
        merkle.node_hash(left, right),
        merkle.leaf_of(left, right),
        merkle.value_hash(left + right),
        merkle.EMPTY,
        merkle.key_path(left + right).to_bytes(32, "big"),
    }
    assert len(tags) == 5


def test_colliding_paths_are_an_internal_error() -> None:
    with pytest.raises(InternalError, match="share a Merkle path"):
        merkle.compute_update(DictSource(), {b"a": b"1", b"b": b"2"}, 1, path_of=lambda k: 7)


def test_crafted_paths_deep_in_the_tree() -> None:
    # Paths sharing 250 bits: the tree is a chain of nodes with empty halves, still exact.
    base = random.Random(5).getrandbits(256) >> 8 << 8
    paths = {b"k%d" % i: base | i for i in range(40)}
    src = DictSource()
    update = merkle.compute_update(src, {k: b"v" for k in paths}, 1, path_of=paths.__getitem__)
    root = merkle.compute_root(((k, b"v") for k in paths), path_of=paths.__getitem__)
    assert update.root == root
    src.nodes = dict(update.nodes)
    src.root = root
    proof = merkle.prove(src, b"k3", path_of=paths.__getitem__)
    merkle.verify_proof(root, b"k3", b"v", proof, path_of=paths.__getitem__)
    assert proof.depth > 250 and len(proof.siblings) <= 32 * 8  # the empty halves cost one bit each
