"""The Tendermint upon-rules for one epoch, as pure functions. [pure]

A faithful transcription of Algorithm 1 of Buchman, Kwon, Milosevic, "The
latest gossip on BFT consensus" (2018); line numbers below are the paper's.
Inputs are handlers ``on_*(state, input, now_ms) -> (state, effects)``; the
shell executes the effects in order (see :mod:`depin_p2p.consensus.state`).

After every input the rules are re-evaluated until none applies, which is
the paper's "upon ... executed atomically". The rules that say "for the
first time" are guarded by ``state.fired``.

Two deliberate additions, neither touching safety:

* every node (the proposer too) schedules timeoutPropose, so a proposer
  whose own proposal never comes back (signer refused, value not built)
  still moves on;
* a RETRANSMIT timer re-broadcasts the node's own messages of the current
  and previous round, of any older round a peer was seen still sending in,
  and the prevotes that justify its valid round, because the harness
  and real links lose messages before GST and the paper assumes gossip that
  never loses them.

Signing is an effect (``SignProposal``/``SignVote``): the shell's signer
persists its sign-state, signs, broadcasts and feeds the envelope back with
:func:`on_message`, which is where the node's own vote gets counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from depin_p2p import wire
from depin_p2p.consensus.state import (
    MAX_ROUNDS_AHEAD,
    MAX_VOTES_PER_VALIDATOR,
    Broadcast,
    BuildValue,
    Candidate,
    Certificate,
    Decide,
    Effect,
    EpochState,
    Lock,
    Params,
    Precommit,
    Prevote,
    Proposal,
    ReportEvidence,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    Step,
    TimeoutKind,
    VoteEntry,
    commit_sig_of,
    is_one_third_plus,
    make_evidence,
    proposer_for,
    value_id_of,
    verify_certificate,
)
from depin_p2p.errors import CodecError, Ignore, Reject

Result = tuple[EpochState, list[Effect]]
PREVOTES, PRECOMMITS = True, False  # the first part of a tally's key


# --------------------------------------------------------------------------
# Entry points


def start(params: Params, now_ms: int, *, lock: Lock | None = None, start_round: int = 0) -> Result:
    """Create the instance for ``params.epoch`` and run StartRound(start_round).

    Args:
        params: the epoch's fixed parameters.
        now_ms: current time, for timeouts.
        lock: the lock restored from the signer after a restart (None on a fresh start).
        start_round: resume at the round of the last signed message after a restart.
    """
    st = EpochState(params)
    if lock is not None:
        st = replace(st, locked_round=lock.round, locked_id=lock.value_id)
        if lock.candidate is not None and value_id_of(lock.candidate) == lock.value_id:
            # Line 36 set validValue/validRound together with the lock.
            st = replace(st, valid_value=lock.candidate, valid_round=lock.round)
        for env in lock.pol:  # recorded, not acted on: the rules run once the round has started
            msg = _decode_vote(env)
            if msg is not None and msg.epoch == params.epoch and params.validators.power_of(env.signer):
                try:
                    st, _ = _record_vote(st, msg, env)
                except (Ignore, Reject):
                    continue
    st, effects = _start_round(st, start_round, now_ms)
    return _settle(st, effects, now_ms)


def on_value(state: EpochState, round_: int, value: bytes, now_ms: int) -> Result:
    """Answer to ``BuildValue``: propose ``value`` if this node still proposes in ``round_``.

    A stale answer (round moved on, step passed, already decided) does nothing.
    """
    p = state.params
    if (
        state.decision is not None
        or round_ != state.round
        or state.step is not Step.PROPOSE
        or state.round in state.proposals
        or p.me is None
        or proposer_for(p.validators, p.prev_cert_hash, p.epoch, round_) != p.me
    ):
        return state, []
    if state.valid_value is not None:  # a polka appeared meanwhile: line 15 wins
        proposal = Proposal(p.epoch, round_, state.valid_value, state.valid_round)
    else:
        proposal = Proposal(p.epoch, round_, Candidate(p.epoch, p.prev_cert_hash, value), None)
    return state, [SignProposal(proposal)]


def on_message(state: EpochState, env: wire.Envelope, now_ms: int) -> Result:
    """Handle a signed proposal or vote (a peer's, or this node's own fed back after signing).

    Raises:
        Ignore: ``wrong_epoch`` (the shell may buffer a future one or answer an
            old one with its certificate), ``round_too_far``, ``duplicate``.
        Reject: ``wrong_network``, ``malformed``, ``unexpected_type``,
            ``unknown_validator``, ``wrong_proposer``, ``bad_candidate``,
            ``bad_valid_round``, ``conflicting_proposal``, ``bad_signature``.

    A second, different vote of one validator for the same (round, step) is
    kept beside the first (each counts for its own value, as the paper's
    "received from 2f+1" does) and yields a ``ReportEvidence`` effect; a third
    is ignored.
    """
    p = state.params
    if env.network_id != p.network_id:
        raise Reject("wrong_network")
    try:
        msg = wire.decode(env.body)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None
    if not isinstance(msg, Proposal | Prevote | Precommit):
        raise Reject("unexpected_type", type(msg).__name__)
    if msg.epoch != p.epoch:
        raise Ignore("wrong_epoch", f"message for epoch {msg.epoch}, instance is {p.epoch}")
    if p.validators.power_of(env.signer) == 0:
        raise Reject("unknown_validator")
    if msg.round > state.round + MAX_ROUNDS_AHEAD:
        raise Ignore("round_too_far")
    if msg.round < state.round - 1 and msg.round not in state.lagging:
        state = replace(state, lagging=state.lagging | {msg.round})
    if isinstance(msg, Proposal):
        return _on_proposal(state, msg, env, now_ms)
    return _on_vote(state, msg, env, now_ms)


def on_timeout(state: EpochState, kind: TimeoutKind, round_: int, now_ms: int) -> Result:
    """A timeout scheduled by ``ScheduleTimeout`` fired (stale ones do nothing)."""
    if state.decision is not None or round_ != state.round:
        return state, []
    effects: list[Effect] = []
    if kind is TimeoutKind.PROPOSE and state.step is Step.PROPOSE:  # OnTimeoutPropose, line 57
        state = replace(state, step=Step.PREVOTE)
        effects = _vote(state, Prevote(state.params.epoch, round_, None))
    elif kind is TimeoutKind.PREVOTE and state.step is Step.PREVOTE:  # OnTimeoutPrevote, line 61
        state = replace(state, step=Step.PRECOMMIT)
        effects = _vote(state, Precommit(state.params.epoch, round_, None))
    elif kind is TimeoutKind.PRECOMMIT:  # OnTimeoutPrecommit, line 65
        state, effects = _start_round(state, round_ + 1, now_ms)
    elif kind is TimeoutKind.RETRANSMIT:
        rounds = sorted({round_ - 1, round_, *state.lagging} - {-1})
        envs = [e for r in rounds for e in own_envelopes(state, r)]
        effects = [Broadcast(e) for e in (*envs, *polka_envelopes(state))]
        state = replace(state, lagging=frozenset())
        at = now_ms + state.params.timeouts.duration(TimeoutKind.RETRANSMIT, round_)
        effects.append(ScheduleTimeout(state.params.epoch, TimeoutKind.RETRANSMIT, round_, at))
    return _settle(state, effects, now_ms)


def on_certificate(state: EpochState, cert: Certificate, now_ms: int) -> Result:
    """Decide from a certificate another node assembled (catch-up after missed messages).

    Raises:
        Ignore: ``wrong_epoch``, ``already_decided``.
        Reject: the codes of :func:`verify_certificate`, or ``invalid_value``.
    """
    p = state.params
    if cert.epoch != p.epoch:
        raise Ignore("wrong_epoch")
    if state.decision is not None:
        raise Ignore("already_decided")
    verify_certificate(
        cert, p.validators, p.network_id, p.prev_cert_hash, verify=p.verify, quorum=p.rules.quorum
    )
    state, ok = _check_value(state, cert.candidate)
    if not ok:
        raise Reject("invalid_value")
    state = replace(state, decision=cert)
    return state, [Decide(cert)]


def own_envelopes(state: EpochState, round_: int) -> list[wire.Envelope]:
    """This node's signed messages of ``round_``, to re-broadcast."""
    me = state.params.me
    if me is None:
        return []
    found = []
    prop = state.proposals.get(round_)
    if prop is not None and prop[1].signer == me:
        found.append(prop[1])
    for votes in (state.prevotes, state.precommits):
        found.extend(e.envelope for e in votes.get(round_, {}).get(me, ()))
    return found


