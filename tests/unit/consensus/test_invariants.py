"""Invariants of the pure core under arbitrary interleavings of messages and timeouts (hypothesis).

The pool holds everything three other validators could send in rounds 0-2
(two competing values, nil, conflicting votes included); hypothesis picks the
order, repetitions and the timeouts. Whatever it picks, one instance:

* asks to sign at most one prevote and one precommit per round;
* precommits a value only with 2f+1 prevotes for it in that round already counted;
* prevotes a value other than its lock only on a proposal whose valid round is
  at least the lock's round, backed by 2f+1 prevotes of that valid round;
* never moves its locked round backwards, and decides at most once.
"""

from __future__ import annotations

import hashlib

from hypothesis import Phase, event, find, given, settings
from hypothesis import strategies as st

from depin_p2p import wire
from depin_p2p.consensus import transition
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    BuildValue,
    Candidate,
    Decide,
    EpochState,
    Params,
    Precommit,
    Prevote,
    Proposal,
    Rules,
    SignProposal,
    SignVote,
    TimeoutKind,
    Timeouts,
    ValidatorSet,
    is_quorum,
    proposer_for,
    value_id_of,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ValidationError
from depin_p2p.model import Validator

NET = "inv-net"
EPOCH = 2
KEYS = [KeyPair.from_seed(hashlib.blake2b(b"inv%d" % i, digest_size=32).digest()) for i in range(4)]
VALS = ValidatorSet.of([Validator(k.public_key, 1) for k in KEYS])
BY_ADDR = {k.public_key: k for k in KEYS}
ME = KEYS[1]  # proposes in neither round 0 nor 1, so the pool has proposals for both
VALUES = [Candidate(EPOCH, GENESIS_PREV_HASH, v) for v in (b"a", b"b")]
IDS = [value_id_of(c) for c in VALUES]
ROUNDS = range(2)  # few rounds and values, so random interleavings do reach polkas, locks, decisions


def _pool() -> list[wire.Envelope]:
    pool = []
    for r in ROUNDS:
        proposer = BY_ADDR[proposer_for(VALS, GENESIS_PREV_HASH, EPOCH, r)]
        if proposer is not ME:
            for cand in VALUES:
                for vr in (None, *range(r)):
                    pool.append(wire.seal(Proposal(EPOCH, r, cand, vr), proposer, NET))
        for k in KEYS:
            if k is ME:
                continue
            for vid in (*IDS, None):
                pool.append(wire.seal(Prevote(EPOCH, r, vid), k, NET))
                pool.append(wire.seal(Precommit(EPOCH, r, vid), k, NET))
    return pool


POOL = _pool()
TIMEOUTS = [(kind, r) for kind in TimeoutKind for r in ROUNDS]
Step = tuple[int, int]  # ("message", index) or ("timeout", index), encoded as (0|1, index)


def _prevote_power(state: EpochState, round_: int, vid: bytes | None) -> int:
    return sum(
        VALS.power_of(a)
        for a, entries in state.prevotes.get(round_, {}).items()
        if any(e.value_id == vid for e in entries)
    )


def _recounted(state: EpochState) -> tuple[dict[tuple[bool, int, object], int], dict[int, int]]:
    """The running power sums, re-summed from the votes the state holds (what the core no longer does)."""
    tallies: dict[tuple[bool, int, object], int] = {}
    heard: dict[int, set[bytes]] = {}
    for is_prevote, votes in ((True, state.prevotes), (False, state.precommits)):
        for round_, by_signer in votes.items():
            for addr, entries in by_signer.items():
                heard.setdefault(round_, set()).add(addr)
                for key in {(is_prevote, round_, ...), *((is_prevote, round_, e.value_id) for e in entries)}:
                    tallies[key] = tallies.get(key, 0) + VALS.power_of(addr)
    for round_, (_, env) in state.proposals.items():
        heard.setdefault(round_, set()).add(env.signer)
    return tallies, {r: sum(VALS.power_of(a) for a in signers) for r, signers in heard.items()}


EARLY = [i for i, env in enumerate(POOL) if wire.decode(env.body).round == 0]  # type: ignore[attr-defined]
Schedule = tuple[list[int], list[Step]]

# First some round-0 messages only (so locks form in round 0), then anything, with timeouts.
SCHEDULES = st.tuples(
    st.lists(st.sampled_from(EARLY), max_size=40),
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, len(POOL) - 1)), min_size=20, max_size=120),
)


def run_schedule(schedule: Schedule, rules: Rules) -> str:
    """Drive one instance through ``schedule`` and summarise it; AssertionError on a broken invariant."""
    early, steps = schedule
    params = Params(NET, EPOCH, GENESIS_PREV_HASH, VALS, ME.public_key, timeouts=Timeouts(), rules=rules)
    state, effects = transition.start(params, 0)
    signed: dict[tuple[int, str], object] = {}
    decisions = 0
    now = 0

    def handle(effs: list[object]) -> None:
        nonlocal state, decisions
        for eff in effs:
            if isinstance(eff, BuildValue):
                state, more = transition.on_value(state, eff.round, b"mine", now)
                handle(list(more))
            elif isinstance(eff, SignProposal | SignVote):
                msg = eff.proposal if isinstance(eff, SignProposal) else eff.vote
                key = (msg.round, type(msg).__name__)
                assert key not in signed, f"asked to sign twice: {key}"
                signed[key] = msg
                if isinstance(msg, Precommit) and msg.value_id is not None:
                    assert is_quorum(_prevote_power(state, msg.round, msg.value_id), VALS.total)
                locked = state.locked_id  # a prevote for another value than the lock must unlock:
                unlocks = msg.value_id is not None and locked not in (None, msg.value_id)
                if isinstance(msg, Prevote) and unlocks:
                    vr = state.proposals[msg.round][0].valid_round
                    assert vr is not None and vr >= state.locked_round
                    assert is_quorum(_prevote_power(state, vr, msg.value_id), VALS.total)
                state, more = transition.on_message(state, wire.seal(msg, ME, NET), now)
                handle(list(more))
            elif isinstance(eff, Decide):
                decisions += 1

    handle(list(effects))
    for kind, index in [(1, i) for i in early] + steps:
        now += 10
        locked_before = state.locked_round
        if kind:
            try:
                state, effects = transition.on_message(state, POOL[index], now)
            except ValidationError:
                continue
        else:
            tkind, r = TIMEOUTS[index % len(TIMEOUTS)]
            state, effects = transition.on_timeout(state, tkind, r, now)
        handle(list(effects))
        assert (dict(state.tallies), dict(state.round_power)) == _recounted(state)
        assert state.locked_round >= locked_before
        assert decisions <= 1
    if state.decision is not None:
        assert state.decision.value_id in IDS or state.decision.candidate.value == b"mine"
    return f"locked={state.locked_round >= 0} decided={state.decision is not None} round={state.round}"


@settings(max_examples=200)
@given(SCHEDULES)
def test_core_invariants_hold_under_any_interleaving(schedule: Schedule) -> None:
    event(run_schedule(schedule, Rules()))


def test_the_invariants_catch_a_core_that_ignores_locks() -> None:
    def broken(schedule: Schedule) -> bool:
        try:
            run_schedule(schedule, Rules(respect_locks=False))
        except AssertionError:
            return True
        return False

    # Finding one is the point; shrinking it would only cost time.
    quick = settings(max_examples=2000, database=None, derandomize=True, phases=[Phase.generate])
    find(SCHEDULES, broken, settings=quick)
