"""The bounded-degree decisions and the peer-exchange book, as pure functions."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.errors import Reject
from depin_p2p.gossip.degree import (
    MAX_PX_PEERS,
    AddressBook,
    DegreePolicy,
    PeerExchangeRequest,
    PeerExchangeResponse,
    PeerRecord,
    PeerSituation,
    Source,
    addresses_of,
    compute_peer_plan,
    decode_px_request,
    decode_px_response,
    is_address_of,
)

ME = "me"
SEED = b"seed"


def addr(peer: str) -> str:
    return f"memory/{peer}"


def book_of(peers: list[str], policy: DegreePolicy | None = None) -> AddressBook:
    book = AddressBook(ME, policy)
    for p in peers:
        book.on_announced(p, [addr(p)], 0)
    return book


def peers(n: int, prefix: str = "p") -> list[str]:
    return [f"{prefix}{i:02d}" for i in range(n)]


# ------------------------------------------------------------------ addresses


def test_an_address_names_its_peer_as_last_component_and_a_routable_host() -> None:
    pid = "12D3KooWabc"
    assert is_address_of(f"/ip4/10.0.0.1/tcp/4001/p2p/{pid}", pid)
    assert is_address_of(f"memory/{pid}", pid)
    assert not is_address_of(f"/ip4/10.0.0.1/tcp/4001/p2p/{pid}x", pid)
    assert not is_address_of(f"/ip4/10.0.0.1/tcp/4001/p2p/other/{pid}x", pid)
    assert not is_address_of(f"/ip4/0.0.0.0/tcp/4001/p2p/{pid}", pid)
    assert not is_address_of(f"/ip6/::/tcp/4001/p2p/{pid}", pid)
    assert not is_address_of(pid, pid)
    assert addresses_of("a", ["memory/a", "memory/a", "memory/b", *[f"x{i}/a" for i in range(9)]]) == (
        "memory/a",
        "x0/a",
        "x1/a",
        "x2/a",
    )


# ------------------------------------------------------------------ wire


def test_px_messages_round_trip_and_only_undecodable_bytes_are_an_offence() -> None:
    req = PeerExchangeRequest((addr(ME),), ("p1",), 16)
    assert decode_px_request(wire.encode(req)) == req
    resp = PeerExchangeResponse((addr("p0"),), (PeerRecord("p1", (addr("p1"),)),))
    assert decode_px_response(wire.encode(resp)) == resp
    with pytest.raises(Reject) as exc:
        decode_px_response(b"\x93\x01\x42garbage")
    assert exc.value.code == "malformed"
    with pytest.raises(Reject):
        decode_px_request(wire.encode(resp))  # the wrong type is malformed too
    # A response with nonsense addresses decodes: it is a hint, not an offence; the book ignores it.
    bad = PeerExchangeResponse(("/ip4/0.0.0.0/tcp/1/p2p/x",), (PeerRecord("p1", ("memory/p2",)),))
    book = AddressBook(ME)
    for record in decode_px_response(wire.encode(bad)).peers:
        book.on_hint(record, 0)
    assert len(book) == 0


def test_px_counts_and_sizes_are_bounded_on_decode() -> None:
    too_many = [
        wire.WIRE_VERSION,
        wire.info_of(PeerExchangeResponse).type_id,
        [],
        [["p", []]] * (MAX_PX_PEERS + 1),
    ]
    with pytest.raises(Reject):
        decode_px_response(msgpack.packb(too_many, use_bin_type=True))
    huge = PeerExchangeRequest((), (), 0)
    data = wire.encode(huge) + b"\x00" * 5000
    with pytest.raises(Reject):
        decode_px_request(data)


# ------------------------------------------------------------------ book


def test_hints_never_override_what_a_peer_said_itself_nor_bootstrap_entries() -> None:
    book = AddressBook(ME)
    boot = book.add_bootstrap("/ip4/10.0.0.1/tcp/1/p2p/seed")
    assert boot == "seed"
    book.on_hint(PeerRecord("seed", ("/ip4/6.6.6.6/tcp/1/p2p/seed",)), 0)
    entry = book.get("seed")
    assert entry is not None and entry.addrs == ("/ip4/10.0.0.1/tcp/1/p2p/seed",)
    book.on_announced("a", [addr("a")], 0)
    book.on_hint(PeerRecord("a", ("evil/a",)), 0)
    a = book.get("a")
    assert a is not None and a.addrs == (addr("a"),) and a.source is Source.SELF
    # The peer's own word replaces a hint.
    book.on_hint(PeerRecord("b", ("evil/b",)), 0)
    book.on_announced("b", [addr("b")], 5)
    b = book.get("b")
    assert b is not None and b.addrs == (addr("b"),) and b.source is Source.SELF
    # We never note ourselves.
    book.on_hint(PeerRecord(ME, (addr(ME),)), 0)
    assert ME not in book


def test_a_full_book_evicts_hints_never_verified_entries() -> None:
    policy = DegreePolicy(book_capacity=4)
    book = AddressBook(ME, policy)
    book.add_bootstrap("memory/seed")
    for p in ("a", "b"):
        book.on_announced(p, [addr(p)], 0)
    book.on_hint(PeerRecord("h1", (addr("h1"),)), 0)
    book.on_hint(PeerRecord("h2", (addr("h2"),)), 0)  # replaces h1, the only hint
    assert {e.peer for e in book.entries()} == {"seed", "a", "b", "h2"}
    book.on_announced("c", [addr("c")], 0)  # a verified entry evicts the hint
    assert {e.peer for e in book.entries()} == {"seed", "a", "b", "c"}
    book.on_hint(PeerRecord("h3", (addr("h3"),)), 0)  # nothing a hint may evict
    book.on_announced("d", [addr("d")], 0)  # nor may a self-announcement evict another
    assert {e.peer for e in book.entries()} == {"seed", "a", "b", "c"}


def test_dial_failures_back_off_and_persistent_hints_are_forgotten() -> None:
    policy = DegreePolicy(
        backoff_min_ms=1_000, backoff_max_ms=8_000, bootstrap_backoff_max_ms=2_000, max_failures=3
    )
    book = AddressBook(ME, policy)
    book.add_bootstrap("memory/seed")
    book.on_announced("a", [addr("a")], 0)
    book.on_hint(PeerRecord("h", (addr("h"),)), 0)
    delays = []
    for _ in range(5):
        book.on_dial_failed("a", 100)
        e = book.get("a")
        assert e is not None
        delays.append(e.next_dial_ms - 100)
    assert delays == [1_000, 2_000, 4_000, 8_000, 8_000]
    for _ in range(5):
        book.on_dial_failed("seed", 0)
    seed = book.get("seed")
    assert seed is not None and seed.next_dial_ms == 2_000  # seeds are retried often
    for _ in range(3):
        book.on_dial_failed("h", 0)
    assert "h" not in book and "a" in book and "seed" in book
    book.on_connected("a", 50)
    a = book.get("a")
    assert a is not None and (a.failures, a.next_dial_ms) == (0, 0)
    book.on_disconnected("a", 60)
    assert a.quiet_until_ms == 60 + policy.disconnect_backoff_ms and a.next_dial_ms == 0


def test_a_peer_that_went_away_is_left_alone_unless_required_or_we_are_alone() -> None:
    policy = DegreePolicy(target=4, disconnect_backoff_ms=20_000)
    book = book_of(peers(3), policy)
    for p in peers(3):
        book.on_connected(p, 0)
        book.on_disconnected(p, 1_000)
    assert {p for p, _ in compute_peer_plan(book, situation({}, now=2_000), SEED).dial} == set(peers(3))
    book.on_announced("x", [addr("x")], 0)
    plan = compute_peer_plan(book, situation({"x": 0}, now=2_000, required=frozenset({"p02"})), SEED)
    assert {p for p, _ in plan.dial} == {"p02"}
    later = compute_peer_plan(book, situation({"x": 0}, now=21_000), SEED)
    assert {p for p, _ in later.dial} == set(peers(3))


def test_handed_out_records_are_verified_wanted_first_connected_next_never_the_requester() -> None:
    book = book_of(["a", "b", "c", "d"])
    book.on_hint(PeerRecord("h", (addr("h"),)), 0)
    recs = book.records_for("a", limit=3, want=["d", "h"], connected=["c"], seed=SEED)
    assert [r.peer_id for r in recs] == ["d", "c", "b"]
    assert all(r.addrs == (addr(r.peer_id),) for r in recs)
    everything = book.records_for("x", limit=100, want=[], connected=[], seed=SEED)
    assert {r.peer_id for r in everything} == {"a", "b", "c", "d"}


# ------------------------------------------------------------------ plan


def situation(connected: dict[str, int], now: int = 100_000, **kw: object) -> PeerSituation:
    return PeerSituation(now_ms=now, connected=connected, **kw)  # type: ignore[arg-type]


def test_below_target_dials_the_shortfall_in_batches_and_skips_backed_off_peers() -> None:
    policy = DegreePolicy(target=8, dial_batch=4)
    book = book_of(peers(20), policy)
    plan = compute_peer_plan(book, situation({"p00": 0, "p01": 0}), SEED)
    assert len(plan.dial) == 4 and not {"p00", "p01"} & {p for p, _ in plan.dial}
    assert all(a == (addr(p),) for p, a in plan.dial)
    plan = compute_peer_plan(
        book, situation({f"p{i:02d}": 0 for i in range(6)}, dialing=frozenset({"p10"})), SEED
    )
    assert len(plan.dial) == 1  # 6 connected + 1 dialing: one short
    for p in peers(20)[6:]:
        book.on_dial_failed(p, 100_000)
    plan = compute_peer_plan(book, situation({}), SEED)
    assert {p for p, _ in plan.dial} <= set(peers(6))
    banned = compute_peer_plan(book, situation({}, banned=frozenset(peers(6))), SEED)
    assert banned.dial == ()


def test_bootstrap_peers_are_first_when_alone_and_last_once_others_are_known() -> None:
    policy = DegreePolicy(target=3, dial_batch=3)
    book = book_of(peers(5), policy)
    book.add_bootstrap("memory/seed0")
    book.add_bootstrap("memory/seed1")
    alone = compute_peer_plan(book, situation({}), SEED)
    assert {p for p, _ in alone.dial[:2]} == {"seed0", "seed1"}
    later = compute_peer_plan(book, situation({"p00": 0}), SEED)
    assert not {"seed0", "seed1"} & {p for p, _ in later.dial}


def test_required_peers_are_dialled_whatever_the_degree() -> None:
    policy = DegreePolicy(target=2)
    book = book_of(peers(10), policy)
    full = {p: 0 for p in peers(4)}
    plan = compute_peer_plan(book, situation(full, required=frozenset({"p07", "p08", "p00"})), SEED)
    assert sorted(p for p, _ in plan.dial) == ["p07", "p08"]


def test_pruning_is_gentle_and_spares_bootstrap_required_young_and_reached_peers() -> None:
    policy = DegreePolicy(target=4, max_peers=6, prune_batch=1, min_age_ms=30_000, reach_keep_ms=120_000)
    book = book_of(peers(12), policy)
    book.add_bootstrap("memory/p00")
    now = 1_000_000
    connected = {p: 0 for p in peers(10)}
    connected["p09"] = now - 1_000  # young
    plan = compute_peer_plan(
        book,
        situation(connected, now=now, required=frozenset({"p01"}), reached={"p02": now - 60_000}),
        SEED,
    )
    assert len(plan.prune) == 1 and plan.prune[0] not in {"p00", "p01", "p02", "p09"}
    at_max = dict(list(connected.items())[:6])
    assert compute_peer_plan(book, situation(at_max, now=now), SEED).prune == ()
    # Everyone protected: nothing to prune even far above the max.
    every = frozenset(connected)
    assert compute_peer_plan(book, situation(connected, now=now, required=every), SEED).prune == ()


def test_a_validator_with_more_validators_than_its_degree_still_keeps_and_dials_followers() -> None:
    """Regression (bench/scale.py, 32 processes, 16 validators, target 8): each validator held
    its 15 required validator connections, over the prune line of 12, so it pruned every
    follower and dialled none; the followers were left meshed among themselves and stayed at
    epoch 2 while the validators committed 21 epochs. Required peers now sit on top of the
    degree: a node keeps at least half its target in other peers, whatever it must keep."""
    policy = DegreePolicy(target=8, min_age_ms=0, prune_batch=100)
    vals = peers(15, "v")
    book = book_of(vals + peers(20, "f"), policy)
    now = 10**9
    required = frozenset(vals)
    five = {**dict.fromkeys(vals, 0), **dict.fromkeys(peers(5, "f"), 0)}
    plan = compute_peer_plan(book, situation(five, now=now, required=required), SEED)
    assert plan.prune == ()  # 15 required + 5 others: at most 4 + 4 others is not exceeded
    alone = compute_peer_plan(book, situation(dict.fromkeys(vals, 0), now=now, required=required), SEED)
    assert len(alone.dial) == 4 and all(p.startswith("f") for p, _ in alone.dial)
    crowded = {**dict.fromkeys(vals, 0), **dict.fromkeys(peers(12, "f"), 0)}
    over = compute_peer_plan(book, situation(crowded, now=now, required=required), SEED)
    assert len(over.prune) == 4 and all(p.startswith("f") for p in over.prune)  # down to 4 + 4
    # A node with few required peers counts them in its target, as before.
    few = {**dict.fromkeys(vals[:2], 0), **dict.fromkeys(peers(10, "f"), 0)}
    assert compute_peer_plan(book, situation(few, now=now, required=frozenset(vals[:2])), SEED).prune == ()
    assert len(compute_peer_plan(book, situation({**few, "f10": 0}, now=now), SEED).prune) == 1


def test_exchange_is_frequent_below_target_rare_at_target() -> None:
    policy = DegreePolicy(target=2, exchange_ms=30_000, short_exchange_ms=3_000)
    book = book_of(peers(3), policy)
    one = {"p00": 0}
    assert compute_peer_plan(book, situation(one, now=10_000), SEED).exchange == ("p00",)
    assert compute_peer_plan(book, situation(one, now=10_000, last_exchange_ms=8_000), SEED).exchange == ()
    assert compute_peer_plan(book, situation(one, now=10_000, last_exchange_ms=7_000), SEED).exchange == (
        "p00",
    )
    two = {"p00": 0, "p01": 0}
    at = compute_peer_plan(book, situation(two, now=10_000, last_exchange_ms=0), SEED)
    assert at.exchange == () and at.sleep_ms == policy.idle_tick_ms
    assert compute_peer_plan(book, situation({}, now=10_000), SEED).exchange == ()


@given(
    n_known=st.integers(0, 40),
    n_connected=st.integers(0, 40),
    target=st.integers(1, 12),
    seed=st.binary(max_size=8),
)
def test_a_plan_never_dials_a_connected_peer_and_never_prunes_below_the_max(
    n_known: int, n_connected: int, target: int, seed: bytes
) -> None:
    policy = DegreePolicy(target=target, min_age_ms=0, prune_batch=100)
    book = book_of(peers(n_known), policy)
    connected = dict.fromkeys(peers(n_connected, "c"), 0)
    connected.update(dict.fromkeys(peers(min(n_known, n_connected // 2)), 0))
    plan = compute_peer_plan(book, situation(connected, now=10**9), seed)
    assert not {p for p, _ in plan.dial} & set(connected)
    assert len(connected) - len(plan.prune) >= min(len(connected), policy.high)
    assert len(plan.dial) <= policy.dial_batch
    assert plan == compute_peer_plan(book, situation(connected, now=10**9), seed)  # deterministic
