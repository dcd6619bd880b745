"""State root and inclusion proofs: hash buckets under a fixed-depth binary tree. [pure]

Exact hashing, so another implementation can reproduce every root
(``H`` is BLAKE2b with a 32-byte digest, ``u32`` big-endian, ``‖`` concatenation):

* A state entry is a key ``K`` (namespaced bytes, see ``ledger.state``) and a
  value ``V`` (the canonical wire encoding of the record).
* ``bucket(K) = int.from_bytes(H(0x03 ‖ K)[:2], "big")``: one of 2^16 buckets.
* ``leaf(K, V) = H(0x00 ‖ u32(len K) ‖ K ‖ u32(len V) ‖ V)``.
* ``bucket_hash = H(0x01 ‖ u32(n) ‖ leaf_1 ‖ … ‖ leaf_n)`` over the bucket's
  entries sorted by ``K`` (bytewise); an empty bucket is ``H(0x01 ‖ u32(0))``.
* ``node(l, r) = H(0x02 ‖ l ‖ r)``; the 2^16 bucket hashes, in bucket order,
  are the leaves of a complete binary tree of depth 16 whose top node is the
  state root.

Nodes are numbered heap-style: the root is 1, node ``i`` has children
``2i`` and ``2i+1``, and bucket ``b`` is node ``2^16 + b``. Updating k keys
rehashes only their k buckets and the ≤16 ancestors of each, never all n.

A :class:`MerkleProof` for ``K`` carries the other entries of ``K``'s bucket
(key and leaf hash) and the 16 sibling hashes from the bucket up to the
root; :func:`verify_proof` checks presence (with a value) or absence
(``value=None``) against a root with no access to the store.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from depin_p2p import wire
from depin_p2p.errors import Reject

DEPTH = 16
BUCKETS = 1 << DEPTH
FIRST_BUCKET_NODE = BUCKETS  # heap index of bucket 0
ROOT_NODE = 1
MAX_KEY_BYTES = 64

_LEAF = b"\x00"
_BUCKET = b"\x01"
_NODE = b"\x02"
_KEYPOS = b"\x03"

_blake2b = hashlib.blake2b


def _h(data: bytes) -> bytes:
    return _blake2b(data, digest_size=32).digest()


def bucket_of(key: bytes) -> int:
    """The bucket (0 .. 2^16-1) of a state key."""
    return int.from_bytes(_h(_KEYPOS + key)[:2], "big")


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """``H(0x00 ‖ u32 len ‖ key ‖ u32 len ‖ value)``."""
    return _h(b"".join((_LEAF, len(key).to_bytes(4, "big"), key, len(value).to_bytes(4, "big"), value)))


def bucket_hash(leaves: Sequence[bytes]) -> bytes:
    """Hash of a bucket from its leaf hashes, already in key order."""
    return _h(b"".join((_BUCKET, len(leaves).to_bytes(4, "big"), *leaves)))


def node_hash(left: bytes, right: bytes) -> bytes:
    """``H(0x02 ‖ left ‖ right)``."""
    return _h(_NODE + left + right)


def _empty_hashes() -> tuple[bytes, ...]:
    # EMPTY[h] is the hash of an empty subtree of height h (h=0: an empty bucket).
    out = [bucket_hash(())]
    for _ in range(DEPTH):
        out.append(node_hash(out[-1], out[-1]))
    return tuple(out)


EMPTY = _empty_hashes()
EMPTY_ROOT = EMPTY[DEPTH]


def height_of(index: int) -> int:
    """Height above the bucket level of heap node ``index`` (buckets: 0, root: 16)."""
    return DEPTH + 1 - index.bit_length()


class MerkleSource(Protocol):
    """What the tree needs from storage: bucket contents and stored node hashes."""

    def bucket_leaves(self, bucket: int) -> Sequence[tuple[bytes, bytes]]:
        """The bucket's ``(key, leaf hash)`` pairs, sorted by key."""
        ...

    def merkle_node(self, index: int) -> bytes | None:
        """The stored hash of heap node ``index``, or None if it was never written (empty)."""
        ...


@dataclass(frozen=True, slots=True)
class MerkleUpdate:
    """What :func:`compute_update` changed.

    Attributes:
        leaves: ``(bucket, key, leaf hash or None for a deleted key)``, sorted.
        nodes: ``(heap index, hash)`` of every rewritten node, buckets included.
        root: the new state root.
    """

    leaves: tuple[tuple[int, bytes, bytes | None], ...]
    nodes: tuple[tuple[int, bytes], ...]
    root: bytes


def root_of(source: MerkleSource) -> bytes:
    """The current root of ``source``."""
    stored = source.merkle_node(ROOT_NODE)
    return EMPTY_ROOT if stored is None else stored


