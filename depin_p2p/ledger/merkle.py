"""State root and proofs: a sparse Merkle tree over 256-bit key paths, with path compression. [pure]

Exact hashing, so another implementation can reproduce every root
(``H`` is BLAKE2b with a 32-byte digest, ``u32`` big-endian, ``‖``
concatenation):

* A state entry is a key ``K`` (namespaced bytes, see ``ledger.state``) and a
  value ``V`` (the canonical wire encoding of the record).
* ``path(K) = H(0x03 ‖ K)``, read as 256 bits, most significant bit of the
  first byte first: bit ``d`` chooses the child at depth ``d`` (0: left).
* ``value_hash(V) = H(0x04 ‖ V)``.
* ``leaf(K, V) = H(0x00 ‖ u32(len K) ‖ K ‖ value_hash(V))``: the leaf binds
  the key to its value's hash, and the verifier derives the key's path.
* ``node(l, r) = H(0x02 ‖ l ‖ r)``; ``EMPTY = H(0x01)`` is the hash of an
  empty subtree. The three tags keep leaves, nodes and emptiness apart.

The tree is the binary trie of the key paths, compressed: a subtree holding
no entry is ``EMPTY``; a subtree holding exactly one entry is that entry's
leaf, placed as high as possible (just below the deepest node whose two
sides both hold entries); a subtree holding two or more entries is the node
of its two halves (one half may be ``EMPTY``). The root is the tree's top
(``EMPTY`` for an empty state). So the shape, and the root, depend only on
the set of entries: never on the order of updates. A key's leaf sits at
depth ``d`` = one more than the length of the longest path prefix it shares
with another key, about log2 n for n random keys; a key ground to share
``g`` bits with a crowd of m keys sits at about g + 2·log2 m at worst, never
proportional to m.

A :class:`MerkleProof` for keys ``K_1 < … < K_k`` (sorted by path) gives, for
each key, a :class:`ProofTerminal`: the depth ``d`` where the key's path ends
in the tree, and, if the key is absent but its position holds another key's
leaf, that key and its value hash. The verifier rebuilds the part of the
tree above the terminals: at a node of depth ``d`` whose subtree holds
proven keys, the keys split by bit ``d``; a side holding none takes the next
sibling hash, in pre-order (a node's missing side before its subtrees, left
subtree before right). ``empties`` has one bit per sibling, in that order
(bit 7 of byte 0 first, zero padding): set means ``EMPTY``, which is not in
``siblings``; ``siblings`` concatenates the other 32-byte hashes. A one-key
proof lists the siblings from the root down, so its size is 32 bytes per
non-empty sibling plus a few dozen bytes.

Storage: every node and leaf is stored by its hash as a record (``leaf:
0x00 ‖ u64 version ‖ path ‖ value_hash ‖ K``, ``node: 0x02 ‖ u64 version ‖
kind(l) ‖ kind(r) ‖ l ‖ r`` with kinds 0 empty, 1 leaf, 2 node; ``version``
is the epoch that wrote it). :func:`compute_update` for k changed keys reads
and rewrites only the O(k log n) nodes on their paths and reports the new
records and the records that left the tree, for the store to prune.
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Annotated, Protocol

from depin_p2p import wire
from depin_p2p.errors import CodecError, InternalError, Reject

MAX_KEY_BYTES = 64
MAX_DEPTH = 256
MAX_PROOF_KEYS = 1024

_LEAF = b"\x00"
_EMPTY_TAG = b"\x01"
_NODE = b"\x02"
_KEYPATH = b"\x03"
_VALUE = b"\x04"

K_EMPTY, K_LEAF, K_NODE = 0, 1, 2

_blake2b = hashlib.blake2b


def _h(data: bytes) -> bytes:
    return _blake2b(data, digest_size=32).digest()


EMPTY = _h(_EMPTY_TAG)
EMPTY_ROOT = EMPTY

PathOf = Callable[[bytes], int]
# Leaves to build a subtree from: paths, leaf hashes, records (parallel, sorted by path).
_Leaves = tuple[Sequence[int], Sequence[bytes], Sequence[bytes]]


def key_path(key: bytes) -> int:
    """The 256-bit path of a state key, ``H(0x03 ‖ key)`` as a big-endian integer."""
    return int.from_bytes(_h(_KEYPATH + key), "big")


def value_hash(value: bytes) -> bytes:
    """``H(0x04 ‖ value)``."""
    return _h(_VALUE + value)


def leaf_of(key: bytes, value_hash: bytes) -> bytes:
    """The leaf of ``key`` from its value's hash: ``H(0x00 ‖ u32 len ‖ key ‖ value_hash)``."""
    return _h(b"".join((_LEAF, len(key).to_bytes(4, "big"), key, value_hash)))


