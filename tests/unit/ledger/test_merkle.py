"""Merkle tree: incremental == from scratch, proofs verify and catch tampering."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import InternalError, Reject
from depin_p2p.ledger import merkle


class DictSource:
    """A minimal MerkleSource: committed leaves and nodes in dicts."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.leaves: dict[int, dict[bytes, bytes]] = {}
        self.nodes: dict[int, bytes] = {}
        self.node_reads = 0

    def bucket_contents(self, bucket: int) -> tuple[Sequence[bytes], Sequence[bytes]]:
        rows = sorted(self.leaves.get(bucket, {}).items())
        return [k for k, _ in rows], [lh for _, lh in rows]

    def merkle_node(self, index: int) -> bytes | None:
        self.node_reads += 1
        return self.nodes.get(index)

    def merkle_value(self, key: bytes) -> bytes | None:
        return self.state.get(key)

    def apply(self, updates: dict[bytes, bytes | None]) -> merkle.MerkleUpdate:
        update = merkle.compute_update(self, updates)
        for bucket, bucket_hash, keys, leaves in update.buckets:
            assert list(keys) == sorted(keys)
            self.leaves[bucket] = dict(zip(keys, leaves, strict=True))
            self.nodes[merkle.FIRST_BUCKET_NODE + bucket] = bucket_hash
        self.nodes.update(update.nodes)
        for key, value in updates.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        return update


keys = st.binary(min_size=1, max_size=8)
batches = st.lists(st.dictionaries(keys, st.none() | st.binary(max_size=8), max_size=12), max_size=5)


@settings(max_examples=200)
@given(batches)
def test_incremental_root_equals_from_scratch(updates_list) -> None:  # type: ignore[no-untyped-def]
    src = DictSource()
    assert merkle.root_of(src) == merkle.EMPTY_ROOT == merkle.compute_root([])
    for updates in updates_list:
        update = src.apply(updates)
        assert update.root == merkle.root_of(src) == merkle.compute_root(src.state.items())


def test_forced_bucket_collisions() -> None:
    # Many keys in one bucket exercise the sorted multi-entry bucket hash.
    target = merkle.bucket_of(b"k0")
    same = [k for k in (b"k%d" % i for i in range(400_000)) if merkle.bucket_of(k) == target][:4]
    assert len(same) >= 3
    src = DictSource()
    src.apply({k: b"v" + k for k in reversed(same)})
    assert merkle.root_of(src) == merkle.compute_root(src.state.items())
    for k in same:
        proof = merkle.prove(src, k)
        assert len(proof.others) == len(same) - 1
        merkle.verify_proof(merkle.root_of(src), k, b"v" + k, proof)


def _same_bucket(n: int) -> list[bytes]:
    target = merkle.bucket_of(b"k0")
    return [k for k in (b"k%d" % i for i in range(400_000)) if merkle.bucket_of(k) == target][:n]


@pytest.mark.parametrize(
    "steps",
    [
        # One key changed per update, so each step takes the single-key path; keys 0 < 1 < 2
        # stand for the sorted keys of one bucket.
        [{1: b"a"}, {0: b"b"}, {2: b"c"}],  # insert before, then after, the present key
        [{1: b"a"}, {2: b"b"}, {1: None}, {1: b"c"}, {2: b"d"}],  # delete one of two, re-insert, overwrite
        [{0: b"a"}, {1: None}, {0: b"b"}, {0: None}],  # delete an absent key, overwrite, empty
        [{0: b"a", 2: b"b"}, {1: b"c"}, {0: None, 2: None}, {1: None}],  # merges of many keys
    ],
)
def test_bucket_edits_match_from_scratch(steps: list[dict[int, bytes | None]]) -> None:
    same = sorted(_same_bucket(3))
    src = DictSource()
    for step in steps:
        update = src.apply({same[i]: v for i, v in step.items()})
        assert update.root == merkle.compute_root(src.state.items())
        [(_, _, keys, _)] = update.buckets
        assert list(keys) == sorted(src.state)


def _filled(n: int = 300) -> DictSource:
    src = DictSource()
    src.apply({b"key-%d" % i: b"value-%d" % i for i in range(n)})
    return src


