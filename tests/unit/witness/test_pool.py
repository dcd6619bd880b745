"""The proof pool: strict where it can be, bounded everywhere, reports may outrun beacons."""

from __future__ import annotations

import dataclasses

import pytest

from depin_p2p import wire
from depin_p2p.errors import Ignore, Reject
from depin_p2p.witness import compute
from depin_p2p.witness.candidates import is_candidate, potential_witnesses
from depin_p2p.witness.pool import PoolLimits, ProofPool
from depin_p2p.witness.radio import Beacon, WitnessReport, beacon_id
from depin_p2p.witness.rewards import lottery_ticket
from tests.unit.witness import support as s

KEYS = [s.key(f"pool-radio-{i}") for i in range(6)]
DEVICES = [s.radio_device(k, s.cell(s.SF_LAT + 0.0135 * i, s.SF_LNG)) for i, k in enumerate(KEYS)]
REGISTRY = s.DictRegistry(DEVICES)


def verified(env: wire.Envelope) -> wire.Verified:
    return wire.Verified(wire.decode(env.body), env.signer, env)


def pool(**limits: int) -> ProofPool:
    p = ProofPool(REGISTRY, s.NETWORK, PoolLimits(**limits))
    p.current_epoch = 3  # support.make_beacon signs epoch 3
    return p


def test_beacon_then_reports_collected() -> None:
    p = pool()
    b = s.make_beacon(KEYS[0], DEVICES[0])
    p.check(verified(b))
    p.add(verified(b))
    for k in KEYS[1:4]:
        r = s.make_report(k, b, rssi=-11_000)
        p.check(verified(r))
        p.add(verified(r))
    got = p.collect(3)
    assert got.beacons == (b,)
    assert len(got.reports) == 3
    assert p.collect(4).beacons == ()


def test_report_before_beacon_is_kept_pending_then_attached() -> None:
    p = pool()
    b = s.make_beacon(KEYS[0], DEVICES[0])
    r = s.make_report(KEYS[1], b, rssi=-11_000)
    p.check(verified(r))  # only the signer is checked: the beacon is unknown here
    p.add(verified(r))
    assert p.collect(3).reports == ()
    p.add(verified(b))
    assert p.collect(3).reports == (r,)


def test_a_report_that_outran_its_beacon_is_checked_when_the_beacon_comes() -> None:
    """Regression (found by the ``self-witness-second-key`` role): a report that reached the pool
    before its beacon was attached unchecked once the beacon came, so a second device of the
    beaconer's own owner, or an rssi above the bound, got in by arriving first."""
    owner = s.key("pool-ring-owner").public_key
    mine = [s.radio_device(k, d.location, owner=owner) for k, d in zip(KEYS[:2], DEVICES[:2], strict=True)]
    p = ProofPool(s.DictRegistry([*mine, *DEVICES[2:]]), s.NETWORK)
    p.current_epoch = 3
    b = s.make_beacon(KEYS[0], mine[0])
    own = s.make_report(KEYS[1], b, rssi=-11_000)  # same owner as the beaconer
    loud = s.make_report(KEYS[2], b, rssi=2_000)  # above the free-space bound
    fine = s.make_report(KEYS[3], b, rssi=-11_000)
    for r in (own, loud, fine):
        p.check(verified(r))  # the beacon is unknown here: only the signer can be checked
        p.add(verified(r))
    p.add(verified(b))
    assert p.collect(3).reports == (fine,)
    refused = {(KEYS[1].public_key, "same_owner"): 1, (KEYS[2].public_key, "rssi_above_fspl_bound"): 1}
    assert p.late_rejects == refused
    # Checked before the beacon came, added after it (gossip checks a bundle before it delivers the
    # one before it): the same holds.
    p = ProofPool(s.DictRegistry([*mine, *DEVICES[2:]]), s.NETWORK)
    p.current_epoch = 3
    for r in (own, loud, fine):
        p.check(verified(r))
    p.add(verified(b))
    for r in (own, loud, fine):
        p.add(verified(r))
    assert p.collect(3).reports == (fine,)
    assert p.late_rejects == refused


def test_impossible_report_is_rejected_once_the_beacon_is_known() -> None:
    p = pool()
    b = s.make_beacon(KEYS[0], DEVICES[0])
    p.add(verified(b))
    with pytest.raises(Reject) as info:
        p.check(verified(s.make_report(KEYS[1], b, rssi=2_000)))
    assert info.value.code == "rssi_above_fspl_bound"


