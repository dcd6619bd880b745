"""The simulator's process-wide decode memo: same answers as a fresh decode, errors never kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import CodecError
from depin_p2p.witness.radio import Beacon


@pytest.fixture
def memo() -> Iterator[None]:
    wire.memoize_decoding(2)
    try:
        yield
    finally:
        wire.memoize_decoding(None)


def _envelope(n: int) -> bytes:
    beacon = Beacon(b"\x01" * 32, 1, n, 0x8C1F_1D48_9D6D_FFF, 868_100_000, 1400, 300, 1000)
    return wire.encode(wire.seal(beacon, KeyPair.generate(), "net"))


def test_a_hit_equals_a_fresh_decode_and_the_size_cap_still_holds(memo: None) -> None:
    data = _envelope(1)
    first = wire.decode(data)
    assert wire.decode(data) is first
    assert wire._DECODE_MEMO is not None and wire._DECODE_MEMO.hits == 1
    wire.memoize_decoding(None)
    assert wire.decode(data) == first  # what a decode without the memo gives
    wire.memoize_decoding(2)
    wire.decode(data)
    with pytest.raises(CodecError, match="exceeds cap"):
        wire.decode(data, max_size=len(data) - 1)


def test_failures_are_not_kept_and_the_memo_is_bounded(memo: None) -> None:
    for _ in range(2):
        with pytest.raises(CodecError):
            wire.decode(b"\x93\x01\x02\x03")
    assert wire._DECODE_MEMO is not None and not wire._DECODE_MEMO.items
    for n in range(5):
        wire.decode(_envelope(n))
    assert len(wire._DECODE_MEMO.items) == 2


def test_off_by_default() -> None:
    assert wire._DECODE_MEMO is None