def compute_update(source: MerkleSource, updates: Mapping[bytes, bytes | None]) -> MerkleUpdate:
    """Root after setting each key of ``updates`` to its value (None deletes it).

    Reads only the touched buckets and their ancestors: O(k · (bucket size + 16)).
    """
    by_bucket: dict[int, dict[bytes, bytes | None]] = {}
    for key, value in updates.items():
        by_bucket.setdefault(bucket_of(key), {})[key] = None if value is None else leaf_hash(key, value)

    leaf_rows: list[tuple[int, bytes, bytes | None]] = []
    level: dict[int, bytes] = {}
    for bucket, changed in by_bucket.items():
        entries = dict(source.bucket_leaves(bucket))
        for key, lh in changed.items():
            leaf_rows.append((bucket, key, lh))
            if lh is None:
                entries.pop(key, None)
            else:
                entries[key] = lh
        if len(entries) == 1:  # the common case: no sort needed
            level[FIRST_BUCKET_NODE + bucket] = bucket_hash(tuple(entries.values()))
        else:
            level[FIRST_BUCKET_NODE + bucket] = bucket_hash([entries[k] for k in sorted(entries)])

    nodes: dict[int, bytes] = dict(level)
    stored = source.merkle_node
    for height in range(DEPTH):
        empty = EMPTY[height]
        parents: dict[int, bytes] = {}
        for index in level:
            parent = index >> 1
            if parent in parents:
                continue  # its sibling already produced it
            left = level.get(index & ~1) or stored(index & ~1) or empty
            right = level.get(index | 1) or stored(index | 1) or empty
            parents[parent] = _h(_NODE + left + right)
        nodes.update(parents)
        level = parents

    root = nodes.get(ROOT_NODE) or root_of(source)
    leaf_rows.sort(key=lambda row: (row[0], row[1]))
    return MerkleUpdate(tuple(leaf_rows), tuple(sorted(nodes.items())), root)


def compute_root(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Root of a whole state given as ``(key, value)`` pairs, from scratch."""
    buckets: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in entries:
        buckets.setdefault(bucket_of(key), []).append((key, leaf_hash(key, value)))
    level = {
        FIRST_BUCKET_NODE + b: bucket_hash([lh for _, lh in sorted(rows)]) for b, rows in buckets.items()
    }
    for height in range(DEPTH):
        parents: dict[int, bytes] = {}
        for index in {i >> 1 for i in level}:
            left = level.get(index << 1, EMPTY[height])
            right = level.get((index << 1) | 1, EMPTY[height])
            parents[index] = node_hash(left, right)
        level = parents
    return level.get(ROOT_NODE, EMPTY_ROOT)


# --------------------------------------------------------------------------
# Proofs


@wire.struct
@dataclass(frozen=True, slots=True)
class BucketEntry:
    """Another entry of the proven key's bucket: its key and leaf hash."""

    key: Annotated[bytes, wire.MaxLen(MAX_KEY_BYTES)]
    leaf: wire.Bytes32


@wire.message(type_id=26)
@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Inclusion (or exclusion) proof of one key.

    Attributes:
        key: the proven state key.
        others: the bucket's other entries, sorted by key.
        siblings: sibling hashes from the bucket level (first) up to just below the root.
    """

    key: Annotated[bytes, wire.MaxLen(MAX_KEY_BYTES)]
    others: Annotated[tuple[BucketEntry, ...], wire.MaxLen(4096)]
    siblings: Annotated[tuple[wire.Bytes32, ...], wire.Len(DEPTH)]


def prove(source: MerkleSource, key: bytes) -> MerkleProof:
    """A proof for ``key`` (present or absent) against ``root_of(source)``."""
    bucket = bucket_of(key)
    others = tuple(BucketEntry(k, lh) for k, lh in source.bucket_leaves(bucket) if k != key)
    siblings = []
    index = FIRST_BUCKET_NODE + bucket
    for height in range(DEPTH):
        sibling = index ^ 1
        siblings.append(source.merkle_node(sibling) or EMPTY[height])
        index >>= 1
    return MerkleProof(key, others, tuple(siblings))


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: MerkleProof) -> None:
    """Check that ``key`` holds ``value`` (or, with None, is absent) under ``root``.

    Raises:
        Reject: ``proof_key_mismatch`` (a proof for another key),
            ``proof_malformed`` (unsorted or duplicate bucket entries, the key
            among the others), ``proof_root_mismatch`` (wrong value or root).
    """
    if proof.key != key:
        raise Reject("proof_key_mismatch", "the proof is for another key")
    keys = [e.key for e in proof.others]
    if any(a >= b for a, b in itertools.pairwise(keys)) or key in keys:
        raise Reject("proof_malformed", "bucket entries are not strictly sorted or repeat the key")
    if len(proof.siblings) != DEPTH:
        raise Reject("proof_malformed", f"expected {DEPTH} siblings")
    bucket = bucket_of(key)
    if any(bucket_of(k) != bucket for k in keys):
        raise Reject("proof_malformed", "a bucket entry belongs to another bucket")
    entries = [(e.key, e.leaf) for e in proof.others]
    if value is not None:
        entries.append((key, leaf_hash(key, value)))
        entries.sort()
    acc = bucket_hash([lh for _, lh in entries])
    index = FIRST_BUCKET_NODE + bucket
    for sibling in proof.siblings:
        acc = node_hash(sibling, acc) if index & 1 else node_hash(acc, sibling)
        index >>= 1
    if acc != root:
        raise Reject("proof_root_mismatch", "the proof does not lead to the expected root")
