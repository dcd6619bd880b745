"""The node's verified-signature cache: one Ed25519 check per distinct signature, bounded."""

from __future__ import annotations

import sys
import threading
from collections import Counter

import pytest

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import InternalError, Reject
from depin_p2p.witness.radio import Beacon

KEY = KeyPair.from_seed(b"\x07" * 32)
NET = "depin-test"


def _counting(calls: Counter[bytes]) -> wire.Verifier:
    def check(public_key: bytes, data: bytes, signature: bytes) -> None:
        calls[data] += 1
        wire.verify_signature(public_key, data, signature)

    return check


def _signed(data: bytes) -> tuple[bytes, bytes, bytes]:
    return KEY.public_key, data, KEY.sign(data)


def test_a_good_signature_is_checked_once_and_a_tally_counts_its_checker_share() -> None:
    calls: Counter[bytes] = Counter()
    cache = wire.SignatureCache(_counting(calls))
    gossip, pool = wire.SignatureTally(), wire.SignatureTally()
    cache.verifier(gossip)(*_signed(b"one"))
    cache.verifier(pool)(*_signed(b"one"))
    cache.verify(*_signed(b"one"))
    assert calls[b"one"] == 1
    assert (gossip.verified, gossip.cached, pool.verified, pool.cached) == (1, 0, 0, 1)
    assert (cache.verified, cache.cached) == (1, 2)


def test_a_failure_is_not_remembered_and_a_moved_signature_fails() -> None:
    cache = wire.SignatureCache()
    pk, _, sig = _signed(b"one")
    cache.verify(pk, b"one", sig)
    for _ in range(2):
        with pytest.raises(Reject) as exc:
            cache.verify(pk, b"two", sig)  # a good signature on other bytes
        assert exc.value.code == "bad_signature"
    assert cache.verified == 3 and len(cache) == 1
    with pytest.raises(Reject):
        cache.verify(bytes(32), b"one", sig)  # the same bytes and signature, another key


def test_the_bound_holds_and_the_oldest_entry_goes_first() -> None:
    calls: Counter[bytes] = Counter()
    cache = wire.SignatureCache(_counting(calls), capacity=3)
    for data in (b"a", b"b", b"c"):
        cache.verify(*_signed(data))
    cache.verify(*_signed(b"a"))  # a hit does not make "a" younger
    cache.verify(*_signed(b"d"))  # full: "a", the oldest, goes
    assert len(cache) == 3
    assert cache.key(*_signed(b"a")) not in cache
    for data in (b"b", b"c", b"d"):
        cache.verify(*_signed(data))
    assert [calls[d] for d in (b"a", b"b", b"c", b"d")] == [1, 1, 1, 1]
    cache.verify(*_signed(b"a"))  # forgotten, so checked again (and "b" goes)
    assert calls[b"a"] == 2 and cache.key(*_signed(b"b")) not in cache
    for i in range(100):
        cache.verify(*_signed(bytes([i])))
    assert len(cache) == 3


def test_our_own_envelope_is_entered_without_a_check() -> None:
    calls: Counter[bytes] = Counter()
    cache = wire.SignatureCache(_counting(calls))
    beacon = Beacon(KEY.public_key, 3, 0, 0x8C2A1072B59FFFF, 868_100_000, 1_400, 300, 1_000)
    env = wire.seal(beacon, KEY, NET)
    cache.mark_envelope(env)
    wire.open_envelope(env, network_id=NET, domain=wire.Domain.BEACON, verify=cache.verify)
    assert (cache.verified, cache.cached, cache.marked) == (0, 1, 1)
    assert not calls


def test_a_cache_holds_at_least_one_entry() -> None:
    with pytest.raises(InternalError):
        wire.SignatureCache(capacity=0)


def test_a_worker_thread_and_the_event_loop_entering_signatures_at_once_break_nothing() -> None:
    # The value check runs in a worker thread and enters the signatures it checked while the event
    # loop enters gossip's: a 32-node devnet lost a node to `del seen[next(iter(seen))]` raising
    # KeyError (both threads evicting the same oldest entry). Switching threads every microsecond
    # makes that interleaving near certain here.
    cache = wire.SignatureCache(capacity=4, keep_commits=2)
    errors: list[BaseException] = []

    def enter(tag: bytes) -> None:
        try:
            for i in range(20_000):
                cache.mark(tag, b"%d" % i, b"s")
                if i % 500 == 0:
                    cache.on_commit()
        except BaseException as exc:  # noqa: BLE001 -- the test reports whatever broke
            errors.append(exc)

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=enter, args=(bytes([t]) * 32,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        sys.setswitchinterval(before)
    assert errors == []
    assert len(cache) <= 4 + 4  # each thread trims after its last entry; a race may spoil one trim
