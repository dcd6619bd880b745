"""A report verdict served from memory ends exactly as the full check would."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from depin_p2p import wire
from depin_p2p.errors import Ignore, Reject
from depin_p2p.witness import radio
from depin_p2p.witness.verdicts import ReportVerdicts
from tests.unit.witness import support as s
from tests.unit.witness.test_radio import B_DEV, B_ENV, BEACONER, CASES, CHECKED, NEAR, REG, SEVEN, Case


def _counting() -> tuple[list[bytes], wire.Verifier]:
    calls: list[bytes] = []

    def verify(public_key: bytes, data: bytes, signature: bytes) -> None:
        calls.append(signature)
        wire.verify_signature(public_key, data, signature)

    return calls, verify


def _warmed() -> tuple[ReportVerdicts, wire.Envelope]:
    """A memory holding the good verdict on NEAR's report of the test beacon, and that report."""
    memo = ReportVerdicts()
    env = s.make_report(NEAR, B_ENV)
    memo.validate(CHECKED, env, registry=REG, network_id=s.NETWORK)
    return memo, env


def _refused(memo: ReportVerdicts, beacon: radio.CheckedBeacon, env: wire.Envelope, **kw: Any) -> str:
    """The code ``memo.validate`` rejects ``env`` with (it must reject)."""
    with pytest.raises(Reject) as info:
        memo.validate(beacon, env, **kw)
    return info.value.code


def _outcome(memo: ReportVerdicts, env: wire.Envelope, case: Case) -> str | None:
    try:
        memo.validate(CHECKED, env, registry=REG, network_id=s.NETWORK, seen=case.seen, now_ms=case.now_ms)
    except (Reject, Ignore) as exc:
        return f"{type(exc).__name__}:{exc.code}"
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_table_case_ends_the_same_from_memory_as_in_full(case: Case) -> None:
    env = case.build()
    expected = None if case.code is None else f"{case.kind.__name__}:{case.code}"
    memo = ReportVerdicts()
    assert _outcome(memo, env, case) == expected  # a miss: the full check
    # Once the same bytes were judged good without the caller's own context (the pool's
    # duplicate set, the local clock), the context still decides.
    warm = Case("warm", case.build, None)
    if _outcome(memo, env, warm) is None:
        hits = memo.hits
        assert _outcome(memo, env, case) == expected
        assert memo.hits == hits + 1


def test_a_hit_skips_decoding_and_the_signature_and_returns_the_same_verdict() -> None:
    calls, verify = _counting()
    memo = ReportVerdicts()
    env = s.make_report(NEAR, B_ENV)
    first = memo.validate(CHECKED, env, registry=REG, network_id=s.NETWORK, verify=verify)
    copy = wire.decode_as(wire.encode(env), wire.Envelope)  # the same bytes, as a proposal carries them
    assert copy is not env
    assert memo.decoded(copy) == first.report
    again = memo.validate(CHECKED, copy, registry=REG, network_id=s.NETWORK, verify=verify)
    assert again == first and len(calls) == 1 and (memo.hits, memo.misses) == (1, 1)


def test_a_copy_with_other_bytes_under_the_same_signature_is_checked_in_full() -> None:
    memo, env = _warmed()
    forged = dataclasses.replace(s.make_report(NEAR, B_ENV, rssi=-9_100), signature=env.signature)
    assert memo.decoded(forged) is None
    assert _refused(memo, CHECKED, forged, registry=REG, network_id=s.NETWORK) == "bad_signature"


def test_a_witness_moved_by_a_commit_is_judged_again_in_its_new_place() -> None:
    memo, env = _warmed()
    near = REG.get_device(NEAR.public_key)
    seven = REG.get_device(SEVEN.public_key)
    assert near is not None and seven is not None
    moved = s.DictRegistry(
        [B_DEV, dataclasses.replace(near, location=seven.location)]  # now 7 cells from the beaconer
    )
    assert _refused(memo, CHECKED, env, registry=moved, network_id=s.NETWORK) == "too_close"
    gone = s.DictRegistry([B_DEV])
    assert _refused(memo, CHECKED, env, registry=gone, network_id=s.NETWORK) == "unknown_device"
    assert memo.hits == 0


def test_a_beaconer_changed_by_a_commit_is_judged_again() -> None:
    memo, env = _warmed()
    near = REG.get_device(NEAR.public_key)
    assert near is not None
    sold = dataclasses.replace(B_DEV, owner=near.owner)  # the beaconer now belongs to the witness's owner
    registry = s.DictRegistry([sold, near])
    checked = radio.validate_beacon(B_ENV, registry=registry, network_id=s.NETWORK)
    assert _refused(memo, checked, env, registry=registry, network_id=s.NETWORK) == "same_owner"
    assert memo.hits == 0


def test_another_network_or_other_radio_params_are_judged_again() -> None:
    memo, env = _warmed()
    assert _refused(memo, CHECKED, env, registry=REG, network_id="elsewhere") == "wrong_network"
    strict = dataclasses.replace(radio.DEFAULT_PARAMS, max_distance_m=1)
    assert _refused(memo, CHECKED, env, registry=REG, network_id=s.NETWORK, params=strict) == "too_far"
    assert memo.hits == 0


def test_failures_are_not_kept_an_epoch_keeps_at_most_its_share_and_prune_forgets() -> None:
    memo = ReportVerdicts(per_epoch=2)
    bad = s.make_report(BEACONER, B_ENV)
    for _ in range(2):
        with pytest.raises(Reject):
            memo.validate(CHECKED, bad, registry=REG, network_id=s.NETWORK)
    assert len(memo) == 0 and memo.misses == 2
    reports = [s.make_report(NEAR, B_ENV, rssi=rssi) for rssi in (-9_000, -9_100, -9_200)]
    for env in reports:
        memo.validate(CHECKED, env, registry=REG, network_id=s.NETWORK)
    assert len(memo) == 2  # the third was checked in full and not kept; the first two stay
    assert memo.decoded(reports[0]) is not None and memo.decoded(reports[2]) is None
    epoch = CHECKED.beacon.epoch
    memo.prune(epoch - 1)
    assert len(memo) == 2
    memo.prune(epoch)
    assert len(memo) == 0 and memo.decoded(reports[0]) is None


def test_a_verdict_is_not_served_for_another_beacon() -> None:
    memo, env = _warmed()
    other = dataclasses.replace(CHECKED, beacon_id=b"\x07" * 32)  # a beacon the report does not name
    assert _refused(memo, other, env, registry=REG, network_id=s.NETWORK) == "wrong_beacon"
