"""The ping loop's policy: timeouts that bend with our own lag, drops only after misses in a row."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from depin_p2p.gossip.liveness import LivenessPolicy, LoopLag, MissedPings

P = LivenessPolicy()


def test_timeout_grows_with_our_own_recent_lag_and_is_capped() -> None:
    lag = LoopLag(P)
    assert lag.timeout_ms(0) == 3_000
    lag.record(1_000, 500)
    assert lag.timeout_ms(1_000) == 3_000 + 4 * 500
    lag.record(2_000, 60_000)
    assert lag.timeout_ms(2_000) == P.max_timeout_ms
    # Old samples age out of the window.
    assert lag.timeout_ms(2_000 + P.window_ms + 1) == 3_000


def test_a_round_during_which_we_stalled_judges_nobody() -> None:
    lag = LoopLag(P)
    lag.record(10_000, 200)
    assert lag.round_is_judgeable(9_000, 12_000, 3_000)
    lag.record(11_000, 5_000)  # SIGSTOPped for 5 s, measured after the round began
    assert not lag.round_is_judgeable(9_000, 12_000, 3_000)
    assert lag.round_is_judgeable(11_500, 14_000, 3_000)
    # A round that overran its own timeout: our loop did not run, whatever the samples say.
    assert not LoopLag(P).round_is_judgeable(0, 3_000 + 1_000 + P.stall_ms + 1, 3_000)


def test_a_peer_is_gone_only_after_consecutive_misses() -> None:
    m = MissedPings(P)
    assert not m.missed("a")
    assert not m.missed("a")
    m.answered("a")  # one answer wipes the slate
    assert [m.missed("a") for _ in range(3)] == [False, False, True]
    assert m.count("a") == 0  # reset once reported
    m.missed("b")
    m.forget_except({"a"})
    assert m.count("b") == 0


@given(
    st.lists(st.tuples(st.integers(0, 5_000), st.integers(-100, 5_000)), max_size=60),
    st.integers(0, 40_000),
)
def test_recent_lag_is_the_largest_sample_in_the_window(steps: list[tuple[int, int]], ahead: int) -> None:
    policy = LivenessPolicy(window_ms=10_000, max_samples=16)
    lag, kept, now = LoopLag(policy), [], 0
    for gap, late in steps:
        now += gap
        lag.record(now, late)
        kept = [*kept, (now, max(0, late))][-16:]
        kept = [(at, ms) for at, ms in kept if at >= now - policy.window_ms]
        for query in (now, now + ahead):
            expected = max((ms for at, ms in kept if at >= query - policy.window_ms), default=0)
            assert lag.recent_ms(query) == expected