def polka_envelopes(state: EpochState) -> list[wire.Envelope]:
    """The prevotes that justify ``valid_round`` (proof of lock), to re-broadcast.

    A proposal re-proposing a value with ``valid_round`` is only prevoted by
    nodes that have 2f+1 prevotes of that round (line 28); over lossy links
    they may have missed them, and the paper's gossip would have re-sent them.
    """
    if state.valid_round < 0 or state.valid_value is None:
        return []
    vid = value_id_of(state.valid_value)
    votes = state.prevotes.get(state.valid_round, {})
    return [e.envelope for entries in votes.values() for e in entries if e.value_id == vid]


# --------------------------------------------------------------------------
# Message intake


def _verify(state: EpochState, msg: Proposal | Prevote | Precommit, env: wire.Envelope) -> None:
    info = wire.info_of(type(msg))
    assert info.domain is not None
    data = wire.signing_bytes(state.params.network_id, info.domain, info.type_id, env.body)
    state.params.verify(env.signer, data, env.signature)


def _on_proposal(state: EpochState, msg: Proposal, env: wire.Envelope, now_ms: int) -> Result:
    p = state.params
    if env.signer != proposer_for(p.validators, p.prev_cert_hash, p.epoch, msg.round):
        raise Reject("wrong_proposer")
    if msg.candidate.epoch != msg.epoch:
        raise Reject("bad_candidate", "candidate is for another epoch")
    if msg.valid_round is not None and msg.valid_round >= msg.round:
        raise Reject("bad_valid_round")
    known = state.proposals.get(msg.round)
    if known is not None:
        if known[1].body == env.body:
            raise Ignore("duplicate")
        _verify(state, msg, env)
        raise Reject("conflicting_proposal", f"round {msg.round}")
    _verify(state, msg, env)
    heard = _heard_in(state, msg.round, env.signer)
    state = replace(state, proposals={**state.proposals, msg.round: (msg, env)})
    if not heard:
        state = _add_round_power(state, msg.round, env.signer)
    return _settle(state, [], now_ms)


