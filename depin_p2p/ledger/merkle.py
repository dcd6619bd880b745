"""State root and inclusion proofs: hash buckets under a fixed-depth binary tree. [pure]

Exact hashing, so another implementation can reproduce every root
(``H`` is BLAKE2b with a 32-byte digest, ``u32`` big-endian, ``‖`` concatenation):

* A state entry is a key ``K`` (namespaced bytes, see ``ledger.state``) and a
  value ``V`` (the canonical wire encoding of the record).
* ``bucket(K) = int.from_bytes(H(0x03 ‖ K)[:2], "big")``: one of 2^16 buckets.
* ``value_hash(V) = H(0x04 ‖ V)``.
* ``leaf(K, V) = H(0x00 ‖ u32(len K) ‖ K ‖ value_hash(V))``: the leaf binds
  the key to the value's hash, so a proof can carry ``(K, value_hash)``
  pairs and let the verifier compute every leaf itself.
* ``bucket_hash = H(0x01 ‖ u32(n) ‖ leaf_1 ‖ … ‖ leaf_n)`` over the bucket's
  entries sorted by ``K`` (bytewise); an empty bucket is ``H(0x01 ‖ u32(0))``.
* ``node(l, r) = H(0x02 ‖ l ‖ r)``; the 2^16 bucket hashes, in bucket order,
  are the leaves of a complete binary tree of depth 16 whose top node is the
  state root.

Nodes are numbered heap-style: the root is 1, node ``i`` has children
``2i`` and ``2i+1``, and bucket ``b`` is node ``2^16 + b``. Updating k keys
rehashes only their k buckets and the ≤16 ancestors of each, never all n.

A :class:`MerkleProof` for ``K`` carries the other entries of ``K``'s bucket
(key and value hash, never a leaf hash) and the 16 sibling hashes from the
bucket up to the root; :func:`verify_proof` checks presence (with a value)
or absence (``value=None``) against a root with no access to the store. As
the verifier computes each leaf from its key, a proof cannot relabel an
entry: to prove a present ``K`` absent it would have to drop ``K``'s entry
or give ``K``'s value hash another key, and either changes the bucket hash.
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from depin_p2p import wire
from depin_p2p.errors import InternalError, Reject

DEPTH = 16
BUCKETS = 1 << DEPTH
FIRST_BUCKET_NODE = BUCKETS  # heap index of bucket 0
ROOT_NODE = 1
MAX_KEY_BYTES = 64

_LEAF = b"\x00"
_BUCKET = b"\x01"
_NODE = b"\x02"
_KEYPOS = b"\x03"
_VALUE = b"\x04"

_blake2b = hashlib.blake2b


def _h(data: bytes) -> bytes:
    return _blake2b(data, digest_size=32).digest()


def bucket_of(key: bytes) -> int:
    """The bucket (0 .. 2^16-1) of a state key."""
    return int.from_bytes(_h(_KEYPOS + key)[:2], "big")


def value_hash(value: bytes) -> bytes:
    """``H(0x04 ‖ value)``."""
    return _h(_VALUE + value)


def leaf_of(key: bytes, value_hash: bytes) -> bytes:
    """The leaf of ``key`` from its value's hash: ``H(0x00 ‖ u32 len ‖ key ‖ value_hash)``."""
    return _h(b"".join((_LEAF, len(key).to_bytes(4, "big"), key, value_hash)))


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """The leaf of ``key`` holding ``value``: ``leaf_of(key, value_hash(value))``."""
    return leaf_of(key, value_hash(value))


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

    def bucket_contents(self, bucket: int) -> tuple[Sequence[bytes], Sequence[bytes]]:
        """The bucket's keys, sorted, and their leaf hashes (two sequences of equal length)."""
        ...

    def merkle_node(self, index: int) -> bytes | None:
        """The stored hash of heap node ``index``, or None if it was never written (empty)."""
        ...


class ProofSource(MerkleSource, Protocol):
    """What :func:`prove` needs besides the tree: the values, to give each entry's value hash."""

    def merkle_value(self, key: bytes) -> bytes | None:
        """The value (canonical encoding) state key ``key`` holds, or None if absent."""
        ...


@dataclass(frozen=True, slots=True)
class MerkleUpdate:
    """What :func:`compute_update` changed.

    Attributes:
        buckets: ``(bucket, bucket hash, keys, leaf hashes)`` of every touched
            bucket, sorted by bucket: its whole new content, keys sorted
            (both tuples empty for a bucket left empty), so a store rewrites
            a bucket with one value and never re-reads it.
        nodes: ``(heap index, hash)`` of every rewritten interior node, level
            by level from just above the buckets up to the root, each level in
            index order.
        root: the new state root.
    """

    buckets: tuple[tuple[int, bytes, tuple[bytes, ...], tuple[bytes, ...]], ...]
    nodes: tuple[tuple[int, bytes], ...]
    root: bytes


