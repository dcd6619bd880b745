"""The penalty table: points, leak, threshold, bans, first-offence reporting."""

from __future__ import annotations

from depin_p2p.gossip.penalty import PenaltyPolicy, PenaltyTable, TolerancePolicy, ToleranceTable

POLICY = PenaltyPolicy(reject_points=10, severe_points=100, threshold=50, leak_per_second=5, ban_ms=60_000)


def test_rejections_accumulate_to_a_ban_and_only_the_first_is_reported() -> None:
    table = PenaltyTable(POLICY)
    outcomes = [table.penalise("p", "bad_signature", 1_000) for _ in range(5)]
    assert [o.first for o in outcomes] == [True, False, False, False, False]
    assert [o.banned for o in outcomes] == [False, False, False, False, True]
    assert table.is_banned("p", 1_000)
    assert table.is_banned("p", 60_999)
    assert not table.is_banned("p", 61_000)
    assert not table.is_banned("other", 1_000)


def test_points_leak_away_so_rare_mistakes_never_ban() -> None:
    table = PenaltyTable(POLICY)
    for i in range(100):  # one rejection every 2 s leaks faster (5/s) than it accrues
        assert not table.penalise("p", "stale", i * 2_000).banned
    assert table.score("p", 200_000) == 0


def test_severe_codes_ban_at_once() -> None:
    table = PenaltyTable(POLICY)
    assert table.penalise("p", "malformed_rpc", 0).banned


def test_explicit_ban_and_bounded_size() -> None:
    table = PenaltyTable(PenaltyPolicy(max_peers=3))
    table.ban("x", 5_000)
    assert table.is_banned("x", 4_999) and not table.is_banned("x", 5_000)
    for i in range(10):
        table.penalise(f"p{i}", "stale", 0)
    assert len(table._entries) == 3


def test_light_codes_cost_one_point_each() -> None:
    table = PenaltyTable(PenaltyPolicy(threshold=100))
    outcomes = [table.penalise("p", "far_out_of_window", 0) for _ in range(100)]
    assert [o.banned for o in outcomes].index(True) == 99  # the hundredth item bans
    assert table.penalise("q", "bad_signature", 0).score == 10


def test_tolerance_charges_only_what_is_beyond_the_allowance_and_refills() -> None:
    table = ToleranceTable(TolerancePolicy(items=16, refill_per_second=1))
    assert table.excess("p", 10, 0) == 0
    assert table.excess("p", 10, 0) == 4  # 20 items, 16 free
    assert table.excess("p", 1, 0) == 1  # the allowance is used up
    assert table.excess("other", 16, 0) == 0  # per peer
    assert table.excess("p", 3, 2_500) == 1  # 2 units back after 2.5 s, not 2.5
    assert table.excess("p", 1, 3_000) == 0  # the half unit was kept: 1 more back at 3 s
    assert table.excess("p", 16, 1_000_000) == 0  # a long quiet time refills it all, no more


def test_tolerance_is_bounded() -> None:
    table = ToleranceTable(TolerancePolicy(max_peers=3))
    for i in range(10):
        table.excess(f"p{i}", 1, 0)
    assert len(table._peers) == 3


def test_a_fast_refill_gives_back_exactly_its_rate_whatever_the_step() -> None:
    """At thousands of units a second, steps of a millisecond or so must not refill twice."""
    table = ToleranceTable(TolerancePolicy(items=100, refill_per_second=4_096))
    assert table.excess("p", 100, 0) == 0
    granted = 0
    for now_ms in range(1, 1_001):  # one second in 1 ms steps, taking all that came back
        granted += table.remaining("p", now_ms)
        table.excess("p", table.remaining("p", now_ms), now_ms)
    assert granted == 4_096