def _heard_in(state: EpochState, round_: int, signer: bytes) -> bool:
    """Has ``signer`` a proposal, prevote or precommit of ``round_`` counted here already?"""
    prop = state.proposals.get(round_)
    return (
        signer in state.prevotes.get(round_, {})
        or signer in state.precommits.get(round_, {})
        or (prop is not None and prop[1].signer == signer)
    )


def _add_round_power(state: EpochState, round_: int, signer: bytes) -> EpochState:
    power = state.params.validators.power_of(signer)
    return replace(state, round_power={**state.round_power, round_: state.round_power.get(round_, 0) + power})


def _on_vote(state: EpochState, msg: Prevote | Precommit, env: wire.Envelope, now_ms: int) -> Result:
    state, effects = _record_vote(state, msg, env)
    return _settle(state, effects, now_ms)


def _record_vote(
    state: EpochState, msg: Prevote | Precommit, env: wire.Envelope
) -> tuple[EpochState, list[Effect]]:
    """Verify and store a vote; a second, different one of the same validator is evidence."""
    is_prevote = isinstance(msg, Prevote)
    votes = state.prevotes if is_prevote else state.precommits
    known = votes.get(msg.round, {}).get(env.signer, ())
    if any(k.envelope.body == env.body for k in known) or len(known) >= MAX_VOTES_PER_VALIDATOR:
        raise Ignore("duplicate")
    _verify(state, msg, env)
    effects: list[Effect] = []
    if known:
        effects.append(ReportEvidence(make_evidence(known[0].envelope, env)))
    heard = _heard_in(state, msg.round, env.signer)
    power = state.params.validators.power_of(env.signer)
    tallies = dict(state.tallies)
    keys: list[tuple[bool, int, object]] = []
    if not known:  # its first vote of this kind and round: counts for "any value"
        keys.append((is_prevote, msg.round, ...))
    if all(k.value_id != msg.value_id for k in known):  # counts once per value it voted for
        keys.append((is_prevote, msg.round, msg.value_id))
    for key in keys:
        tallies[key] = tallies.get(key, 0) + power
    entries = (*known, VoteEntry(msg.value_id, env))
    votes = {**votes, msg.round: {**votes.get(msg.round, {}), env.signer: entries}}
    state = replace(state, prevotes=votes) if is_prevote else replace(state, precommits=votes)
    state = replace(state, tallies=tallies)
    if not heard:
        state = _add_round_power(state, msg.round, env.signer)
    return state, effects


