"""Epoch content: the proposer's build always checks; every tampering is caught with its code."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from depin_p2p import wire
from depin_p2p.consensus.value import (
    CheckedValues,
    EpochContent,
    JudgedEvidence,
    ValueParams,
    build_content,
    check_content,
    envelope_id,
    report_ticket,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Reject
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import (
    Account,
    InitialState,
    Reward,
    Slash,
    compute_genesis_changes,
    validator_set,
)
from depin_p2p.ledger.store import LedgerStore
from depin_p2p.model import MICRO, Device
from depin_p2p.witness import compute, radio
from depin_p2p.witness.assign import assign_compute_witnesses
from depin_p2p.witness.rewards import lottery_ticket
from depin_p2p.witness.verdicts import ReportVerdicts
from tests.unit.witness import support as s

NET = s.NETWORK
EPOCH = 1
EMISSION = 1_000 * MICRO
GENESIS_HASH = hashlib.blake2b(b"value-test-genesis", digest_size=32).digest()
PARAMS = ValueParams(network_id=NET, emission_per_epoch=EMISSION)
VALIDATORS = [s.key(f"value-validator-{i}") for i in range(4)]
RADIO_KEYS = [s.key(f"value-radio-{i}") for i in range(12)]
PROVIDER_KEYS = [s.key(f"value-provider-{i}") for i in range(2)]
T0 = 1_700_000_000_000


def _devices() -> list[Device]:
    radios = [
        s.radio_device(
            k,
            s.cell(s.SF_LAT + 0.0135 * (i % 4), s.SF_LNG + 0.017 * (i // 4)),
            owner=VALIDATORS[i % 4].public_key if i < 8 else None,
        )
        for i, k in enumerate(RADIO_KEYS)
    ]
    providers = [
        s.compute_device(k, owner=s.key(f"value-powner-{i}").public_key, capacity=8)
        for i, k in enumerate(PROVIDER_KEYS)
    ]
    return radios + providers


DEVICES = {d.device_id: d for d in _devices()}


def _initial() -> InitialState:
    return InitialState(
        accounts=tuple(sorted((v.public_key, Account(10_000 * MICRO, 0)) for v in VALIDATORS)),
        devices=tuple(sorted(DEVICES.values(), key=lambda d: d.device_id)),
        validators=tuple(sorted((v.public_key, 1_000 * MICRO) for v in VALIDATORS)),
        genesis_hash=GENESIS_HASH,
    )


def ledger() -> MemoryLedger:
    mem = MemoryLedger()
    mem.commit(compute_genesis_changes(mem, _initial()), b"")
    return mem


def beacon(k: KeyPair, *, nonce: int = 0, epoch: int = EPOCH) -> wire.Envelope:
    d = DEVICES[k.public_key]
    b = radio.Beacon(k.public_key, epoch, nonce, d.location, d.frequency_hz, d.tx_power_cdbm, d.gain_cdbi, T0)
    return wire.seal(b, k, NET)


def report(k: KeyPair, beacon_env: wire.Envelope, *, rssi: int = -11_000) -> wire.Envelope:
    rep = radio.WitnessReport(k.public_key, radio.beacon_id(beacon_env), rssi, 500, s.FREQ, T0 + 500)
    return wire.seal(rep, k, NET)


def attestations(view: MemoryLedger, *, passed: bool = True) -> list[wire.Envelope]:
    table = assign_compute_witnesses(
        prev_cert_hash=view.last_certificate_hash(),
        epoch=EPOCH,
        devices=view.iter_devices(),
        validators=validator_set(view),
    )
    keys = {k.public_key: k for k in RADIO_KEYS}
    out = []
    outcome = compute.Outcome.PASSED if passed else compute.Outcome.WRONG_RESULT
    for a in table:
        for w in a.witnesses:
            n = compute.challenge_size(DEVICES[a.provider].capacity)
            att = compute.Attestation(w, a.provider, EPOCH, b"\x01" * 32, outcome, 40, n, b"\x02" * 32)
            out.append(wire.seal(att, keys[w], NET))
    return out


def proofs(view: MemoryLedger) -> dict[str, list[wire.Envelope]]:
    beacons = [beacon(k) for k in RADIO_KEYS[:3]]
    # Everyone nearby reports; rssi -110 dBm is under the path-loss bound at ~1.5-6 km.
    reports = [report(w, b) for b in beacons for w in RADIO_KEYS if w.public_key != b.signer]
    return {"beacons": beacons, "reports": reports, "attestations": attestations(view)}


def build(view: MemoryLedger, params: ValueParams = PARAMS):  # type: ignore[no-untyped-def]
    return build_content(view, epoch=EPOCH, txs=(), evidence=(), params=params, **proofs(view))


def test_build_then_check_agrees_and_pays_the_emission() -> None:
    view = ledger()
    built = build(view)
    content = built.content
    assert len(content.beacons) == 3
    assert len(content.reports) > 10
    assert len(content.attestations) == 6  # 2 providers x 3 witnesses
    assert content.ledger.emission == EMISSION
    assert sum(r.amount for r in content.ledger.rewards) == EMISSION
    # Compute providers' owners are paid for their passed claims.
    paid = {r.account for r in content.ledger.rewards}
    assert s.key("value-powner-0").public_key in paid
    # The validator's side agrees, from the decoded bytes, on a fresh ledger.
    decoded = wire.decode_as(wire.encode(content), EpochContent)
    changes = check_content(ledger(), decoded, PARAMS)
    assert changes.root == content.state_root == built.changes.root
    supply_before = view.get_meta().total_supply
    assert changes.meta.total_supply == supply_before + EMISSION


def test_build_is_deterministic_whatever_the_arrival_order() -> None:
    items = proofs(ledger())
    a = build_content(ledger(), epoch=EPOCH, txs=(), evidence=(), params=PARAMS, **items)
    shuffled = {k: list(reversed(v)) for k, v in items.items()}
    shuffled["reports"] = shuffled["reports"] + shuffled["reports"][:5]  # duplicates arrive too
    b = build_content(ledger(), epoch=EPOCH, txs=(), evidence=(), params=PARAMS, **shuffled)
    assert wire.encode(a.content) == wire.encode(b.content)


def test_nothing_earned_mints_nothing() -> None:
    built = build_content(
        ledger(), epoch=EPOCH, beacons=(), reports=(), attestations=(), txs=(), evidence=(), params=PARAMS
    )
    assert built.content.ledger.emission == 0
    assert built.content.ledger.rewards == ()
    check_content(ledger(), built.content, PARAMS)


def _beacon_of(report_env: wire.Envelope) -> bytes:
    return wire.decode_as(report_env.body, radio.WitnessReport).beacon_id


def test_builder_drops_invalid_items_with_their_codes() -> None:
    view = ledger()
    b0 = beacon(RADIO_KEYS[0])
    forged = dataclasses.replace(report(RADIO_KEYS[5], b0), signature=b"\x00" * 64)
    orphan = report(RADIO_KEYS[6], beacon(RADIO_KEYS[9], nonce=9))
    second_beacon = beacon(RADIO_KEYS[0], nonce=1)
    loud = report(RADIO_KEYS[7], b0, rssi=2_000)  # +20 dBm received: impossible
    outsider = wire.seal(
        compute.Attestation(
            RADIO_KEYS[11].public_key,
            PROVIDER_KEYS[0].public_key,
            EPOCH,
            b"\x01" * 32,
            compute.Outcome.PASSED,
            1,
            32,
            b"\x02" * 32,
        ),
        RADIO_KEYS[11],
        NET,
    )
    items = proofs(view)
    # Witnesses 5 and 7 did not report beacon 0 honestly, so their forged/impossible reports are judged.
    judged = (RADIO_KEYS[5].public_key, RADIO_KEYS[7].public_key)
    items["reports"] = [
        r for r in items["reports"] if not (r.signer in judged and _beacon_of(r) == radio.beacon_id(b0))
    ]
    items["beacons"].append(second_beacon)
    items["reports"] += [forged, orphan, loud]
    items["attestations"].append(outsider)
    right = wire.decode_as(items["attestations"][0].body, compute.Attestation)
    witness_key = next(k for k in RADIO_KEYS if k.public_key == right.witness)
    # The right witness, at another size than the provider's capacity sets: other work, not counted.
    items["attestations"].append(wire.seal(dataclasses.replace(right, n=right.n * 2), witness_key, NET))
    built = build_content(view, epoch=EPOCH, txs=(), evidence=(), params=PARAMS, **items)
    codes = sorted((d.kind, d.code) for d in built.dropped)
    assert ("beacon", "beacon_limit") in codes
    assert ("report", "bad_signature") in codes
    assert ("report", "unknown_beacon") in codes
    assert ("report", "rssi_above_fspl_bound") in codes
    assert ("attestation", "not_assigned") in codes
    assert ("attestation", "wrong_size") in codes
    check_content(ledger(), built.content, PARAMS)


def _code(content: EpochContent, params: ValueParams = PARAMS) -> str:
    with pytest.raises(Reject) as info:
        check_content(ledger(), content, params)
    return info.value.code


def _valid() -> EpochContent:
    return build(ledger()).content


def test_tampered_rewards_same_total() -> None:
    c = _valid()
    r = list(c.ledger.rewards)
    r[0], r[1] = Reward(r[0].account, r[0].amount + 1), Reward(r[1].account, r[1].amount - 1)
    tampered = dataclasses.replace(c.ledger, rewards=tuple(r))
    assert _code(dataclasses.replace(c, ledger=tampered)) == "wrong_rewards"


def test_wrong_root_and_wrong_emission() -> None:
    c = _valid()
    assert _code(dataclasses.replace(c, state_root=b"\x00" * 32)) == "wrong_state_root"
    inflated = dataclasses.replace(c.ledger, emission=c.ledger.emission * 2)
    assert _code(dataclasses.replace(c, ledger=inflated)) == "wrong_emission"


def _with(c: EpochContent, name: str, *extra: wire.Envelope) -> EpochContent:
    """``c`` with ``extra`` envelopes added to list ``name``, kept in canonical order."""
    items = tuple(sorted((*getattr(c, name), *extra), key=envelope_id))
    return dataclasses.replace(c, **{name: items})


def test_invalid_or_duplicate_proofs_are_rejected() -> None:
    c = _valid()
    # Witness 10's honest report of beacon 0 swapped for a physically impossible one.
    bid = radio.beacon_id(c.beacons[0])
    w10 = RADIO_KEYS[10].public_key
    others = tuple(r for r in c.reports if not (r.signer == w10 and _beacon_of(r) == bid))
    assert len(others) == len(c.reports) - 1
    loud = report(RADIO_KEYS[10], c.beacons[0], rssi=2_000)
    assert _code(_with(dataclasses.replace(c, reports=others), "reports", loud)) == "rssi_above_fspl_bound"
    # A second, different report by a witness that already reported: duplicate.
    assert _code(_with(c, "reports", report(RADIO_KEYS[10], c.beacons[0], rssi=-11_500))) == "duplicate"
    # The very same envelope twice breaks the strictly increasing order.
    assert _code(_with(c, "reports", c.reports[0])) == "not_canonical"
    assert _code(_with(c, "beacons", beacon(RADIO_KEYS[0], nonce=5))) == "beacon_limit"
    orphan = report(RADIO_KEYS[6], beacon(RADIO_KEYS[9], nonce=9))
    assert _code(_with(c, "reports", orphan)) == "unknown_beacon"
    assert _code(_with(c, "beacons", beacon(RADIO_KEYS[4], epoch=EPOCH + 1))) == "wrong_epoch"
    assert _code(dataclasses.replace(c, evidence=(b"x",))) == "malformed"


def test_a_check_served_by_the_pools_verdicts_decides_as_the_full_check() -> None:
    memo = ReportVerdicts()
    params = dataclasses.replace(PARAMS, reports=memo)
    built = build(ledger(), params)  # the builder judges each report once, as the pool does
    c = wire.decode_as(wire.encode(built.content), EpochContent)  # the bytes a validator receives
    misses = memo.misses
    changes = check_content(ledger(), c, params)
    assert memo.misses == misses and memo.hits >= len(c.reports) > 10
    assert changes == check_content(ledger(), c, PARAMS)
    # The rejections, each with every other report served from memory.
    bid = radio.beacon_id(c.beacons[0])
    w10 = RADIO_KEYS[10].public_key
    others = tuple(r for r in c.reports if not (r.signer == w10 and _beacon_of(r) == bid))
    without = dataclasses.replace(c, reports=others)
    loud = report(RADIO_KEYS[10], c.beacons[0], rssi=2_000)
    assert _code(_with(without, "reports", loud), params) == "rssi_above_fspl_bound"
    second = report(RADIO_KEYS[10], c.beacons[0], rssi=-11_500)
    assert _code(_with(c, "reports", second), params) == "duplicate"
    assert _code(_with(c, "reports", c.reports[0]), params) == "not_canonical"
    forged = dataclasses.replace(second, signature=c.reports[0].signature)
    assert _code(_with(without, "reports", forged), params) == "bad_signature"


def _with_witness_10_sold_to_the_beaconer_of(beacon_env: wire.Envelope) -> MemoryLedger:
    """The genesis ledger with witness 10 owned by the beaconer: its report is ``same_owner``."""
    w10 = RADIO_KEYS[10].public_key
    beaconer = next(d for d in _devices() if d.device_id == beacon_env.signer)
    devices = [dataclasses.replace(d, owner=beaconer.owner) if d.device_id == w10 else d for d in _devices()]
    initial = dataclasses.replace(_initial(), devices=tuple(sorted(devices, key=lambda d: d.device_id)))
    other = MemoryLedger()
    other.commit(compute_genesis_changes(other, initial), b"")
    return other


def test_a_check_on_another_registry_decides_as_the_full_check_with_the_rest_from_memory() -> None:
    memo = ReportVerdicts()
    params = dataclasses.replace(PARAMS, reports=memo)
    c = wire.decode_as(wire.encode(build(ledger(), params).content), EpochContent)  # memo: ledger A
    # Ledger B: witness 10 now belongs to beaconer 0's owner, so its report of beacon 0 is refused.
    other = _with_witness_10_sold_to_the_beaconer_of(c.beacons[0])
    with pytest.raises(Reject) as full:
        check_content(other, c, PARAMS)
    assert full.value.code == "same_owner"
    hits = memo.hits
    with pytest.raises(Reject) as served:
        check_content(other, c, params)
    assert served.value.code == "same_owner" and memo.hits > hits


def test_reordered_content_is_not_canonical() -> None:
    c = _valid()
    assert _code(dataclasses.replace(c, reports=tuple(reversed(c.reports)))) == "not_canonical"
    assert _code(dataclasses.replace(c, beacons=tuple(reversed(c.beacons)))) == "not_canonical"


def test_crowded_beacon_keeps_the_best_tickets_and_content_fits() -> None:
    view = ledger()
    items = proofs(view)
    uncapped = build_content(view, epoch=EPOCH, txs=(), evidence=(), params=PARAMS, **items).content
    valid = [
        sum(1 for r in uncapped.reports if _beacon_of(r) == radio.beacon_id(b)) for b in uncapped.beacons
    ]
    assert all(v > 4 for v in valid)
    params = dataclasses.replace(PARAMS, max_reports_per_beacon=4)
    built = build_content(view, epoch=EPOCH, txs=(), evidence=(), params=params, **items)
    assert len(built.content.reports) == 3 * 4
    # Every valid report over the cap is dropped as such (invalid ones arriving after the cap too).
    assert sum(1 for d in built.dropped if d.code == "too_many_reports") >= sum(v - 4 for v in valid)
    kept = {(_beacon_of(r), r.signer) for r in built.content.reports}
    prev = view.last_certificate_hash()
    for b in built.content.beacons:
        bid, beacon = radio.beacon_id(b), wire.decode_as(b.body, radio.Beacon)
        ranked = sorted(
            (wire.decode_as(r.body, radio.WitnessReport) for r in uncapped.reports if _beacon_of(r) == bid),
            key=lambda rep: report_ticket(prev, beacon, rep.witness),
        )
        # The inclusion ticket is the rewards lottery's: what is kept is what the lottery rewards first.
        assert report_ticket(prev, beacon, ranked[0].witness) == lottery_ticket(
            prev, beacon.epoch, beacon.device, ranked[0].witness
        )
        assert {(bid, rep.witness) for rep in ranked[:4]} == {k for k in kept if k[0] == bid}
    check_content(ledger(), built.content, params)
    extra = next(r for r in uncapped.reports if r not in built.content.reports)
    with pytest.raises(Reject, match="too_many_reports"):
        check_content(ledger(), _with(built.content, "reports", extra), params)


def test_oversized_content_is_refused_and_the_builder_stays_under_budget() -> None:
    c = _valid()
    size = len(wire.encode(c))
    with pytest.raises(Reject, match="too_large"):
        check_content(ledger(), c, dataclasses.replace(PARAMS, max_content_bytes=size - 1))
    tight = dataclasses.replace(PARAMS, max_content_bytes=size // 2)
    built = build(ledger(), params=tight)
    assert len(wire.encode(built.content)) <= tight.max_content_bytes
    assert any(d.code == "over_budget" for d in built.dropped)
    check_content(ledger(), built.content, tight)


def test_failed_compute_claims_earn_nothing() -> None:
    view = ledger()
    items = proofs(view)
    items["attestations"] = attestations(view, passed=False)
    built = build_content(view, epoch=EPOCH, txs=(), evidence=(), params=PARAMS, **items)
    paid = {r.account for r in built.content.ledger.rewards}
    assert s.key("value-powner-0").public_key not in paid
    assert sum(r.amount for r in built.content.ledger.rewards) == EMISSION  # radio takes the whole pool


def test_content_checks_identically_on_an_lmdb_store(tmp_path: Path) -> None:
    built = build(ledger())
    store = LedgerStore.open(tmp_path / "data")
    try:
        initial_changes = store.read(lambda v: compute_genesis_changes(v, _initial()))
        store.commit_genesis(initial_changes)
        assert store.read(lambda v: [d.device_id for d in v.iter_devices()]) == sorted(DEVICES)
        changes = store.read(lambda v: check_content(v, built.content, PARAMS))
        assert changes.root == built.content.state_root
    finally:
        store.close()


def _judge(evidence: bytes, view: object, network_id: str) -> JudgedEvidence:
    """A toy judge: evidence is ``validator ‖ u64 epoch of the misbehaviour``; 10% slash."""
    validator, epoch = evidence[:32], int.from_bytes(evidence[32:40], "big")
    return JudgedEvidence(Slash(validator, 1_000, hashlib.blake2b(evidence, digest_size=32).digest()), epoch)


def _evidence(validator: int, epoch: int) -> bytes:
    return VALIDATORS[validator].public_key + epoch.to_bytes(8, "big")


def _build_empty(view: MemoryLedger, epoch: int, evidence: tuple[bytes, ...], params: ValueParams):  # type: ignore[no-untyped-def]
    return build_content(
        view, epoch=epoch, beacons=(), reports=(), attestations=(), txs=(), evidence=evidence, params=params
    )


def test_evidence_is_admissible_once_and_only_while_young() -> None:
    params = dataclasses.replace(PARAMS, judge_evidence=_judge)
    view = ledger()
    first = _build_empty(view, 1, (_evidence(0, 0),), params)
    assert first.dropped == () and first.changes.burned == 100 * MICRO
    view.commit(first.changes, b"certificate-1")
    # Epoch 2: the same evidence again is dropped by the proposer and refused by validators.
    again = _build_empty(view, 2, (_evidence(0, 0), _evidence(1, 2), _evidence(2, 1)), params)
    assert sorted(d.code for d in again.dropped) == ["evidence_reused", "evidence_too_early"]
    assert len(again.content.evidence) == 1  # validator 2's, of epoch 1
    # Replay the used evidence, in canonical order so only the reuse rule can object.
    pairs = sorted(
        [
            *zip(again.content.evidence, again.content.ledger.slashes, strict=True),
            *zip(first.content.evidence, first.content.ledger.slashes, strict=True),
        ]
    )
    replayed = dataclasses.replace(
        again.content,
        evidence=tuple(e for e, _ in pairs),
        ledger=dataclasses.replace(again.content.ledger, slashes=tuple(sl for _, sl in pairs)),
    )
    with pytest.raises(Reject) as info:
        check_content(view, replayed, params)
    assert info.value.code == "evidence_reused"
    view.commit(again.changes, b"certificate-2")
    # Epoch 5: evidence of epoch 1 is older than EVIDENCE_MAX_AGE_EPOCHS (3).
    for epoch in (3, 4):
        view.commit(_build_empty(view, epoch, (), params).changes, b"certificate-%d" % epoch)
    late = _build_empty(view, 5, (_evidence(3, 1), _evidence(3, 2)), params)
    assert [d.code for d in late.dropped] == ["evidence_too_old"]
    assert len(late.content.evidence) == 1


def test_equivocation_evidence_is_judged_included_and_slashed() -> None:
    from depin_p2p.consensus.state import Prevote, make_evidence  # noqa: PLC0415

    view = ledger()
    first = _build_empty(view, 1, (), PARAMS)
    view.commit(first.changes, b"certificate-1")
    # Validator 0 prevoted two different values in epoch 1, round 0.
    a = wire.seal(Prevote(1, 0, b"\x01" * 32), VALIDATORS[0], NET)
    b = wire.seal(Prevote(1, 0, b"\x02" * 32), VALIDATORS[0], NET)
    evidence = wire.encode(make_evidence(a, b))
    built = _build_empty(view, 2, (evidence,), PARAMS)
    assert built.dropped == ()
    assert [s.validator for s in built.content.ledger.slashes] == [VALIDATORS[0].public_key]
    assert built.changes.burned == 1_000 * MICRO // 10  # 10 % of its 1 000-token stake
    check_content(view, built.content, PARAMS)
    view.commit(built.changes, b"certificate-2")
    # The same evidence cannot slash twice; honest votes are not evidence.
    assert {d.code for d in _build_empty(view, 3, (evidence,), PARAMS).dropped} == {"evidence_reused"}
    honest = wire.encode(make_evidence(a, wire.seal(Prevote(1, 1, b"\x02" * 32), VALIDATORS[0], NET)))
    assert {d.code for d in _build_empty(view, 3, (honest,), PARAMS).dropped} == {"not_conflicting"}


def test_checked_values_serve_a_check_only_on_the_same_bytes_state_and_parameters() -> None:
    memo = CheckedValues(capacity=2)
    c = _valid()
    encoded = wire.encode(c)
    first = memo.check(ledger(), c, PARAMS, encoded=encoded)
    assert first == check_content(ledger(), c, PARAMS)
    # Another node with an equal ledger (another object): served, the same changes.
    assert memo.check(ledger(), c, PARAMS, encoded=encoded) is first and (memo.hits, memo.misses) == (1, 1)
    # The same bytes on another state are checked afresh, and decide as the full check there.
    other = _with_witness_10_sold_to_the_beaconer_of(c.beacons[0])
    with pytest.raises(Reject) as refused:
        memo.check(other, c, PARAMS, encoded=encoded)
    assert refused.value.code == "same_owner" and memo.misses == 2
    # ...and so are other parameters, and a refusal is not kept.
    with pytest.raises(Reject) as again:
        memo.check(other, c, PARAMS, encoded=encoded)
    assert again.value.code == "same_owner" and memo.misses == 3
    richer = dataclasses.replace(PARAMS, emission_per_epoch=EMISSION * 2)
    with pytest.raises(Reject) as wrong:
        memo.check(ledger(), c, richer, encoded=encoded)
    assert wrong.value.code == "wrong_emission" and memo.misses == 4
    # Another certificate hash behind the same state root is another state too.
    behind = ledger()
    behind.certificate_hash = b"\x01" * 32
    with pytest.raises(Reject) as prev:
        memo.check(behind, c, PARAMS, encoded=encoded)
    assert prev.value.code == "wrong_prev_certificate" and memo.misses == 5


def test_checked_values_keep_at_most_their_capacity_oldest_dropped_first() -> None:
    memo = CheckedValues(capacity=1)
    c = _valid()
    empty = _build_empty(ledger(), EPOCH, (), PARAMS).content
    memo.check(ledger(), c, PARAMS, encoded=wire.encode(c))
    memo.check(ledger(), empty, PARAMS, encoded=wire.encode(empty))
    memo.check(ledger(), c, PARAMS, encoded=wire.encode(c))
    assert (memo.hits, memo.misses) == (0, 3)
    memo.check(ledger(), c, PARAMS, encoded=wire.encode(c))
    assert (memo.hits, memo.misses) == (1, 3)