def test_tree_from_bucket_hashes_is_the_incremental_tree() -> None:
    assert merkle.compute_tree([])[merkle.ROOT_NODE] == merkle.EMPTY_ROOT
    src = _filled(2_000)
    first = merkle.FIRST_BUCKET_NODE
    tree = merkle.compute_tree((i - first, h) for i, h in src.nodes.items() if i >= first)
    assert len(tree) == 2 * merkle.BUCKETS
    assert tree[merkle.ROOT_NODE] == merkle.root_of(src) == merkle.compute_root(src.state.items())
    for index in range(1, 2 * merkle.BUCKETS):
        assert tree[index] == src.nodes.get(index, merkle.EMPTY[merkle.height_of(index)])


def test_updating_k_keys_does_not_rehash_all_n() -> None:
    src = _filled(2_000)
    src.node_reads = 0
    update = merkle.compute_update(src, {b"key-5": b"new", b"key-77": b"new"})
    # Two buckets, 16 ancestors each, ~2 sibling reads per level: far from 2^17 nodes.
    assert len(update.nodes) <= 2 * (merkle.DEPTH + 1)
    assert src.node_reads <= 2 * 2 * merkle.DEPTH
    assert len(update.buckets) == 2


@settings(max_examples=100)
@given(st.integers(0, 299), st.binary(max_size=12))
def test_proofs_verify_and_catch_tampering(i: int, other: bytes) -> None:
    src = _filled()
    root = merkle.root_of(src)
    key, value = b"key-%d" % i, b"value-%d" % i
    proof = merkle.prove(src, key)
    merkle.verify_proof(root, key, value, proof)
    assert wire.decode(wire.encode(proof)) == proof  # proofs travel on the wire
    if other != value:
        with pytest.raises(Reject, match="proof_root_mismatch"):
            merkle.verify_proof(root, key, other, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_proof(bytes(32), key, value, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_proof(root, key, None, proof)  # present key claimed absent


def test_absence_proof() -> None:
    src = _filled()
    root = merkle.root_of(src)
    proof = merkle.prove(src, b"missing")
    merkle.verify_proof(root, b"missing", None, proof)
    with pytest.raises(Reject, match="proof_root_mismatch"):
        merkle.verify_proof(root, b"missing", b"value", proof)


def test_malformed_proofs_are_rejected() -> None:
    src = DictSource()
    target = merkle.bucket_of(b"k0")
    same = [k for k in (b"k%d" % i for i in range(400_000)) if merkle.bucket_of(k) == target][:3]
    src.apply({k: b"v" for k in same})
    root = merkle.root_of(src)
    proof = merkle.prove(src, same[0])
    with pytest.raises(Reject, match="proof_key_mismatch"):
        merkle.verify_proof(root, same[1], b"v", proof)
    swapped = merkle.MerkleProof(proof.key, tuple(reversed(proof.others)), proof.siblings)
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof(root, same[0], b"v", swapped)
    # Hiding the key among the "others" must not pass as an absence proof.
    own = merkle.BucketEntry(same[0], merkle.value_hash(b"v"))
    hidden = merkle.MerkleProof(proof.key, (own, *proof.others), proof.siblings)
    with pytest.raises(Reject, match="proof_malformed"):
        merkle.verify_proof(root, same[0], None, hidden)


def test_hashing_is_domain_separated() -> None:
    # A leaf can never be mistaken for a node or a bucket: different tags.
    left, right = bytes(32), bytes(range(32))
    assert merkle.node_hash(left, right) != merkle.bucket_hash([left, right])
    assert merkle.leaf_hash(b"ab", b"c") != merkle.leaf_hash(b"a", b"bc")
    assert merkle.leaf_hash(b"k", b"v") == merkle.leaf_of(b"k", merkle.value_hash(b"v"))
    assert merkle.value_hash(left + right) not in (merkle.node_hash(left, right), merkle.leaf_of(left, right))
    assert merkle.height_of(merkle.ROOT_NODE) == merkle.DEPTH
    assert merkle.height_of(merkle.FIRST_BUCKET_NODE) == 0


def test_prove_refuses_a_source_whose_values_do_not_match_its_leaves() -> None:
    src = DictSource()
    same = _same_bucket(2)
    src.apply({same[0]: b"a", same[1]: b"b"})
    merkle.verify_proof(merkle.root_of(src), same[0], b"a", merkle.prove(src, same[0]))
    src.state[same[1]] = b"not the committed value"
    with pytest.raises(InternalError, match="does not match its Merkle leaf"):
        merkle.prove(src, same[0])