def leaf_hash(key: bytes, value: bytes) -> bytes:
    """The leaf of ``key`` holding ``value``: ``leaf_of(key, value_hash(value))``."""
    return leaf_of(key, value_hash(value))


def node_hash(left: bytes, right: bytes) -> bytes:
    """``H(0x02 ‖ left ‖ right)``."""
    return _h(_NODE + left + right)


class MerkleSource(Protocol):
    """What the tree needs from storage: the root and the records of stored nodes."""

    def merkle_root(self) -> bytes:
        """The current root (``EMPTY_ROOT`` for an empty state)."""
        ...

    def merkle_node(self, node: bytes) -> bytes | None:
        """The record of the leaf or node whose hash is ``node``, or None if not stored."""
        ...


@dataclass(frozen=True, slots=True)
class MerkleUpdate:
    """What :func:`compute_update` changed.

    Attributes:
        root: the new state root.
        nodes: ``(hash, record)`` of every leaf and node the new tree has and
            the old one had not, in no particular order.
        stale: the hashes of every leaf and node the old tree had and the new
            one has not (the store keeps them while older versions are kept).
        hashes: the BLAKE2b calls the update made (a cost figure for benchmarks).
    """

    root: bytes
    nodes: tuple[tuple[bytes, bytes], ...]
    stale: tuple[bytes, ...]
    hashes: int = 0


def root_of(source: MerkleSource) -> bytes:
    """The current root of ``source``."""
    return source.merkle_root()


def record_version(record: bytes) -> int:
    """The version (epoch) that wrote a stored record."""
    return int.from_bytes(record[1:9], "big")


def _kind_of(source: MerkleSource, node: bytes) -> int:
    if node == EMPTY:
        return K_EMPTY
    record = source.merkle_node(node)
    if record is None:
        raise InternalError(f"Merkle node {node.hex()} is missing from the store")
    return K_LEAF if record[0] == 0 else K_NODE


# u32 length prefixes of the short keys every state has: one table lookup per leaf.
_U32 = tuple(n.to_bytes(4, "big") for n in range(256))
# Hash states already fed their domain tag: copying one costs less than a fresh
# ``blake2b(digest_size=32)`` (parameter parsing) and needs no concatenation.
_KEYPATH_STATE = _blake2b(_KEYPATH, digest_size=32)
_LEAF_STATE = _blake2b(_LEAF, digest_size=32)
_VALUE_STATE = _blake2b(_VALUE, digest_size=32)
_NODE_STATE = _blake2b(_NODE, digest_size=32)
_KINDS = tuple(bytes((a, b)) for a in range(3) for b in range(3))


def _prepare(
    updates: Mapping[bytes, bytes | None], version: int, path_of: PathOf | None
) -> tuple[list[int], list[bytes], list[bytes], int]:
    # The changed keys sorted by path: paths, new leaf hashes (b"": deleted), new leaf
    # records, and the hashes spent. The spec's hash functions are inlined (hot loop).
    keypath, leaf, hash_value, u32 = _KEYPATH_STATE.copy, _LEAF_STATE.copy, _VALUE_STATE.copy, _U32
    head = b"\x00" + version.to_bytes(8, "big")
    items: list[tuple[int, bytes, bytes]] = []
    append = items.append
    from_bytes = int.from_bytes
    for key, value in updates.items():
        if path_of is None:
            h = keypath()
            h.update(key)
            pb = h.digest()
            path = from_bytes(pb, "big")
        else:
            path = path_of(key)
            pb = path.to_bytes(32, "big")
        if value is None:
            append((path, b"", b""))
            continue
        h = hash_value()
        h.update(value)
        vh = h.digest()
        nk = len(key)
        g = leaf()
        g.update(b"".join((u32[nk] if nk < 256 else nk.to_bytes(4, "big"), key, vh)))
        append((path, g.digest(), b"".join((head, pb, vh, key))))
    items.sort(key=itemgetter(0))
    paths = [it[0] for it in items]
    if len(set(paths)) != len(paths):
        raise InternalError("two state keys share a Merkle path")
    leaves = [it[1] for it in items]
    records = [it[2] for it in items]
    # Path hashes (unless given), then a value hash and a leaf hash per key set.
    hashes = (len(items) if path_of is None else 0) + 2 * sum(1 for lh in leaves if lh)

    return paths, leaves, records, hashes


