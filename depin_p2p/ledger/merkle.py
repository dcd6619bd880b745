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

Storage: records stored by hash; ``version`` (u64) is the epoch that wrote one.
A leaf is stored under its hash as ``0x00 ‖ version ‖ path ‖ value_hash ‖ K``.
The nodes are stored in pages of four levels: a node ``N`` at a depth that is a
multiple of 4 heads a page, stored under ``N``'s hash, that holds the subtree
below it down to 4 levels, in slots numbered as a heap (slot 1 is ``N``; the
children of slot ``s`` are ``2s``, bit 0, and ``2s + 1``, bit 1), slots 2 .. 31
stored: ``u8 h ‖ version ‖ hash(2) ‖ … ‖ hash(m) ‖ kind(2) ‖ … ‖ kind(m) ‖
paths``, where ``m = 2^(h+1) - 1`` for the least height ``h`` (1 to 4) whose
deeper slots are all empty, a slot's kind is 0 (empty: its hash is ``EMPTY``),
1 (a leaf: its hash names the leaf's record) or 2 (a node), and ``paths``
holds the path of each leaf slot (32 bytes each, in slot order). A node in
slots 16 .. 31 heads the next page. :func:`compute_update` for k changed keys
reads only the pages on their paths, O(k log n / 4) records (no leaf: the
page's paths tell whether a slot's leaf is a changed key's own), and reports
the new records and those that left the tree, for the store to prune.
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
) -> tuple[list[int], list[bytes], list[bytes], list[bytes], int]:
    # The changed keys sorted by path: paths, new leaf hashes (b"": deleted), new leaf
    # records, and the hashes spent. The spec's hash functions are inlined (hot loop).
    keypath, leaf, hash_value, u32 = _KEYPATH_STATE.copy, _LEAF_STATE.copy, _VALUE_STATE.copy, _U32
    head = b"\x00" + version.to_bytes(8, "big")
    items: list[tuple[int, bytes, bytes, bytes]] = []
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
            append((path, b"", b"", pb))
            continue
        h = hash_value()
        h.update(value)
        vh = h.digest()
        nk = len(key)
        g = leaf()
        g.update(b"".join((u32[nk] if nk < 256 else nk.to_bytes(4, "big"), key, vh)))
        append((path, g.digest(), b"".join((head, pb, vh, key)), pb))
    items.sort(key=itemgetter(0))
    paths = [it[0] for it in items]
    if len(set(paths)) != len(paths):
        raise InternalError("two state keys share a Merkle path")
    leaves = [it[1] for it in items]
    records = [it[2] for it in items]
    path_bytes = [it[3] for it in items]
    # Path hashes (unless given), then a value hash and a leaf hash per key set.
    hashes = (len(items) if path_of is None else 0) + 2 * sum(1 for lh in leaves if lh)

    return paths, leaves, records, path_bytes, hashes


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
    paths, leaves, records, path_bytes, hashes = _prepare(updates, version, path_of)
    rewrite = _Rewrite(source, (paths, leaves, records, path_bytes), version)
    record = None if root == EMPTY else source.merkle_node(root)
    if record is not None and record[0]:
        new_root, _ = rewrite.page(root, 0, 0, len(paths), record)
    elif record is not None:
        leaf = (root, record[9:41])
        new_root, _ = rewrite.update_leaf(leaf, 0, 0, len(paths), buf=_NO_PAGE, c=_ROOT_SLOT)
    elif root != EMPTY:
        raise InternalError(f"Merkle node {root.hex()} is missing from the store")
    else:
        keep = [j for j, lh in enumerate(leaves) if lh]
        cols = ([paths[j] for j in keep], [leaves[j] for j in keep], [records[j] for j in keep])
        new_root, _ = rewrite.build(0, cols, 0, len(keep), buf=_NO_PAGE, c=_ROOT_SLOT)
    removed, added = rewrite.removed, rewrite.added
    # A record both removed and added (an unchanged subtree rebuilt) is neither stale nor new.
    both = added.keys() & removed
    if both:
        stale = tuple(h for h in removed if h not in both)
        nodes = tuple((h, rec) for h, rec in added.items() if h not in both)
    else:
        stale, nodes = tuple(removed), tuple(added.items())
    return MerkleUpdate(new_root, nodes, stale, hashes + rewrite.node_count)


# Pages: how the tree's nodes are stored (see "Storage" in the module docstring). A page
# holds the nodes of the ``PAGE_LEVELS`` levels below a node at a depth that is a multiple
# of ``PAGE_LEVELS``, in heap order: slot 1 is that node (its hash names the page), the
# children of slot ``s`` are slots ``2s`` and ``2s + 1``; slots 2 .. 31 are stored.
#
# A page being read or rewritten is a bytearray: byte 0 is set once its kinds no longer match
# its leaf paths (``_Rewrite.snapshot``), slot ``c`` has its hash at ``32c - 55`` (the two
# children of a node are adjacent: one slice to hash) and its kind at ``967 + c``, and the
# paths of its leaves follow from byte 999 (in slot order).
PAGE_LEVELS = 4
_SLOTS = (1 << (PAGE_LEVELS + 1)) - 2
_BOTTOM = 1 << PAGE_LEVELS  # slots >= 16: the page's last level; a node there heads another page
_ROOT_SLOT = 2 * _BOTTOM  # the tree's top: like a last-level slot, a node there heads a page
_KO = 9 + 32 * _SLOTS  # where a full page's kinds begin
_PAGE_BYTES = _KO + _SLOTS  # where its leaf paths begin
_SLOTS_OF_HEIGHT = (0, 2, 6, 14, 30)
_TEMPLATE = bytes(9) + EMPTY * _SLOTS + bytes(_SLOTS)
_EMPTIES = {n: (EMPTY * n, bytes(n)) for n in (2, 4, 8, 16)}
_NO_PAGE = bytearray()
_Z16 = bytes(16)


def _expand(record: bytes) -> bytearray:
    # A stored page as a page buffer (the levels a shorter page leaves out are empty).
    height = record[0]
    if height == PAGE_LEVELS:
        buf = bytearray(record)
        buf[0] = 0
        return buf
    if not 0 < height < PAGE_LEVELS or len(record) < 9 + 33 * _SLOTS_OF_HEIGHT[height]:
        raise InternalError(f"a Merkle page of height {height} and {len(record)} bytes")
    n = _SLOTS_OF_HEIGHT[height]
    split = 9 + 32 * n
    buf = bytearray(_TEMPLATE)
    buf[9:split] = record[9:split]
    buf[_KO : _KO + n] = record[split : split + n]
    buf += record[split + n :]
    return buf


def _clear(buf: bytearray, c: int) -> None:
    # Empty every slot below slot ``c``: its subtree became one leaf or nothing.
    lo, n = 2 * c, 2
    while lo < _ROOT_SLOT:
        hashes, kinds = _EMPTIES[n]
        buf[32 * lo - 55 : 32 * (lo + n) - 55] = hashes
        buf[967 + lo : 967 + lo + n] = kinds
        lo, n = 2 * lo, 2 * n


def _slot(buf: bytearray, c: int) -> tuple[bytes, int]:
    o = 32 * c - 55
    return bytes(buf[o : o + 32]), buf[967 + c]


def record_children(record: bytes) -> tuple[bytes, ...]:
    """The hashes of the stored records that ``record`` refers to: a page's leaves and next pages."""
    if record[0] == 0:
        return ()
    buf = _expand(record)
    return tuple(
        _slot(buf, c)[0]
        for c in range(2, _ROOT_SLOT)
        if buf[967 + c] == K_LEAF or (c >= _BOTTOM and buf[967 + c] == K_NODE)
    )


class _Pages:
    """The page-record half of :class:`_Rewrite`: reading records, page buffers' leaf paths, page records."""

    __slots__ = ()
    get: Callable[[bytes], bytes | None]
    heads: tuple[bytes, ...]
    known: dict[bytes, bytes]
    removed: list[bytes]

    def snapshot(self, buf: bytearray) -> None:
        # Before the first change of a kind in ``buf``: note its leaves' paths, which the
        # record is then rebuilt from.
        if buf[0]:
            return
        known, at = self.known, _PAGE_BYTES
        for c in range(2, _ROOT_SLOT):
            if buf[967 + c] == K_LEAF:
                known[bytes(buf[32 * c - 55 : 32 * c - 23])] = bytes(buf[at : at + 32])
                at += 32
        buf[0] = 1

    def leaf_path(self, buf: bytearray, c: int) -> bytes:
        # The path of the leaf in slot ``c``.
        if buf[0]:
            return self.known[bytes(buf[32 * c - 55 : 32 * c - 23])]
        at = _PAGE_BYTES + 32 * buf.count(K_LEAF, _KO, 967 + c)
        return bytes(buf[at : at + 32])

    def page_record(self, buf: bytearray) -> bytes:
        # The stored form of a page: ``u8 height ‖ u64 version``, the hashes and kinds of slots
        # 2 .. 2^(height + 1) - 1 (the least height whose deeper slots are empty), leaf paths.
        if buf[983:999] != _Z16:
            height = 4
        else:
            height = 3 if buf[975:983] != _Z16[:8] else 2 if buf[971:975] != _Z16[:4] else 1
        tail: bytes | bytearray
        if buf[0]:
            known = self.known
            tail = b"".join(
                [known[bytes(buf[32 * c - 55 : 32 * c - 23])] for c in range(2, 32) if buf[967 + c] == K_LEAF]
            )
        else:
            tail = buf[_PAGE_BYTES:]
        if height == PAGE_LEVELS:
            return b"".join((self.heads[height], buf[9:_PAGE_BYTES], tail))
        n = _SLOTS_OF_HEIGHT[height]
        return b"".join((self.heads[height], buf[9 : 9 + 32 * n], buf[_KO : _KO + n], tail))

    def read(self, h: bytes) -> bytes:
        rec = self.get(h)
        if rec is None:
            raise InternalError(f"Merkle record {h.hex()} is missing from the store")
        self.removed.append(h)
        return rec


class _Rewrite(_Pages):
    """One :func:`compute_update`: the changed keys (sorted by path) and what the rewrite made."""

    __slots__ = (
        "added",
        "get",
        "heads",
        "known",
        "leaves",
        "node_count",
        "path_bytes",
        "paths",
        "records",
        "removed",
    )

    def __init__(
        self,
        source: MerkleSource,
        cols: tuple[list[int], list[bytes], list[bytes], list[bytes]],
        version: int,
    ) -> None:
        # A store may offer a faster reader of the same records (``LmdbView.merkle_record``).
        self.get: Callable[[bytes], bytes | None] = getattr(source, "merkle_record", source.merkle_node)
        self.paths, self.leaves, self.records, self.path_bytes = cols
        # A page record's head for each height: ``u8 height ‖ u64 version``.
        self.heads = tuple(bytes((h,)) + version.to_bytes(8, "big") for h in range(PAGE_LEVELS + 1))
        self.added: dict[bytes, bytes] = {}
        self.removed: list[bytes] = []
        # The path of every leaf that may change page or slot: the new ones, and those of
        # every page whose shape changes (see ``snapshot``).
        self.known = {leaf: path for leaf, path in zip(self.leaves, self.path_bytes, strict=True) if leaf}
        self.node_count = 0

    def page(self, h: bytes, depth: int, lo: int, hi: int, record: bytes | None = None) -> tuple[bytes, int]:
        # The subtree headed by the node ``h`` at a page boundary (its record, unless read
        # here), with the changes lo..hi applied.
        if record is None:
            record = self.read(h)
        else:
            self.removed.append(h)
        buf = _expand(record)
        if hi - lo == 1:
            return self.one(buf, 1, depth, lo)
        return self.node(buf, 1, depth, lo, hi)

    def node(self, buf: bytearray, s: int, depth: int, lo: int, hi: int) -> tuple[bytes, int]:
        # The node at slot ``s < 16`` of ``buf`` with the changes lo..hi applied: its children,
        # then the canonical subtree of the two: nothing, a leaf moved up, or a node.
        paths = self.paths
        shift = 255 - depth
        mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
        c = 2 * s
        if lo < mid:
            self.child(buf, c, depth + 1, lo, mid)
        if mid < hi:
            self.child(buf, c + 1, depth + 1, mid, hi)
        kl, kr = buf[967 + c], buf[968 + c]
        o = 32 * c - 55
        if kl == K_EMPTY:
            if kr != K_NODE:
                return bytes(buf[o + 32 : o + 64]), kr
        elif kr == K_EMPTY and kl == K_LEAF:
            return bytes(buf[o : o + 32]), kl
        return self.seal(buf, s), K_NODE

    def seal(self, buf: bytearray, s: int) -> bytes:
        # The hash of the node at slot ``s`` from its two children's slots; a page's head
        # (``s == 1``) also stores the page.
        o = 64 * s - 55
        g = _NODE_STATE.copy()
        g.update(buf[o : o + 64])
        d = g.digest()
        self.node_count += 1
        if s == 1:
            self.added[d] = self.page_record(buf)
        return d

    def child(self, buf: bytearray, c: int, depth: int, lo: int, hi: int) -> None:
        # Slot ``c`` of ``buf`` with the changes lo..hi applied, written back.
        o = 32 * c - 55
        h, kind = bytes(buf[o : o + 32]), buf[967 + c]
        if kind == K_NODE:
            if c >= _BOTTOM:
                h, new_kind = self.page(h, depth, lo, hi)
            elif hi - lo == 1:
                h, new_kind = self.one(buf, c, depth, lo)
            else:
                h, new_kind = self.node(buf, c, depth, lo, hi)
        elif kind == K_LEAF:
            old_path = self.leaf_path(buf, c)
            leaf = self.leaves[lo]
            if hi - lo == 1 and leaf and old_path == self.path_bytes[lo]:
                # The key's own leaf with a new value: the same shape and leaf paths.
                self.removed.append(h)
                self.added[leaf] = self.records[lo]
                buf[o : o + 32] = leaf
                return
            h, new_kind = self.update_leaf((h, old_path), depth, lo, hi, buf=buf, c=c)
        else:
            leaves, paths, records = self.leaves, self.paths, self.records
            keep = [j for j in range(lo, hi) if leaves[j]]
            cols = ([paths[j] for j in keep], [leaves[j] for j in keep], [records[j] for j in keep])
            h, new_kind = self.build(depth, cols, 0, len(keep), buf=buf, c=c)
        if new_kind != kind or new_kind == K_LEAF:  # a new shape, or maybe another key's leaf
            self.snapshot(buf)
            if kind == K_NODE and c < _BOTTOM:
                _clear(buf, c)
            buf[967 + c] = new_kind
        buf[o : o + 32] = h

    def build(
        self, depth: int, cols: _Leaves, lo: int, hi: int, *, buf: bytearray, c: int
    ) -> tuple[bytes, int]:
        # The subtree at slot ``c`` (depth ``depth``, empty until now) holding exactly the
        # leaves lo..hi of ``cols`` (a record for each new one, b"" for one already stored);
        # its nodes go into ``buf`` below ``c``, or into a new page if ``c`` heads one.
        bp, bl, br = cols
        if hi - lo == 1:
            if br[lo]:
                self.added[bl[lo]] = br[lo]
            return bl[lo], K_LEAF
        if hi == lo:
            return EMPTY, K_EMPTY
        if depth >= MAX_DEPTH:
            raise InternalError("two state keys share a Merkle path")
        if c >= _BOTTOM:
            buf, c = bytearray(_TEMPLATE), 1
            buf[0] = 1
        else:
            self.snapshot(buf)
        shift = 255 - depth
        mid = bisect_left(bp, ((bp[lo] >> shift) | 1) << shift, lo, hi)
        e = 2 * c
        for slot, a, b in ((e, lo, mid), (e + 1, mid, hi)):
            if a < b:
                h, kind = self.build(depth + 1, cols, a, b, buf=buf, c=slot)
                o = 32 * slot - 55
                buf[o : o + 32] = h
                buf[967 + slot] = kind
        return self.seal(buf, c), K_NODE  # two leaves or more: a node, whatever one side holds

    def one(self, buf: bytearray, s: int, depth: int, j: int) -> tuple[bytes, int]:
        # ``node`` for one change, the common case below the top levels: down its path through
        # slots and pages, then back up writing each slot, in loops without recursion.
        pages, depth = self.descend(buf, s, depth, self.paths[j])
        buf, c, _ = pages[-1]
        kind = buf[967 + c]
        leaf = self.leaves[j]
        if kind == K_LEAF:
            h = bytes(buf[32 * c - 55 : 32 * c - 23])
            if buf[0]:
                old_path = self.known[h]
            else:
                at = _PAGE_BYTES + 32 * buf.count(K_LEAF, _KO, 967 + c)
                old_path = bytes(buf[at : at + 32])
            if old_path == self.path_bytes[j]:  # the key's own leaf: replaced or deleted
                self.removed.append(h)
                sub, ks = (leaf, K_LEAF) if leaf else (EMPTY, K_EMPTY)
                if leaf:
                    self.added[leaf] = self.records[j]
            else:
                sub, ks = self.update_leaf((h, old_path), depth, j, j + 1, buf=buf, c=c)
        elif leaf:
            sub, ks = leaf, K_LEAF
            self.added[leaf] = self.records[j]
        else:
            sub, ks = EMPTY, K_EMPTY
        if ks == kind:
            return self.climb_hashes(pages, sub), K_NODE
        return self.climb(pages, sub, ks)

    def descend(
        self, buf: bytearray, s: int, depth: int, path: int
    ) -> tuple[list[tuple[bytearray, int, int]], int]:
        # From the node at slot ``s`` of ``buf`` down ``path`` to the first slot that is not a
        # node, reading the pages on the way. Per page: its buffer, the slot the climb back
        # starts at (the last one on the path) and the slot it ends at; and the depth reached.
        get, removed = self.get, self.removed
        pages: list[tuple[bytearray, int, int]] = []
        top = s
        while True:
            c = 2 * s + ((path >> (255 - depth)) & 1)
            depth += 1
            if buf[967 + c] != K_NODE:
                break
            if c < _BOTTOM:
                s = c
                continue
            pages.append((buf, c, top))
            h = bytes(buf[32 * c - 55 : 32 * c - 23])
            rec = get(h)
            if rec is None:
                raise InternalError(f"Merkle record {h.hex()} is missing from the store")
            removed.append(h)
            buf, s, top = _expand(rec), 1, 1
        pages.append((buf, c, top))
        return pages, depth

    def climb_hashes(self, pages: list[tuple[bytearray, int, int]], sub: bytes) -> bytes:
        # Back up from a slot that kept its kind (a changed value): so does every slot above
        # it, and only hashes change. A clean full page's record is its buffer.
        added, node, head = self.added, _NODE_STATE.copy, self.heads[PAGE_LEVELS]
        made = 0
        for buf, start, top in reversed(pages):
            c = start
            made += c.bit_length() - top.bit_length()
            while c > top:
                o = 32 * c - 55
                buf[o : o + 32] = sub
                c >>= 1
                o = 64 * c - 55
                g = node()
                g.update(buf[o : o + 64])
                sub = g.digest()
            if top == 1:
                if buf[0] or buf[983:999] == _Z16:
                    added[sub] = self.page_record(buf)
                else:  # the buffer is done with: its head becomes the record's
                    buf[:9] = head
                    added[sub] = bytes(buf)
        self.node_count += made
        return sub

    def climb(self, pages: list[tuple[bytearray, int, int]], sub: bytes, ks: int) -> tuple[bytes, int]:
        # Back up from a slot whose kind changed: each slot written with its new value, then
        # its parent's, a leaf moved up where a node is left with one leaf.
        node = _NODE_STATE.copy
        for buf, start, top in reversed(pages):
            c = start
            while c > top:
                o = 32 * c - 55
                old = buf[967 + c]
                buf[o : o + 32] = sub
                if ks != old:
                    self.snapshot(buf)
                    if old == K_NODE and c < _BOTTOM:
                        _clear(buf, c)
                    buf[967 + c] = ks
                c >>= 1
                o = 64 * c - 55
                kl, kr = buf[967 + 2 * c], buf[968 + 2 * c]
                if kl == K_EMPTY:
                    if kr != K_NODE:
                        sub, ks = bytes(buf[o + 32 : o + 64]), kr
                        continue
                elif kr == K_EMPTY and kl == K_LEAF:
                    sub, ks = bytes(buf[o : o + 32]), kl
                    continue
                g = node()
                g.update(buf[o : o + 64])
                sub, ks = g.digest(), K_NODE
                self.node_count += 1
            if top == 1 and ks == K_NODE:
                self.added[sub] = self.page_record(buf)
        return sub, ks

    def update_leaf(
        self, leaf: tuple[bytes, bytes], depth: int, lo: int, hi: int, *, buf: bytearray, c: int
    ) -> tuple[bytes, int]:
        # Slot ``c`` held ``leaf`` (its hash and path): the changes lo..hi, plus that leaf
        # unless one of them replaces it.
        h, old_path = leaf
        paths, leaves, records = self.paths, self.leaves, self.records
        old = int.from_bytes(old_path, "big")
        i = bisect_left(paths, old, lo, hi)
        if i < hi and paths[i] == old:  # its own key changed: replaced or deleted
            self.removed.append(h)
            if hi - lo == 1:
                if leaves[lo]:
                    self.added[leaves[lo]] = records[lo]
                    return leaves[lo], K_LEAF
                return EMPTY, K_EMPTY
            keep = [j for j in range(lo, hi) if leaves[j]]
            cols = ([paths[j] for j in keep], [leaves[j] for j in keep], [records[j] for j in keep])
            return self.build(depth, cols, 0, len(keep), buf=buf, c=c)
        self.known[h] = old_path  # it may move down, into another slot or page
        bp: list[int] = []
        bl: list[bytes] = []
        br: list[bytes] = []
        for j in range(lo, hi):
            if j == i:
                bp.append(old)
                bl.append(h)
                br.append(b"")
            if leaves[j]:
                bp.append(paths[j])
                bl.append(leaves[j])
                br.append(records[j])
        if i == hi:
            bp.append(old)
            bl.append(h)
            br.append(b"")
        return self.build(depth, (bp, bl, br), 0, len(bp), buf=buf, c=c)


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

    def walk(slot: tuple[bytes, int], depth: int, lo: int, hi: int, *, buf: bytearray, c: int) -> None:
        # Slot ``c`` of page ``buf`` holds ``slot`` (hash, kind); the keys lo..hi go through it.
        h, kind = slot
        if kind == K_NODE:
            if c >= _BOTTOM:  # a node at a page boundary: its page
                rec = get(h)
                if rec is None:
                    raise InternalError(f"Merkle node {h.hex()} is missing from the store")
                buf, c = _expand(rec), 1
            shift = 255 - depth
            mid = bisect_left(paths, ((paths[lo] >> shift) | 1) << shift, lo, hi)
            e = 2 * c
            left, kl = _slot(buf, e)
            right, kr = _slot(buf, e + 1)
            if mid == lo:
                sibling(left, kl)
            if mid == hi:
                sibling(right, kr)
            if lo < mid:
                walk((left, kl), depth + 1, lo, mid, buf=buf, c=e)
            if mid < hi:
                walk((right, kr), depth + 1, mid, hi, buf=buf, c=e + 1)
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
        walk((top, _kind_of(source, top)), 0, 0, len(items), buf=_NO_PAGE, c=_ROOT_SLOT)
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