def _decode_vote(env: wire.Envelope) -> Prevote | Precommit | None:
    try:
        msg = wire.decode(env.body)
    except CodecError:
        return None
    return msg if isinstance(msg, Prevote | Precommit) else None


# --------------------------------------------------------------------------
# Helpers


def _vote(state: EpochState, vote: Prevote | Precommit, lock: Lock | None = None) -> list[Effect]:
    return [] if state.params.me is None else [SignVote(vote, lock)]


def _schedule(state: EpochState, kind: TimeoutKind, round_: int, now_ms: int) -> ScheduleTimeout:
    at = now_ms + state.params.timeouts.duration(kind, round_)
    return ScheduleTimeout(state.params.epoch, kind, round_, at)


def _check_value(state: EpochState, cand: Candidate) -> tuple[EpochState, bool]:
    """valid(v): chained to our previous certificate, for our epoch, and accepted by the ledger."""
    vid = value_id_of(cand)
    cached = state.validity.get(vid)
    if cached is not None:
        return state, cached
    p = state.params
    ok = cand.epoch == p.epoch and cand.prev_cert_hash == p.prev_cert_hash
    if ok:
        try:
            p.validate_value(cand)
        except Reject:
            ok = False
    return replace(state, validity={**state.validity, vid: ok}), ok


def _power(state: EpochState, is_prevote: bool, round_: int, value_id: object = ...) -> int:
    """Power of the validators with a vote of ``round_``; for one ``value_id`` if given (None = nil).

    A lookup in the running sums :func:`_record_vote` keeps, not a sum over the votes.
    """
    return state.tallies.get((is_prevote, round_, value_id), 0)


def _has_quorum(state: EpochState, is_prevote: bool, round_: int, value_id: object = ...) -> bool:
    p = state.params
    return p.rules.quorum(_power(state, is_prevote, round_, value_id), p.validators.total)


def _start_round(state: EpochState, round_: int, now_ms: int) -> Result:
    """StartRound(round), line 11."""
    p = state.params
    state = replace(state, round=round_, step=Step.PROPOSE)
    effects: list[Effect] = [
        _schedule(state, TimeoutKind.PROPOSE, round_, now_ms),
        _schedule(state, TimeoutKind.RETRANSMIT, round_, now_ms),
    ]
    if p.me is not None and proposer_for(p.validators, p.prev_cert_hash, p.epoch, round_) == p.me:
        if state.valid_value is not None:
            proposal = Proposal(p.epoch, round_, state.valid_value, state.valid_round)
            effects.append(SignProposal(proposal))
        else:
            effects.append(BuildValue(p.epoch, round_))
    return state, effects


# --------------------------------------------------------------------------
# The upon-rules. Each returns None when it does not apply.

Rule = Callable[[EpochState, int], Result | None]


def _rule_decide(state: EpochState, now_ms: int) -> Result | None:
    """Line 49: a proposal of any round plus 2f+1 precommits for its value: decide."""
    if state.decision is not None:
        return None
    for round_, (prop, _env) in sorted(state.proposals.items()):
        vid = value_id_of(prop.candidate)
        if not _has_quorum(state, PRECOMMITS, round_, vid):
            continue
        state, ok = _check_value(state, prop.candidate)
        if not ok:
            continue
        sigs = sorted(
            (
                commit_sig_of(e.envelope)
                for entries in state.precommits[round_].values()
                for e in entries
                if e.value_id == vid
            ),
            key=lambda s: s.validator,
        )
        cert = Certificate(prop.candidate, round_, tuple(sigs))
        return replace(state, decision=cert), [Decide(cert)]
    return None


def _rule_round_skip(state: EpochState, now_ms: int) -> Result | None:
    """Line 55: f+1 power of messages of a higher round: StartRound(that round)."""
    total = state.params.validators.total
    for round_ in sorted((r for r in state.round_power if r > state.round), reverse=True):
        if is_one_third_plus(state.round_power[round_], total):
            return _start_round(state, round_, now_ms)
    return None


