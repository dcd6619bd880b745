"""The penalty table: points, leak, threshold, bans, first-offence reporting."""

from __future__ import annotations

from depin_p2p.gossip.penalty import PenaltyPolicy, PenaltyTable

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
