"""Review finding: a compute attestation's ``elapsed_ms`` was not checked by consensus.

A witness colluding with a slow provider (one that offloads the work, or
simply has far less capacity than it registered) could sign ``PASSED`` with
any elapsed time, and consensus credited the claim. Defence: consensus
refuses a pass whose ``elapsed_ms`` is over the challenge deadline every
witness sets (``compute.CHALLENGE_DEADLINE_MS`` after issuing it)
[elapsed_over_deadline].
"""

from __future__ import annotations

import pytest

from depin_p2p import wire
from depin_p2p.errors import Reject
from depin_p2p.witness import compute as c
from tests.unit.witness import support as s

WITNESS = s.key("elapsed-witness")
PROVIDER = s.key("elapsed-provider")
ASSIGNED = frozenset({WITNESS.public_key})


def _attestation(outcome: c.Outcome, elapsed_ms: int) -> wire.Envelope:
    att = c.Attestation(
        WITNESS.public_key, PROVIDER.public_key, 4, b"\x01" * 32, outcome, elapsed_ms, 8, b"\x02" * 32
    )
    return wire.seal(att, WITNESS, s.NETWORK)


def _validate(env: wire.Envelope) -> c.Attestation:
    return c.validate_attestation(env, network_id=s.NETWORK, epoch=4, assigned=ASSIGNED, expected_n=8)


def test_a_pass_slower_than_the_challenge_deadline_is_refused_by_consensus() -> None:
    a_minute = _attestation(c.Outcome.PASSED, 60_000)  # the witnesses' deadline is 5 s after issue
    with pytest.raises(Reject) as info:
        _validate(a_minute)
    assert info.value.code == "elapsed_over_deadline"
    with pytest.raises(Reject) as info:
        _validate(_attestation(c.Outcome.PASSED, c.CHALLENGE_DEADLINE_MS + 1))
    assert info.value.code == "elapsed_over_deadline"


def test_a_pass_within_the_deadline_and_a_failed_outcome_of_any_elapsed_time_are_accepted() -> None:
    assert _validate(_attestation(c.Outcome.PASSED, c.CHALLENGE_DEADLINE_MS)).passed
    # A failed verdict credits nothing: its elapsed time is only information.
    slow_fail = _validate(_attestation(c.Outcome.DEADLINE_MISSED, 10 * c.CHALLENGE_DEADLINE_MS))
    assert not slow_fail.passed


def test_the_witness_service_sets_the_deadline_consensus_checks() -> None:
    from depin_p2p.witness import service  # noqa: PLC0415

    # The request outlives the deadline, so a late answer is judged deadline_missed, not lost.
    assert service.CHALLENGE_DEADLINE_MS == c.CHALLENGE_DEADLINE_MS < service.CHALLENGE_TIMEOUT_S * 1000