def test_unknown_signer_and_wrong_epoch() -> None:
    p = pool()
    stranger = s.key("pool-stranger")
    b = s.make_beacon(KEYS[0], DEVICES[0])
    # Our ledger may be behind the sender's: a device we do not know yet costs nothing...
    with pytest.raises(Ignore, match="unknown_device"):
        p.check(verified(s.make_report(stranger, b)))
    # ...until we have committed every epoch a proof of the running epoch relies on.
    p.committed_epoch = p.current_epoch
    with pytest.raises(Reject, match="unknown_device"):
        p.check(verified(s.make_report(stranger, b)))
    p.current_epoch = 4  # the beacon's epoch 3 just ended: still welcome (not yet decided)
    p.check(verified(b))
    p.current_epoch = 5
    with pytest.raises(Ignore, match="wrong_epoch"):
        p.check(verified(b))
    p.current_epoch = 1
    with pytest.raises(Ignore, match="wrong_epoch"):
        p.check(verified(b))


def test_duplicates_and_caps() -> None:
    p = pool(reports_per_beacon=2, pending_reports=1, beacons_per_epoch=1)
    b = s.make_beacon(KEYS[0], DEVICES[0])
    p.add(verified(b))
    p.add(verified(b))
    p.add(verified(s.make_beacon(KEYS[1], DEVICES[1])))  # over the per-epoch beacon cap
    assert len(p.collect(3).beacons) == 1
    for k in KEYS[1:5]:
        p.add(verified(s.make_report(k, b)))
    assert len(p.collect(3).reports) == 2
    other = s.make_beacon(KEYS[2], DEVICES[2])
    p.add(verified(s.make_report(KEYS[3], other)))
    p.add(verified(s.make_report(KEYS[4], other)))  # pushes the first pending one out
    assert p.dropped == 1 + 2 + 1  # one beacon, two reports over the cap, one pending pushed out


def test_attestations_and_prune() -> None:
    p = pool()
    att = compute.Attestation(
        KEYS[1].public_key, KEYS[2].public_key, 3, b"\x01" * 32, compute.Outcome.PASSED, 5, 32, b"\x02" * 32
    )
    env = wire.seal(att, KEYS[1], s.NETWORK)
    p.check(verified(env))
    p.add(verified(env))
    p.add(verified(env))
    assert p.collect(3).attestations == (env,)
    forged = dataclasses.replace(att, witness=KEYS[3].public_key)
    with pytest.raises(Reject, match="wrong_signer"):
        p.check(verified(wire.seal(forged, KEYS[1], s.NETWORK)))
    p.prune(3)
    assert p.collect(3).attestations == ()


def test_screen_runs_the_cheap_checks_on_what_the_signature_has_not_vouched_for_yet() -> None:
    p = pool()
    b = s.make_beacon(KEYS[0], DEVICES[0])
    beacon = wire.decode(b.body)
    p.screen(beacon, KEYS[0].public_key)
    with pytest.raises(Reject, match="wrong_signer"):
        p.screen(beacon, KEYS[1].public_key)  # a beacon claimed by a key that is not its device's
    att = compute.Attestation(
        KEYS[1].public_key, KEYS[2].public_key, 3, b"\x01" * 32, compute.Outcome.PASSED, 5, 32, b"\x02" * 32
    )
    far = "far_out_of_window"
    for epoch, code in ((5, "wrong_epoch"), (7, "wrong_epoch"), (8, far), (10**12, far), (0, "wrong_epoch")):
        with pytest.raises(Ignore, match=code):
            p.screen(dataclasses.replace(att, epoch=epoch), KEYS[1].public_key)
    stranger = s.key("pool-stranger")
    stranger_att = dataclasses.replace(att, witness=stranger.public_key)
    with pytest.raises(Ignore, match="unknown_device"):  # our ledger may be behind
        p.screen(stranger_att, stranger.public_key)
    p.committed_epoch = p.current_epoch
    with pytest.raises(Reject, match="unknown_device"):
        p.screen(stranger_att, stranger.public_key)
    # A report's epoch is its beacon's, once the beacon is here.
    p.add(verified(b))
    report = wire.decode(s.make_report(KEYS[1], b).body)
    p.screen(report, KEYS[1].public_key)
    p.current_epoch = 3 + 5
    with pytest.raises(Ignore, match="far_too_old"):  # late, as a starved relay makes it: no one's fault
        p.screen(report, KEYS[1].public_key)