def root_of(source: MerkleSource) -> bytes:
    """The current root of ``source``."""
    stored = source.merkle_node(ROOT_NODE)
    return EMPTY_ROOT if stored is None else stored


# u32 length prefixes of the short lengths every key, value and bucket has: one
# table lookup instead of an int.to_bytes call per hash input on the hot path.
_U32 = tuple(n.to_bytes(4, "big") for n in range(256))
# Hash states already fed their domain tag: copying one costs ~30% less than
# constructing ``blake2b(digest_size=32)`` per hash (parameter parsing and
# setup), and the tag needs no concatenation. Never updated, only copied.
_KEYPOS_STATE = _blake2b(_KEYPOS, digest_size=32)
_LEAF_STATE = _blake2b(_LEAF, digest_size=32)
_VALUE_STATE = _blake2b(_VALUE, digest_size=32)
_BUCKET_STATE = _blake2b(_BUCKET, digest_size=32)
_NODE_STATE = _blake2b(_NODE, digest_size=32)


def compute_update(source: MerkleSource, updates: Mapping[bytes, bytes | None]) -> MerkleUpdate:
    """Root after setting each key of ``updates`` to its value (None deletes it).

    Reads only the touched buckets and the untouched siblings of their
    ancestors: O(k · (bucket size + 16)). This is the hot loop of every
    epoch, so the spec's hash functions are inlined in its helpers (the
    vectors and :func:`compute_root` pin that both agree).
    """
    buckets = _rehash_buckets(source, _leaves_by_bucket(updates))
    idx = [FIRST_BUCKET_NODE + row[0] for row in buckets]
    nodes, root = _rehash_paths(source, idx, [row[1] for row in buckets])
    return MerkleUpdate(tuple(buckets), nodes, root)


def _leaves_by_bucket(updates: Mapping[bytes, bytes | None]) -> dict[int, list[bytes]]:
    # bucket -> [key, new leaf hash or b"" (deleted), key, ...]: bucket_of and
    # leaf_hash inlined; a flat list (keys are unique in a Mapping) is the
    # cheapest container for the one change most buckets get.
    keypos, leaf, hash_value, u32 = _KEYPOS_STATE.copy, _LEAF_STATE.copy, _VALUE_STATE.copy, _U32
    by_bucket: dict[int, list[bytes]] = {}
    for key, value in updates.items():
        h = keypos()
        h.update(key)
        d = h.digest()
        bucket = (d[0] << 8) | d[1]
        if value is None:
            lh = b""
        else:
            h = hash_value()
            h.update(value)
            nk = len(key)
            g = leaf()
            g.update(b"".join((u32[nk] if nk < 256 else nk.to_bytes(4, "big"), key, h.digest())))
            lh = g.digest()
        changed = by_bucket.get(bucket)
        if changed is None:
            by_bucket[bucket] = [key, lh]
        else:
            changed += (key, lh)
    return by_bucket


def _rehash_buckets(
    source: MerkleSource, by_bucket: dict[int, list[bytes]]
) -> list[tuple[int, bytes, tuple[bytes, ...], tuple[bytes, ...]]]:
    # The new content and hash of each touched bucket, in bucket order.
    bucket_state = _BUCKET_STATE.copy
    buckets: list[tuple[int, bytes, tuple[bytes, ...], tuple[bytes, ...]]] = []
    contents = source.bucket_contents
    for bucket in sorted(by_bucket):
        changed = by_bucket[bucket]
        old_keys, old_leaves = contents(bucket)
        if len(changed) == 2:  # most buckets get one change
            key, lh = changed
            if not old_keys or (len(old_keys) == 1 and old_keys[0] == key):  # alone in its bucket
                keys: tuple[bytes, ...] = (key,) if lh else ()
                leaves: tuple[bytes, ...] = (lh,) if lh else ()
            else:
                keys, leaves = _put_one(old_keys, old_leaves, key, lh)
        else:
            keys, leaves = _merge_bucket(old_keys, old_leaves, changed)
        n = len(leaves)
        h = bucket_state()
        h.update(b"".join((_U32[n] if n < 256 else n.to_bytes(4, "big"), *leaves)))
        buckets.append((bucket, h.digest(), keys, leaves))
    return buckets