def compute_update(
    source: MerkleSource,
    updates: Mapping[bytes, bytes | None],
    version: int,
    *,
    path_of: PathOf | None = None,
) -> MerkleUpdate:
    """The tree after setting each key of ``updates`` to its value (None deletes it).

    Reads only the nodes on the changed keys' paths: O(k log n) for k keys
    among n. ``version`` (the epoch) is written into every new record.
    ``path_of`` replaces :func:`key_path` (tests build crafted paths with it).

    Raises:
        InternalError: two keys share a path (a BLAKE2b collision), or the
            source lacks a node its tree refers to.
    """
    root = source.merkle_root()
    if not updates:
        return MerkleUpdate(root, (), ())
    paths, leaves, records, hashes = _prepare(updates, version, path_of)
    rewrite = _Rewrite(source, paths, leaves, records, version)
    new_root, _ = rewrite.update(root, _kind_of(source, root), 0, 0, len(paths))
    removed, added = rewrite.removed, rewrite.added
    # A record both removed and added (an unchanged subtree rebuilt) is neither stale nor new.
    both = added.keys() & removed
    if both:
        stale = tuple(h for h in removed if h not in both)
        nodes = tuple((h, rec) for h, rec in added.items() if h not in both)
    else:
        stale, nodes = tuple(removed), tuple(added.items())
    return MerkleUpdate(new_root, nodes, stale, hashes + rewrite.node_count)


