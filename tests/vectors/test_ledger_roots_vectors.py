"""Pinned state roots: the state encoding and the tree cannot change unnoticed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.vectors import ledger_roots

PINNED = json.loads((Path(__file__).parent / "ledger_roots.json").read_text())


def _h(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def independent_root(entries: list[dict[str, object]]) -> bytes:
    """The root from the spec in ledger/merkle.py's docstring, with plain hashlib only."""
    buckets: dict[int, list[tuple[bytes, bytes]]] = {}
    for e in entries:
        key, value = bytes.fromhex(str(e["key"])), bytes.fromhex(str(e["value"]))
        bucket = int.from_bytes(_h(b"\x03" + key)[:2], "big")
        assert bucket == e["bucket"]
        value_hash = _h(b"\x04" + value)
        assert value_hash.hex() == e["value_hash"]
        leaf = _h(b"\x00" + len(key).to_bytes(4, "big") + key + value_hash)
        assert leaf.hex() == e["leaf"]
        buckets.setdefault(bucket, []).append((key, leaf))
    level = []
    for b in range(1 << 16):
        rows = sorted(buckets.get(b, []))
        level.append(_h(b"\x01" + len(rows).to_bytes(4, "big") + b"".join(leaf for _, leaf in rows)))
    while len(level) > 1:
        level = [_h(b"\x02" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def test_vectors_match_this_implementation() -> None:
    assert ledger_roots.compute() == PINNED


def test_roots_reproduce_from_the_spec_alone() -> None:
    for name in ("genesis", "epoch_1"):
        assert independent_root(PINNED[name]["entries"]).hex() == PINNED[name]["root"]
    assert independent_root([]).hex() == PINNED["empty_root"]
    assert PINNED["genesis"]["root"] != PINNED["epoch_1"]["root"]