def _prevote_for(state: EpochState, prop: Proposal, lock_ok: bool) -> Result:
    state, ok = _check_value(state, prop.candidate)
    vid = value_id_of(prop.candidate)
    if not state.params.rules.respect_locks:
        lock_ok = True
    choice = vid if ok and lock_ok else None
    state = replace(state, step=Step.PREVOTE)
    return state, _vote(state, Prevote(state.params.epoch, state.round, choice))


def _rule_proposal(state: EpochState, now_ms: int) -> Result | None:
    """Lines 22 and 28: prevote on the round's proposal."""
    if state.step is not Step.PROPOSE or state.round not in state.proposals:
        return None
    prop = state.proposals[state.round][0]
    vid = value_id_of(prop.candidate)
    vr = prop.valid_round
    if vr is None:  # line 22
        return _prevote_for(state, prop, state.locked_round == -1 or state.locked_id == vid)
    if vr < state.round and _has_quorum(state, PREVOTES, vr, vid):  # line 28
        return _prevote_for(state, prop, state.locked_round <= vr or state.locked_id == vid)
    return None


def _rule_prevote_any(state: EpochState, now_ms: int) -> Result | None:
    """Line 34: 2f+1 prevotes of any kind while in prevote: start timeoutPrevote."""
    key = ("timeout_prevote", state.round)
    if state.step is not Step.PREVOTE or key in state.fired:
        return None
    if not _has_quorum(state, PREVOTES, state.round):
        return None
    state = replace(state, fired=state.fired | {key})
    return state, [_schedule(state, TimeoutKind.PREVOTE, state.round, now_ms)]


def _rule_polka(state: EpochState, now_ms: int) -> Result | None:
    """Line 36: proposal plus 2f+1 prevotes for it, step ≥ prevote: lock (if prevote) and record valid."""
    key = ("polka", state.round)
    if state.step is Step.PROPOSE or key in state.fired or state.round not in state.proposals:
        return None
    prop = state.proposals[state.round][0]
    vid = value_id_of(prop.candidate)
    if not _has_quorum(state, PREVOTES, state.round, vid):
        return None
    state, ok = _check_value(state, prop.candidate)
    if not ok:
        return None
    state = replace(state, fired=state.fired | {key})
    effects: list[Effect] = []
    if state.step is Step.PREVOTE:
        state = replace(state, locked_id=vid, locked_round=state.round, step=Step.PRECOMMIT)
        polka = state.prevotes[state.round].values()
        pol = tuple(e.envelope for entries in polka for e in entries if e.value_id == vid)
        lock = Lock(state.round, vid, prop.candidate, pol)
        effects = _vote(state, Precommit(state.params.epoch, state.round, vid), lock)
    state = replace(state, valid_value=prop.candidate, valid_round=state.round)
    return state, effects


def _rule_nil_polka(state: EpochState, now_ms: int) -> Result | None:
    """Line 44: 2f+1 nil prevotes while in prevote: precommit nil."""
    if state.step is not Step.PREVOTE or not _has_quorum(state, PREVOTES, state.round, None):
        return None
    state = replace(state, step=Step.PRECOMMIT)
    return state, _vote(state, Precommit(state.params.epoch, state.round, None))


def _rule_precommit_any(state: EpochState, now_ms: int) -> Result | None:
    """Line 47: 2f+1 precommits of any kind: start timeoutPrecommit."""
    key = ("timeout_precommit", state.round)
    if key in state.fired or not _has_quorum(state, PRECOMMITS, state.round):
        return None
    state = replace(state, fired=state.fired | {key})
    return state, [_schedule(state, TimeoutKind.PRECOMMIT, state.round, now_ms)]


_RULES: tuple[Rule, ...] = (
    _rule_decide,
    _rule_round_skip,
    _rule_proposal,
    _rule_prevote_any,
    _rule_polka,
    _rule_nil_polka,
    _rule_precommit_any,
)


def _settle(state: EpochState, effects: list[Effect], now_ms: int) -> Result:
    """Apply upon-rules until none applies (each application changes the step, round or guards)."""
    effects = list(effects)
    while state.decision is None:
        for rule in _RULES:
            out = rule(state, now_ms)
            if out is not None:
                state, more = out
                effects.extend(more)
                break
        else:
            break
    return state, effects