class _Rewrite:
    """One :func:`compute_update`: the changed keys (sorted by path) and what the rewrite made."""

    __slots__ = ("added", "get", "heads", "leaves", "node_count", "paths", "records", "removed")

    def __init__(
        self,
        source: MerkleSource,
        paths: list[int],
        leaves: list[bytes],
        records: list[bytes],
        version: int,
    ) -> None:
        # A store may offer a faster reader of the same records (``LmdbView.merkle_record``).
        self.get: Callable[[bytes], bytes | None] = getattr(source, "merkle_record", source.merkle_node)
        self.paths, self.leaves, self.records = paths, leaves, records
        # A node record's head for each pair of child kinds: ``0x02 ‖ u64 version ‖ kl ‖ kr``.
        self.heads = tuple(b"\x02" + version.to_bytes(8, "big") + kinds for kinds in _KINDS)
        self.added: dict[bytes, bytes] = {}
        self.removed: list[bytes] = []
        self.node_count = 0

    def combine(self, left: bytes, kl: int, right: bytes, kr: int) -> tuple[bytes, int]:
        # The canonical subtree of two halves: nothing, a single leaf moved up, or a node.
        if kl == K_EMPTY:
            if kr != K_NODE:
                return right, kr
        elif kr == K_EMPTY and kl == K_LEAF:
            return left, kl
        data = left + right
        g = _NODE_STATE.copy()
        g.update(data)
        d = g.digest()
        self.added[d] = self.heads[3 * kl + kr] + data
        self.node_count += 1
        return d, K_NODE

    def build(self, depth: int, cols: _Leaves, lo: int, hi: int) -> tuple[bytes, int]:
        # The subtree at ``depth`` holding exactly the leaves lo..hi of ``cols``.
        bp, bl, br = cols
        if hi - lo == 1:
            self.added[bl[lo]] = br[lo]
            return bl[lo], K_LEAF
        if hi == lo:
            return EMPTY, K_EMPTY
        if depth >= MAX_DEPTH:
            raise InternalError("two state keys share a Merkle path")
        shift = 255 - depth
        mid = bisect_left(bp, ((bp[lo] >> shift) | 1) << shift, lo, hi)
        if mid == lo:
            right, kr = self.build(depth + 1, cols, lo, hi)
            return self.combine(EMPTY, K_EMPTY, right, kr)
        if mid == hi:
            left, kl = self.build(depth + 1, cols, lo, hi)
            return self.combine(left, kl, EMPTY, K_EMPTY)
        left, kl = self.build(depth + 1, cols, lo, mid)
        right, kr = self.build(depth + 1, cols, mid, hi)
        return self.combine(left, kl, right, kr)

    def update(self, h: bytes, kind: int, depth: int, lo: int, hi: int) -> tuple[bytes, int]:
        # The subtree at ``depth`` whose hash was ``h``, with the changes lo..hi applied.
        paths = self.paths
        if hi - lo == 1:
            return self._update_one(h, kind, depth, lo)
        if kind == K_NODE:
            rec = self.get(h)
            if rec is None:
                raise InternalError(f"Merkle node {h.hex()} is missing from the store")
            self.removed.append(h)
            shift = 255 - depth
            mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
            kl, kr = rec[9], rec[10]
            left, right = rec[11:43], rec[43:75]
            if lo < mid:
                left, kl = self.update(left, kl, depth + 1, lo, mid)
            if mid < hi:
                right, kr = self.update(right, kr, depth + 1, mid, hi)
            return self.combine(left, kl, right, kr)
        leaves, records = self.leaves, self.records
        if kind == K_LEAF:
            return self._update_leaf(h, depth, lo, hi)
        keep = [j for j in range(lo, hi) if leaves[j]]
        cols = ([paths[j] for j in keep], [leaves[j] for j in keep], [records[j] for j in keep])
        return self.build(depth, cols, 0, len(keep))

    def _update_one(self, h: bytes, kind: int, depth: int, j: int) -> tuple[bytes, int]:
        # ``update`` for one change, the common case below the top levels: down its path
        # and back up in two loops, no recursion, ``combine`` inlined.
        path = self.paths[j]
        get, removed = self.get, self.removed
        stack: list[tuple[bytes, int, int]] = []  # (sibling, its kind, 1 if we went right)
        push = stack.append
        while kind == K_NODE:
            rec = get(h)
            if rec is None:
                raise InternalError(f"Merkle node {h.hex()} is missing from the store")
            removed.append(h)
            if (path >> (255 - depth)) & 1:
                push((rec[11:43], rec[9], 1))
                h, kind = rec[43:75], rec[10]
            else:
                push((rec[43:75], rec[10], 0))
                h, kind = rec[11:43], rec[9]
            depth += 1
        if kind == K_LEAF:
            sub, ks = self._update_leaf(h, depth, j, j + 1)
        elif self.leaves[j]:
            sub, ks = self.leaves[j], K_LEAF
            self.added[sub] = self.records[j]
        else:
            sub, ks = EMPTY, K_EMPTY
        added, heads, node = self.added, self.heads, _NODE_STATE.copy
        made = 0
        for sib, kind_s, right in reversed(stack):
            if right:
                left, kl, rgt, kr = sib, kind_s, sub, ks
            else:
                left, kl, rgt, kr = sub, ks, sib, kind_s
            if kl == K_EMPTY:
                if kr != K_NODE:
                    sub, ks = rgt, kr
                    continue
            elif kr == K_EMPTY and kl == K_LEAF:
                sub, ks = left, kl
                continue
            data = left + rgt
            g = node()
            g.update(data)
            sub, ks = g.digest(), K_NODE
            added[sub] = heads[3 * kl + kr] + data
            made += 1
        self.node_count += made
        return sub, ks

    def _update_leaf(self, h: bytes, depth: int, lo: int, hi: int) -> tuple[bytes, int]:
        # A subtree that was one leaf: the changes lo..hi, plus that leaf unless one replaces it.
        paths, leaves, records = self.paths, self.leaves, self.records
        rec = self.get(h)
        if rec is None:
            raise InternalError(f"Merkle leaf {h.hex()} is missing from the store")
        self.removed.append(h)
        old = int.from_bytes(rec[9:41], "big")
        if hi - lo == 1 and paths[lo] == old:  # the leaf's own key changed
            if leaves[lo]:
                self.added[leaves[lo]] = records[lo]
                return leaves[lo], K_LEAF
            return EMPTY, K_EMPTY
        i = bisect_left(paths, old, lo, hi)
        bp: list[int] = []
        bl: list[bytes] = []
        br: list[bytes] = []
        for j in range(lo, hi):
            if j == i and paths[j] != old:
                bp.append(old)
                bl.append(h)
                br.append(rec)
            if leaves[j]:
                bp.append(paths[j])
                bl.append(leaves[j])
                br.append(records[j])
        if i == hi:
            bp.append(old)
            bl.append(h)
            br.append(rec)
        return self.build(depth, (bp, bl, br), 0, len(bp))