def _put_one(
    old_keys: Sequence[bytes], old_leaves: Sequence[bytes], key: bytes, lh: bytes
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    # One change put in place (keys are sorted): no dict, no sort.
    i = bisect_left(old_keys, key)
    present = i < len(old_keys) and old_keys[i] == key
    if lh:
        j = i + 1 if present else i
        return (*old_keys[:i], key, *old_keys[j:]), (*old_leaves[:i], lh, *old_leaves[j:])
    if present:
        return (*old_keys[:i], *old_keys[i + 1 :]), (*old_leaves[:i], *old_leaves[i + 1 :])
    return tuple(old_keys), tuple(old_leaves)


def _merge_bucket(
    old_keys: Sequence[bytes], old_leaves: Sequence[bytes], changed: list[bytes]
) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    entries = dict(zip(old_keys, old_leaves, strict=True))
    # Stored keys come sorted; only an inserted key can break the order (a
    # delete or an overwrite keeps it), so most buckets skip the sort.
    inserted = False
    for i in range(0, len(changed), 2):
        key, lh = changed[i], changed[i + 1]
        if not lh:
            entries.pop(key, None)
        else:
            if not inserted and key not in entries:
                inserted = True
            entries[key] = lh
    keys = tuple(sorted(entries)) if inserted and len(entries) > 1 else tuple(entries)
    return keys, tuple([entries[k] for k in keys])


def _rehash_paths(
    source: MerkleSource, idx: list[int], hashes: list[bytes]
) -> tuple[tuple[tuple[int, bytes], ...], bytes]:
    # Every ancestor of the changed nodes ``idx`` (sorted) with new ``hashes``, and the root.
    # Level by level the changed nodes stay in index order, so a node's sibling,
    # if it changed too, is its neighbour in the list; an unchanged sibling
    # comes from the source (None: an empty subtree).
    node, stored = _NODE_STATE.copy, source.merkle_node
    nodes: list[tuple[int, bytes]] = []
    for height in range(DEPTH):
        empty = EMPTY[height]
        up_idx: list[int] = []
        up_hashes: list[bytes] = []
        count = len(idx)
        i = 0
        while i < count:
            index = idx[i]
            if index & 1:
                left = stored(index - 1) or empty
                right = hashes[i]
                i += 1
            elif i + 1 < count and idx[i + 1] == index + 1:
                left = hashes[i]
                right = hashes[i + 1]
                i += 2
            else:
                left = hashes[i]
                right = stored(index + 1) or empty
                i += 1
            h = node()
            h.update(left + right)
            up_idx.append(index >> 1)
            up_hashes.append(h.digest())
        idx, hashes = up_idx, up_hashes
        nodes.extend(zip(idx, hashes, strict=True))
    return tuple(nodes), hashes[0] if hashes else root_of(source)


def compute_tree(bucket_hashes: Iterable[tuple[int, bytes]]) -> list[bytes]:
    """Every node hash of the tree whose non-empty buckets have ``bucket_hashes``.

    Returns a heap array of 2^17 hashes: element ``i`` is node ``i`` (element
    0 is unused), so ``[ROOT_NODE]`` is the root and ``[FIRST_BUCKET_NODE +
    b]`` bucket ``b``'s hash. Buckets not listed are empty. Hashes only the
    ancestors of listed buckets (empty subtrees are the constants ``EMPTY``).
    """
    tree = [b""]
    for height in range(DEPTH, -1, -1):
        tree.extend([EMPTY[height]] * (1 << (DEPTH - height)))
    level: list[int] = []
    for bucket, bh in bucket_hashes:
        index = FIRST_BUCKET_NODE + bucket
        tree[index] = bh
        level.append(index)
    level.sort()
    node = _NODE_STATE.copy
    for _ in range(DEPTH):
        parents: list[int] = []
        last = 0
        for index in level:
            parent = index >> 1
            if parent != last:  # siblings are neighbours in the sorted level
                left = parent << 1
                h = node()
                h.update(tree[left] + tree[left + 1])
                tree[parent] = h.digest()
                parents.append(parent)
                last = parent
        level = parents
    return tree


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
    """Another entry of the proven key's bucket: its key and its value's hash.

    Not its leaf hash: the verifier computes the leaf from the key, so an
    entry cannot be given another key.
    """

    key: Annotated[bytes, wire.MaxLen(MAX_KEY_BYTES)]
    value_hash: wire.Bytes32


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


def prove(source: ProofSource, key: bytes) -> MerkleProof:
    """A proof for ``key`` (present or absent) against ``root_of(source)``.

    Raises:
        InternalError: the source's values do not match its bucket's leaves.
    """
    bucket = bucket_of(key)
    keys, leaves = source.bucket_contents(bucket)
    others = []
    for k, lh in zip(keys, leaves, strict=True):
        if k == key:
            continue
        value = source.merkle_value(k)
        if value is None or leaf_of(k, vh := value_hash(value)) != lh:
            raise InternalError(f"the value of state key {k.hex()} does not match its Merkle leaf")
        others.append(BucketEntry(k, vh))
    siblings = []
    index = FIRST_BUCKET_NODE + bucket
    for height in range(DEPTH):
        sibling = index ^ 1
        siblings.append(source.merkle_node(sibling) or EMPTY[height])
        index >>= 1
    return MerkleProof(key, tuple(others), tuple(siblings))


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
    # Every leaf is computed here from its key: the proof gives value hashes only.
    entries = [(e.key, leaf_of(e.key, e.value_hash)) for e in proof.others]
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