def test_a_crowded_beacon_keeps_the_best_lottery_tickets_and_screens_out_the_rest() -> None:
    p = pool(reports_per_beacon=2)
    prev = b"\x05" * 32
    p.chain_head = (2, prev)  # epoch 2 committed: the draw of epoch 3 is known
    b = s.make_beacon(KEYS[0], DEVICES[0])
    beacon = wire.decode_as(b.body, Beacon)
    p.add(verified(b))
    bid = beacon_id(b)
    witnesses = KEYS[1:6]
    ranked = sorted(witnesses, key=lambda k: lottery_ticket(prev, 3, beacon.device, k.public_key))
    worst_first = list(reversed(ranked))
    for k in worst_first[:2]:  # the two worst tickets arrive first and fill the slot
        p.check(verified(s.make_report(k, b, rssi=-11_000)))
        p.add(verified(s.make_report(k, b, rssi=-11_000)))
    late = worst_first[2]  # better than both: still a candidate, and takes the worst one's place
    assert p.wants_report(bid, late.public_key)
    p.screen(wire.decode(s.make_report(late, b).body), late.public_key)
    p.add(verified(s.make_report(late, b, rssi=-11_000)))
    for k in ranked[:2]:
        p.add(verified(s.make_report(k, b, rssi=-11_000)))
    kept = {wire.decode_as(r.body, WitnessReport).witness for r in p.collect(3).reports}
    assert kept == {k.public_key for k in ranked[:2]}  # the lottery's two best, whatever came first
    for k in ranked[2:]:  # the rest cannot make the cut: not checked further, not signed
        assert not p.wants_report(bid, k.public_key)
        with pytest.raises(Ignore, match="not_a_candidate"):
            p.screen(wire.decode(s.make_report(k, b).body), k.public_key)
    # Before the draw is known (our ledger lags), a full slot is first come, first kept.
    q = pool(reports_per_beacon=2)
    q.add(verified(b))
    for k in worst_first[:3]:
        q.add(verified(s.make_report(k, b, rssi=-11_000)))
    first = {wire.decode_as(r.body, WitnessReport).witness for r in q.collect(3).reports}
    assert first == {k.public_key for k in worst_first[:2]}


def test_only_the_lotterys_candidates_are_kept_when_the_crowd_is_large() -> None:
    p = pool()
    prev = b"\x06" * 32
    p.chain_head = (2, prev)
    b = s.make_beacon(KEYS[0], DEVICES[0])
    beacon = wire.decode_as(b.body, Beacon)
    p.add(verified(b))
    # Pretend 100 potential witnesses: about TARGET_CANDIDATES of them may report, by their ticket.
    p.potential = {beacon.device: 100}
    verdicts = {
        k.public_key: is_candidate(prev, 3, beacon.device, k.public_key, potential=100) for k in KEYS[1:]
    }
    for k in KEYS[1:]:
        assert p.wants_report(beacon_id(b), k.public_key) == verdicts[k.public_key]
        report = wire.decode(s.make_report(k, b).body)
        if verdicts[k.public_key]:
            p.screen(report, k.public_key)
        else:
            with pytest.raises(Ignore, match="not_a_candidate"):
                p.screen(report, k.public_key)
    p.potential = {beacon.device: 24}  # no more than the target: everyone is a candidate
    assert all(p.wants_report(beacon_id(b), k.public_key) for k in KEYS[1:])


def test_candidates_are_the_lowest_tickets_about_the_target_many_and_counted_by_distance() -> None:
    prev = b"\x07" * 32
    beaconer = b"\x01" * 32
    crowd = [bytes([i % 256, i // 256]) * 16 for i in range(1, 2_001)]
    chosen = [w for w in crowd if is_candidate(prev, 9, beaconer, w, potential=len(crowd))]
    assert 10 <= len(chosen) <= 45  # about 24 of 2,000 (Poisson: far inside these bounds)
    ranked = sorted(crowd, key=lambda w: lottery_ticket(prev, 9, beaconer, w))
    assert set(chosen) == set(ranked[: len(chosen)])  # a prefix of the lottery's order
    # Potential witnesses: radios of other owners within 100 km, each pair counted for both.
    near = potential_witnesses(DEVICES)
    assert set(near) == {d.device_id for d in DEVICES}
    assert all(n == len(DEVICES) - 1 for n in near.values())  # all within 100 km, each its own owner
    far = s.radio_device(s.key("pool-far"), s.cell(s.SF_LAT + 2.0, s.SF_LNG))  # ~220 km north
    assert potential_witnesses([*DEVICES, far])[far.device_id] == 0


def test_potential_witnesses_of_an_equal_registry_are_the_same_counts_in_a_dict_of_ones_own() -> None:
    counts = potential_witnesses(DEVICES)
    counts[DEVICES[0].device_id] = -1  # the caller's dict, not the memory's
    again = potential_witnesses(iter(list(DEVICES)))  # an equal registry, as another node holds it
    assert again[DEVICES[0].device_id] == len(DEVICES) - 1
    moved = dataclasses.replace(DEVICES[1], location=s.cell(s.SF_LAT + 2.0, s.SF_LNG))
    registry = [moved if d is DEVICES[1] else d for d in DEVICES]
    assert potential_witnesses(registry)[moved.device_id] == 0  # a changed device is counted afresh
    sold = dataclasses.replace(DEVICES[1], owner=DEVICES[0].owner)  # same place, DEVICES[0]'s owner now
    registry = [sold if d is DEVICES[1] else d for d in DEVICES]
    assert potential_witnesses(registry)[sold.device_id] == len(DEVICES) - 2