def compute_root(entries: Iterable[tuple[bytes, bytes]], *, path_of: PathOf | None = None) -> bytes:
    """Root of a whole state given as ``(key, value)`` pairs, from scratch (no store)."""
    rows = sorted(((path_of or key_path)(k), leaf_hash(k, v)) for k, v in entries)
    paths = [p for p, _ in rows]
    if len(set(paths)) != len(paths):
        raise InternalError("two state keys share a Merkle path")

    def subtree(depth: int, lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return rows[lo][1]
        if hi == lo:
            return EMPTY
        shift = 255 - depth
        mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
        if mid in (lo, hi):  # all on one side: a node with an empty half
            below = subtree(depth + 1, lo, hi)
            return node_hash(EMPTY, below) if mid == lo else node_hash(below, EMPTY)
        return node_hash(subtree(depth + 1, lo, mid), subtree(depth + 1, mid, hi))

    return subtree(0, 0, len(rows))


# --------------------------------------------------------------------------
# Proofs


@wire.struct
@dataclass(frozen=True, slots=True)
class ProofTerminal:
    """Where one proven key's path ends: at ``depth``, its own leaf, ``EMPTY``, or another key's leaf.

    ``other_key`` and ``other_value_hash`` are both empty unless the key is
    absent and its position holds another key's leaf; the verifier then
    checks that the other key's path shares the first ``depth`` bits.
    """

    key: Annotated[bytes, wire.MaxLen(MAX_KEY_BYTES)]
    depth: Annotated[int, wire.Range(0, MAX_DEPTH)]
    other_key: Annotated[bytes, wire.MaxLen(MAX_KEY_BYTES)] = b""
    other_value_hash: Annotated[bytes, wire.MaxLen(32)] = b""


@wire.message(type_id=26)
@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Inclusion and exclusion proof of one or more keys (see the module docstring).

    Attributes:
        terminals: one per proven key, sorted by key path.
        empties: one bit per sibling in pre-order, set for ``EMPTY``.
        siblings: the non-empty sibling hashes, 32 bytes each, in pre-order.
    """

    terminals: Annotated[tuple[ProofTerminal, ...], wire.MaxLen(MAX_PROOF_KEYS)]
    empties: Annotated[bytes, wire.MaxLen(MAX_PROOF_KEYS * MAX_DEPTH // 8)]
    siblings: Annotated[bytes, wire.MaxLen(32 * MAX_PROOF_KEYS * MAX_DEPTH)]

    @property
    def depth(self) -> int:
        """The deepest terminal's depth."""
        return max((t.depth for t in self.terminals), default=0)


def prove(
    source: MerkleSource, key: bytes, *, root: bytes | None = None, path_of: PathOf | None = None
) -> MerkleProof:
    """A proof for ``key`` (present or absent) against ``root`` (by default the source's root).

    Raises:
        InternalError: the source lacks a node of that tree.
    """
    return prove_many(source, (key,), root=root, path_of=path_of)


def prove_many(
    source: MerkleSource,
    keys: Iterable[bytes],
    *,
    root: bytes | None = None,
    path_of: PathOf | None = None,
) -> MerkleProof:
    """One proof for several keys (present or absent): each shared node and sibling appears once.

    Raises:
        InternalError: the source lacks a node of that tree.
    """
    pof = path_of or key_path
    items = sorted({(pof(k), k) for k in keys})
    paths = [p for p, _ in items]
    get = source.merkle_node
    terminals: list[ProofTerminal] = []
    bits: list[int] = []
    blob: list[bytes] = []

    def sibling(h: bytes, kind: int) -> None:
        bits.append(kind == K_EMPTY)
        if kind != K_EMPTY:
            blob.append(h)

    def walk(h: bytes, kind: int, depth: int, lo: int, hi: int) -> None:
        if kind == K_NODE:
            rec = get(h)
            if rec is None:
                raise InternalError(f"Merkle node {h.hex()} is missing from the store")
            shift = 255 - depth
            mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
            kl, kr = rec[9], rec[10]
            left, right = rec[11:43], rec[43:75]
            if mid == lo:
                sibling(left, kl)
            if mid == hi:
                sibling(right, kr)
            if lo < mid:
                walk(left, kl, depth + 1, lo, mid)
            if mid < hi:
                walk(right, kr, depth + 1, mid, hi)
            return
        other_key = other_vh = b""
        if kind == K_LEAF:
            rec = get(h)
            if rec is None:
                raise InternalError(f"Merkle leaf {h.hex()} is missing from the store")
            other_key, other_vh = rec[73:], rec[41:73]
        for j in range(lo, hi):
            key = items[j][1]
            if key == other_key:
                terminals.append(ProofTerminal(key, depth))
            else:
                terminals.append(ProofTerminal(key, depth, other_key, other_vh))

    top = source.merkle_root() if root is None else root
    if items:
        walk(top, _kind_of(source, top), 0, 0, len(items))
    n = len(bits)
    packed = sum(1 << (n - 1 - i) for i, b in enumerate(bits) if b) << (-n % 8)
    return MerkleProof(tuple(terminals), packed.to_bytes((n + 7) // 8, "big"), b"".join(blob))


def _terminal_hash(term: ProofTerminal, path: int, value: bytes | None, pof: PathOf) -> bytes:
    # The hash the tree holds at the terminal's position, if the claim is true.
    if term.depth > MAX_DEPTH:
        raise Reject("proof_malformed", "terminal deeper than the key path")
    if value is not None:
        if term.other_key or term.other_value_hash:
            raise Reject("proof_root_mismatch", "the proof says the key is absent")
        return leaf_hash(term.key, value)
    if not term.other_key:
        if term.other_value_hash:
            raise Reject("proof_malformed", "a value hash without its key")
        return EMPTY
    if len(term.other_value_hash) != 32 or term.other_key == term.key:
        raise Reject("proof_malformed", "the other leaf must be another key with a 32-byte value hash")
    shift = MAX_DEPTH - term.depth
    if pof(term.other_key) >> shift != path >> shift:
        raise Reject("proof_malformed", "the other leaf is not on the key's path")
    return leaf_of(term.other_key, term.other_value_hash)


class _Siblings:
    """The proof's sibling stream, consumed in pre-order."""

    __slots__ = ("bits", "blob", "count", "taken", "used")

    def __init__(self, proof: MerkleProof) -> None:
        self.bits = int.from_bytes(proof.empties, "big")
        self.count = 8 * len(proof.empties)
        self.blob = proof.siblings
        if len(self.blob) % 32:
            raise Reject("proof_malformed", "siblings are not whole 32-byte hashes")
        self.taken = 0
        self.used = 0

    def next(self) -> bytes:
        if self.taken >= self.count:
            raise Reject("proof_malformed", "too few siblings")
        empty = (self.bits >> (self.count - 1 - self.taken)) & 1
        self.taken += 1
        if empty:
            return EMPTY
        sib = self.blob[self.used : self.used + 32]
        self.used += 32
        if len(sib) != 32 or sib == EMPTY:
            raise Reject("proof_malformed", "too few siblings, or an empty one not marked")
        return sib

    def finish(self) -> None:
        # Every sibling used, the bitmap as short as possible and zero-padded: one encoding per proof.
        padding = self.count - self.taken
        if padding >= 8 or self.bits & ((1 << padding) - 1) or self.used != len(self.blob):
            raise Reject("proof_malformed", "unused siblings or a non-canonical bitmap")


def verify_proof(
    root: bytes, key: bytes, value: bytes | None, proof: MerkleProof, *, path_of: PathOf | None = None
) -> None:
    """Check that ``key`` holds ``value`` (or, with None, is absent) under ``root``. No store needed.

    Raises:
        Reject: ``proof_key_mismatch`` (a proof for other keys),
            ``proof_malformed`` (bad lengths, depths or ordering),
            ``proof_root_mismatch`` (wrong value or root).
    """
    terms = proof.terminals
    if len(terms) != 1 or terms[0].key != key:
        raise Reject("proof_key_mismatch", "the proof is not for this key alone")
    term = terms[0]
    pof = path_of or key_path
    path = pof(key)
    acc = _terminal_hash(term, path, value, pof)
    sibs = _Siblings(proof)
    chain = [sibs.next() for _ in range(term.depth)]
    sibs.finish()
    node = _NODE_STATE.copy
    for depth in range(term.depth - 1, -1, -1):
        g = node()
        if (path >> (255 - depth)) & 1:
            g.update(chain[depth] + acc)
        else:
            g.update(acc + chain[depth])
        acc = g.digest()
    if acc != root:
        raise Reject("proof_root_mismatch", "the proof does not lead to the expected root")


def verify_proof_bytes(
    root: bytes, key: bytes, value: bytes | None, proof: bytes, *, path_of: PathOf | None = None
) -> MerkleProof:
    """:func:`verify_proof` on a proof as it travels (its wire bytes); returns the decoded proof.

    What a light client runs: no store, only a trusted root.

    Raises:
        Reject: ``proof_malformed`` for bytes that are not a proof, else as :func:`verify_proof`.
    """
    try:
        decoded = wire.decode_as(proof, MerkleProof)
    except CodecError as exc:
        raise Reject("proof_malformed", f"not a Merkle proof: {exc}") from None
    verify_proof(root, key, value, decoded, path_of=path_of)
    return decoded


def verify_many(
    root: bytes, values: Mapping[bytes, bytes | None], proof: MerkleProof, *, path_of: PathOf | None = None
) -> None:
    """Check that every key of ``values`` holds its value (None: absent) under ``root``.

    Raises:
        Reject: as :func:`verify_proof`.
    """
    pof = path_of or key_path
    terms = proof.terminals
    if len(terms) != len(values) or any(t.key not in values for t in terms):
        raise Reject("proof_key_mismatch", "the proof is not for exactly these keys")
    paths = [pof(t.key) for t in terms]
    if any(a >= b for a, b in itertools.pairwise(paths)):
        raise Reject("proof_malformed", "terminals are not sorted by key path")
    hashes = [_terminal_hash(t, p, values[t.key], pof) for t, p in zip(terms, paths, strict=True)]
    depths = [t.depth for t in terms]
    sibs = _Siblings(proof)

    def subtree(depth: int, lo: int, hi: int) -> bytes:
        if depths[lo] == depth:
            # Keys ending here share one position: one hash, claimed alike by all.
            if any(depths[j] != depth for j in range(lo + 1, hi)):
                raise Reject("proof_malformed", "inconsistent terminal depths")
            if any(hashes[j] != hashes[lo] for j in range(lo + 1, hi)):
                raise Reject("proof_root_mismatch", "the claimed values disagree on one position")
            return hashes[lo]
        if depth >= MAX_DEPTH or any(depths[j] <= depth for j in range(lo, hi)):
            raise Reject("proof_malformed", "inconsistent terminal depths")
        shift = 255 - depth
        mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
        left = sibs.next() if mid == lo else b""
        right = sibs.next() if mid == hi else b""
        if lo < mid:
            left = subtree(depth + 1, lo, mid)
        if mid < hi:
            right = subtree(depth + 1, mid, hi)
        return node_hash(left, right)

    if not terms:
        raise Reject("proof_key_mismatch", "a proof of no key")
    acc = subtree(0, 0, len(terms))
    sibs.finish()
    if acc != root:
        raise Reject("proof_root_mismatch", "the proof does not lead to the expected root")
