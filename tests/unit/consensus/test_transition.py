"""The pure Tendermint core, driven by hand with real Ed25519 signatures."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from depin_p2p import wire
from depin_p2p.consensus import transition
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    BuildValue,
    Candidate,
    Decide,
    EpochState,
    Lock,
    Params,
    Precommit,
    Prevote,
    Proposal,
    ReportEvidence,
    Rules,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    Step,
    TimeoutKind,
    Timeouts,
    ValidatorSet,
    is_one_third_plus,
    is_quorum,
    proposer_for,
    value_id_of,
    verify_certificate,
    verify_evidence,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Ignore, Reject
from depin_p2p.model import Validator

NET = "unit-net"
KEYS = [KeyPair.from_seed(hashlib.blake2b(b"unit%d" % i, digest_size=32).digest()) for i in range(4)]
VALS = ValidatorSet.of([Validator(k.public_key, 1) for k in KEYS])
BY_ADDR = {k.public_key: k for k in KEYS}
EPOCH = 5
TIMEOUTS = Timeouts(propose_ms=300, prevote_ms=100, precommit_ms=100, delta_ms=50, retransmit_ms=1000)


def proposer_key(round_: int) -> KeyPair:
    return BY_ADDR[proposer_for(VALS, GENESIS_PREV_HASH, EPOCH, round_)]


def observer_key(round_: int) -> KeyPair:
    """A validator that does not propose in ``round_``: the node under test."""
    return next(k for k in KEYS if k is not proposer_key(round_))


def reject_bad(c: Candidate) -> None:
    if c.value.startswith(b"bad"):
        raise Reject("invalid_value")


def params(me: KeyPair, rules: Rules | None = None) -> Params:
    return Params(
        network_id=NET,
        epoch=EPOCH,
        prev_cert_hash=GENESIS_PREV_HASH,
        validators=VALS,
        me=me.public_key,
        validate_value=reject_bad,
        timeouts=TIMEOUTS,
        rules=rules or Rules(),
    )


def cand(value: bytes) -> Candidate:
    return Candidate(EPOCH, GENESIS_PREV_HASH, value)


def proposal(round_: int, value: bytes, valid_round: int | None = None) -> wire.Envelope:
    return wire.seal(Proposal(EPOCH, round_, cand(value), valid_round), proposer_key(round_), NET)


def prevote(key: KeyPair, round_: int, vid: bytes | None) -> wire.Envelope:
    return wire.seal(Prevote(EPOCH, round_, vid), key, NET)


def precommit(key: KeyPair, round_: int, vid: bytes | None) -> wire.Envelope:
    return wire.seal(Precommit(EPOCH, round_, vid), key, NET)


def feed(st: EpochState, *envs: wire.Envelope, now: int = 0) -> tuple[EpochState, list[object]]:
    effects: list[object] = []
    for env in envs:
        st, more = transition.on_message(st, env, now)
        effects.extend(more)
    return st, effects


def votes_of(effects: list[object]) -> list[Prevote | Precommit]:
    return [e.vote for e in effects if isinstance(e, SignVote)]


def others(me: KeyPair) -> list[KeyPair]:
    return [k for k in KEYS if k is not me]


# ---------------------------------------------------------------- arithmetic and rotation


def test_quorum_is_strictly_more_than_two_thirds() -> None:
    assert is_quorum(3, 4) and not is_quorum(2, 4)
    assert is_quorum(5, 7) and not is_quorum(4, 7)
    assert is_quorum(67, 100) and not is_quorum(66, 99)
    assert is_one_third_plus(2, 4) and not is_one_third_plus(1, 4)


def test_proposer_rotation_is_deterministic_and_weighted_by_power() -> None:
    vals = ValidatorSet.of([Validator(KEYS[0].public_key, 3), Validator(KEYS[1].public_key, 1)])
    picks = Counter(proposer_for(vals, GENESIS_PREV_HASH, 1, r) for r in range(4000))
    assert picks[KEYS[0].public_key] + picks[KEYS[1].public_key] == 4000
    assert 2800 < picks[KEYS[0].public_key] < 3200  # ~3/4
    again = [proposer_for(vals, GENESIS_PREV_HASH, 1, r) for r in range(50)]
    assert again == [proposer_for(vals, GENESIS_PREV_HASH, 1, r) for r in range(50)]
    # A different previous certificate reshuffles the rotation.
    other = [proposer_for(vals, b"\x01" * 32, 1, r) for r in range(50)]
    assert other != again


# ---------------------------------------------------------------- start, propose, timeouts


def test_proposer_asks_for_a_value_then_signs_a_proposal() -> None:
    me = proposer_key(0)
    st, eff = transition.start(params(me), 1000)
    assert BuildValue(EPOCH, 0) in eff
    st, eff = transition.on_value(st, 0, b"v", 1001)
    assert eff == [SignProposal(Proposal(EPOCH, 0, cand(b"v"), None))]


def test_start_schedules_growing_timeouts() -> None:
    me = observer_key(0)
    st, eff = transition.start(params(me), 1000)
    assert ScheduleTimeout(EPOCH, TimeoutKind.PROPOSE, 0, 1300) in eff
    st, eff = transition.start(params(me), 1000, start_round=2)
    assert ScheduleTimeout(EPOCH, TimeoutKind.PROPOSE, 2, 1400) in eff
    assert st.round == 2


def test_propose_timeout_prevotes_nil_and_prevote_timeout_precommits_nil() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    st, eff = transition.on_timeout(st, TimeoutKind.PROPOSE, 0, 300)
    assert votes_of(eff) == [Prevote(EPOCH, 0, None)] and st.step is Step.PREVOTE
    # 2f+1 prevotes of any kind start timeoutPrevote (line 34), once.
    st, eff = feed(st, *(prevote(k, 0, None if i else b"\x07" * 32) for i, k in enumerate(others(me))))
    timeouts = [e for e in eff if isinstance(e, ScheduleTimeout) and e.kind is TimeoutKind.PREVOTE]
    assert len(timeouts) == 1
    st, eff = transition.on_timeout(st, TimeoutKind.PREVOTE, 0, 500)
    assert votes_of(eff) == [Precommit(EPOCH, 0, None)] and st.step is Step.PRECOMMIT


def test_stale_timeouts_do_nothing() -> None:
    st, _ = transition.start(params(observer_key(0)), 0, start_round=1)
    assert transition.on_timeout(st, TimeoutKind.PROPOSE, 0, 999) == (st, [])


# ---------------------------------------------------------------- the happy path, to a certificate


def test_happy_path_decides_with_a_verifiable_certificate() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    vid = value_id_of(cand(b"good"))
    st, eff = feed(st, proposal(0, b"good"))
    assert votes_of(eff) == [Prevote(EPOCH, 0, vid)]
    st, eff = feed(st, *(prevote(k, 0, vid) for k in KEYS))
    assert votes_of(eff) == [Precommit(EPOCH, 0, vid)]
    assert st.locked_id == vid and st.locked_round == 0 and st.valid_round == 0
    lock = next(e.lock for e in eff if isinstance(e, SignVote))
    assert lock is not None and lock.candidate == cand(b"good")
    assert len(lock.pol) == 3  # the polka fired at the third prevote
    st, eff = feed(st, *(precommit(k, 0, vid) for k in KEYS[:3]))
    decided = [e for e in eff if isinstance(e, Decide)]
    assert len(decided) == 1
    cert = decided[0].certificate
    assert cert.value_id == vid and len(cert.signatures) == 3
    verify_certificate(cert, VALS, NET, GENESIS_PREV_HASH)
    assert wire.decode(wire.encode(cert)) == cert


def test_two_thirds_exactly_is_not_enough() -> None:
    vals6 = ValidatorSet.of([Validator(k.public_key, 3 if i < 2 else 1) for i, k in enumerate(KEYS)])
    assert vals6.total == 8
    me = KEYS[3]
    p = Params(NET, EPOCH, GENESIS_PREV_HASH, vals6, me.public_key, timeouts=TIMEOUTS)
    st, _ = transition.start(p, 0)
    # 3 + 1 + 1 = 5 of 8 is not > 2/3 (needs 6): no polka, no lock.
    st, eff = feed(st, *(prevote(k, 0, b"\x09" * 32) for k in KEYS[1:]))
    assert st.locked_round == -1 and not votes_of(eff)


def test_invalid_value_gets_a_nil_prevote() -> None:
    st, _ = transition.start(params(observer_key(0)), 0)
    st, eff = feed(st, proposal(0, b"bad value"))
    assert votes_of(eff) == [Prevote(EPOCH, 0, None)]


def test_a_value_for_another_chain_gets_a_nil_prevote() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    env = wire.seal(Proposal(EPOCH, 0, Candidate(EPOCH, b"\x05" * 32, b"x"), None), proposer_key(0), NET)
    st, eff = feed(st, env)
    assert votes_of(eff) == [Prevote(EPOCH, 0, None)]


# ---------------------------------------------------------------- locks


def _locked_on_a(me: KeyPair, rules: Rules | None = None) -> EpochState:
    """``me`` locked on value 'a' in round 0, then moved to round 1 without a decision."""
    st, _ = transition.start(params(me, rules), 0)
    vid = value_id_of(cand(b"a"))
    st, _ = feed(st, proposal(0, b"a"), *(prevote(k, 0, vid) for k in KEYS))
    assert st.locked_id == vid
    st, _ = feed(st, *(precommit(k, 0, None) for k in others(me)))
    st, _ = transition.on_timeout(st, TimeoutKind.PRECOMMIT, 0, 1000)
    assert st.round == 1 and st.step is Step.PROPOSE
    return st


def test_a_locked_node_prevotes_nil_on_a_fresh_other_value() -> None:
    me = next(k for k in KEYS if k is not proposer_key(0) and k is not proposer_key(1))
    st = _locked_on_a(me)
    st, eff = feed(st, proposal(1, b"b"))
    assert votes_of(eff) == [Prevote(EPOCH, 1, None)]


def test_ignoring_locks_is_a_rule_tests_can_switch_off() -> None:
    me = next(k for k in KEYS if k is not proposer_key(0) and k is not proposer_key(1))
    st = _locked_on_a(me, Rules(respect_locks=False))
    st, eff = feed(st, proposal(1, b"b"))
    assert votes_of(eff) == [Prevote(EPOCH, 1, value_id_of(cand(b"b")))]


def test_a_later_polka_unlocks_through_valid_round() -> None:
    # Locked on 'a' in round 0; round 2 re-proposes 'b' with a polka from round 1: line 28 accepts.
    me = next(k for k in KEYS if k not in (proposer_key(0), proposer_key(1), proposer_key(2)))
    st = _locked_on_a(me)
    vid_b = value_id_of(cand(b"b"))
    st, _ = feed(st, *(prevote(k, 1, vid_b) for k in others(me)))
    st, _ = transition.on_timeout(st, TimeoutKind.PROPOSE, 1, 2000)
    st, _ = feed(st, *(precommit(k, 1, None) for k in others(me)))
    st, _ = transition.on_timeout(st, TimeoutKind.PRECOMMIT, 1, 3000)
    assert st.round == 2
    st, eff = feed(st, proposal(2, b"b", valid_round=1))
    assert votes_of(eff) == [Prevote(EPOCH, 2, vid_b)]


def test_a_restored_lock_survives_a_restart() -> None:
    me = next(k for k in KEYS if k is not proposer_key(0) and k is not proposer_key(1))
    first = _locked_on_a(me)
    lock = Lock(first.locked_round, first.locked_id or b"", first.valid_value, ())
    st, _ = transition.start(params(me), 0, lock=lock, start_round=1)
    st, eff = feed(st, proposal(1, b"b"))
    assert votes_of(eff) == [Prevote(EPOCH, 1, None)]


# ---------------------------------------------------------------- round skip, evidence, intake


def test_f_plus_one_messages_of_a_higher_round_skip_to_it() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    ahead = [k for k in others(me)][:2]
    st, _ = feed(st, prevote(ahead[0], 3, None))
    assert st.round == 0  # one of four is not > 1/3
    st, _ = feed(st, precommit(ahead[1], 3, None))
    assert st.round == 3


def test_a_double_vote_yields_verifiable_evidence_and_is_counted_once() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    liar = others(me)[0]
    st, _ = feed(st, prevote(liar, 0, None))
    st, eff = feed(st, prevote(liar, 0, b"\x02" * 32))
    ev = [e.evidence for e in eff if isinstance(e, ReportEvidence)]
    assert len(ev) == 1
    assert verify_evidence(ev[0], VALS, NET) == liar.public_key
    with pytest.raises(Ignore, match="duplicate"):
        feed(st, prevote(liar, 0, b"\x03" * 32))  # a third version is not even stored


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        (lambda: wire.seal(Prevote(EPOCH, 0, None), KEYS[1], "other-net"), Reject, "wrong_network"),
        (lambda: wire.seal(Prevote(EPOCH + 1, 0, None), KEYS[1], NET), Ignore, "wrong_epoch"),
        (lambda: wire.seal(Prevote(EPOCH, 999, None), KEYS[1], NET), Ignore, "round_too_far"),
        (
            lambda: wire.seal(Prevote(EPOCH, 0, None), KeyPair.from_seed(b"\x09" * 32), NET),
            Reject,
            "unknown_validator",
        ),
        (
            lambda: wire.seal(Proposal(EPOCH, 0, cand(b"x"), None), observer_key(0), NET),
            Reject,
            "wrong_proposer",
        ),
        (
            lambda: wire.seal(Proposal(EPOCH, 0, cand(b"x"), 0), proposer_key(0), NET),
            Reject,
            "bad_valid_round",
        ),
    ],
)
def test_intake_codes(make: object, error: type[Exception], code: str) -> None:
    st, _ = transition.start(params(observer_key(0)), 0)
    with pytest.raises(error) as info:
        feed(st, make())  # type: ignore[operator]
    assert info.value.code == code  # type: ignore[attr-defined]


def test_a_tampered_vote_is_rejected() -> None:
    st, _ = transition.start(params(observer_key(0)), 0)
    good = prevote(KEYS[1], 0, None)
    forged = wire.Envelope(good.network_id, KEYS[2].public_key, good.signature, good.body)
    with pytest.raises(Reject, match="bad_signature"):
        feed(st, forged)


def test_an_observer_never_asks_to_sign() -> None:
    p = params(KEYS[0])
    p = Params(p.network_id, p.epoch, p.prev_cert_hash, p.validators, None, timeouts=TIMEOUTS)
    st, eff = transition.start(p, 0)
    vid = value_id_of(cand(b"good"))
    st, more = feed(st, proposal(0, b"good"), *(prevote(k, 0, vid) for k in KEYS))
    st, last = feed(st, *(precommit(k, 0, vid) for k in KEYS))
    everything = eff + more + last
    assert not [e for e in everything if isinstance(e, SignVote | SignProposal | BuildValue)]
    assert any(isinstance(e, Decide) for e in everything)


def test_certificate_from_a_peer_decides_a_node_that_missed_the_votes() -> None:
    me = observer_key(0)
    st, _ = transition.start(params(me), 0)
    vid = value_id_of(cand(b"good"))
    helper, _ = transition.start(params(others(me)[0]), 0)
    helper, _ = feed(helper, proposal(0, b"good"), *(precommit(k, 0, vid) for k in KEYS))
    assert helper.decision is not None
    st, eff = transition.on_certificate(st, helper.decision, 10)
    assert eff == [Decide(helper.decision)]
    with pytest.raises(Ignore, match="already_decided"):
        transition.on_certificate(st, helper.decision, 11)


def test_a_restored_lock_brings_back_its_value_and_proof_of_lock() -> None:
    me = next(k for k in KEYS if k is not proposer_key(0) and k is not proposer_key(1))
    vid = value_id_of(cand(b"a"))
    pol = tuple(prevote(k, 0, vid) for k in KEYS[:3])
    st, eff = transition.start(params(me), 0, lock=Lock(0, vid, cand(b"a"), pol), start_round=1)
    assert (st.locked_round, st.locked_id, st.valid_round, st.valid_value) == (0, vid, 0, cand(b"a"))
    assert set(transition.polka_envelopes(st)) == set(pol)  # re-sent so peers accept a re-proposal
    assert st.round == 1 and not votes_of(eff)


def test_timeouts_for_an_epoch_keep_the_defaults_to_12_s_and_stretch_beyond() -> None:
    for epoch_ms in (2_000, 5_000, 10_000, 12_000):
        assert Timeouts.for_epoch(epoch_ms) == Timeouts()
    long = Timeouts.for_epoch(32_000)
    got = (long.propose_ms, long.prevote_ms, long.precommit_ms, long.delta_ms)
    assert got == (8_000, 2_000, 2_000, 1_000)
    assert long.retransmit_ms == Timeouts().retransmit_ms
    # A proposer that is down costs a quarter of the epoch in round 0; round 1 still fits the epoch.
    assert long.duration(TimeoutKind.PROPOSE, 0) + long.duration(TimeoutKind.PROPOSE, 1) < 32_000
