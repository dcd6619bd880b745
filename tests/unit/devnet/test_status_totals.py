"""`run`'s view of an adversary from an honest node's /status: what that node said of its peer only."""

from __future__ import annotations

from devnet.adversaries.detect import add_totals, status_totals

LIAR, OTHER = "12D3KooWLiar", "12D3KooWOther"
LIAR_KEY = "aa" * 32


def _status() -> dict[str, object]:
    # One bundle of the liar's and one of another adversary's rejected: the gossip service and
    # the transport each count a rejected bundle once (node-wide); only the transport by peer.
    return {
        "gossip_counters": {
            "reject_codes": {"rssi_above_fspl_bound": 1, "stale": 1},
            "ignore_codes": {"too_old": 3},
            "item_ignores_by_peer": {OTHER: {"too_old": 3}},
            "items_duplicate": 2,
        },
        "transport_counters": {
            "reject_codes": {"rssi_above_fspl_bound": 1, "stale": 1, "malformed_rpc": 0},
            "malformed_frames": 4,
            "codes_by_peer": {
                LIAR: {"rssi_above_fspl_bound": 1, "ignored_nothing_new": 2},
                OTHER: {"stale": 1, "malformed_rpc": 4},
            },
            "rate_limited_peers": {LIAR: 5},
            "excess_streams_peers": {OTHER: 1},
        },
        "consensus": {
            "ignore_codes": {"vote_from_the_future": 1},
            "conflicting_signers": {LIAR_KEY: 2},
            "evidence_offenders": {},
        },
    }


def test_a_rejected_bundle_counts_once_and_only_against_the_peer_that_sent_it() -> None:
    assert status_totals(_status(), LIAR_KEY, LIAR) == {
        "rssi_above_fspl_bound": 1,
        "ignored_nothing_new": 2,
        "rate_limited": 5,
        "duplicate_items": 2,
        "ignored_vote_from_the_future": 1,
        "conflicting_votes": 1,
    }
    assert status_totals(_status(), "bb" * 32, OTHER) == {
        "stale": 1,
        "malformed_rpc": 4,
        "ignored_too_old": 3,
        "excess_streams": 1,
        "duplicate_items": 2,
        "ignored_vote_from_the_future": 1,
    }


def test_an_older_status_without_per_peer_counts_shows_nothing_against_the_peer() -> None:
    assert status_totals({"gossip_counters": {}, "transport_counters": {}}, LIAR_KEY, LIAR) == {}


def test_two_honest_nodes_add_up() -> None:
    one = status_totals(_status(), LIAR_KEY, LIAR)
    assert add_totals([one, one])["rssi_above_fspl_bound"] == 2
