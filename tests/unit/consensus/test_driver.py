"""The epoch driver, fed inputs by hand and answered by a minimal executor (no I/O at all)."""

from __future__ import annotations

import hashlib

from depin_p2p import wire
from depin_p2p.consensus import driver as d
from depin_p2p.consensus.state import (
    GENESIS_PREV_HASH,
    Candidate,
    Certificate,
    Precommit,
    Prevote,
    Proposal,
    ValidatorSet,
    commit_sig_of,
    proposer_for,
    value_id_of,
)
from depin_p2p.crypto import KeyPair
from depin_p2p.model import Validator

NET = "driver-test"
KEYS = [KeyPair.from_seed(hashlib.blake2b(b"v%d" % i, digest_size=32).digest()) for i in range(4)]
VALIDATORS = ValidatorSet.of([Validator(k.public_key, 1) for k in KEYS])
CLOCK = d.EpochClock(origin_ms=1_000, length_ms=1_000)  # epoch e due at 1000 + 1000·e


class Executor:
    """Answers every request at once, as a shell would; records what was published and committed."""

    def __init__(self, drv: d.EpochDriver) -> None:
        self.drv = drv
        self.published: list[object] = []
        self.committed: list[Certificate] = []
        self.checked: list[bytes] = []

    def drain(self, now_ms: int) -> None:
        while (req := self.drv.next_request(now_ms)) is not None:
            answer = self.answer(req)
            if answer is not None:
                self.drv.feed(answer, now_ms)

    def answer(self, req: d.Request) -> d.Input | None:
        if isinstance(req, d.Publish):
            self.published.append(req.item)
        elif isinstance(req, d.OpenInstance):
            return d.InstanceOpened(req.epoch)
        elif isinstance(req, d.SignDurably):
            return d.Signed(wire.seal(req.message, KEYS[0], NET))
        elif isinstance(req, d.BuildRequest):
            return d.ValueBuilt(req.epoch, req.round, b"own value")
        elif isinstance(req, d.CheckValue):
            self.checked.append(req.candidate.value)
            return d.ValueChecked(value_id_of(req.candidate), True, "changes")
        elif isinstance(req, d.Commit):
            self.committed.append(req.certificate)
            assert req.payload == "changes"
            cert = req.certificate
            return d.Committed(cert.epoch, d.Head(cert.epoch + 1, cert.value_id, VALIDATORS))
        return None


def _driver() -> tuple[d.EpochDriver, Executor]:
    drv = d.EpochDriver(
        d.DriverConfig(NET, KEYS[0].public_key, CLOCK), d.Head(1, GENESIS_PREV_HASH, VALIDATORS)
    )
    return drv, Executor(drv)


def _decision(epoch: int = 1) -> list[wire.Envelope]:
    """A proposal by the right proposer and precommits for it by validators 1-3 (not us)."""
    by_key = {k.public_key: k for k in KEYS}
    me = KEYS[0].public_key
    round_ = next(r for r in range(16) if proposer_for(VALIDATORS, GENESIS_PREV_HASH, epoch, r) != me)
    cand = Candidate(epoch, GENESIS_PREV_HASH, b"their value")
    proposer = by_key[proposer_for(VALIDATORS, GENESIS_PREV_HASH, epoch, round_)]
    msgs = [wire.seal(Proposal(epoch, round_, cand, None), proposer, NET)]
    msgs += [wire.seal(Precommit(epoch, round_, value_id_of(cand)), k, NET) for k in KEYS[1:]]
    return msgs


def test_every_buffered_message_is_replayed_even_after_one_that_fails() -> None:
    drv, ex = _driver()
    drv.boot(500)
    ex.drain(500)
    outsider = KeyPair.from_seed(bytes(32))
    decision = _decision()
    proposal = wire.decode_as(decision[0].body, Proposal)
    not_proposer = next(k for k in KEYS[1:] if k.public_key != decision[0].signer)
    wrong = wire.seal(proposal, not_proposer, NET)  # validly signed, by a validator, but not its proposer
    for env in (wire.seal(Precommit(1, 0, None), outsider, NET), wrong, *decision):
        drv.feed(d.PeerMessage(env, "peer"), 1_500)
        ex.drain(1_500)
    assert drv.counters.messages_rejected == 1  # the non-validator's vote never entered the buffer
    assert not ex.committed
    drv.feed(d.EpochDue(1), 2_000)
    ex.drain(2_000)
    # The wrong proposer's proposal is rejected on replay, and the rest still decides the epoch.
    assert drv.counters.messages_rejected == 2
    assert [c.epoch for c in ex.committed] == [1]
    assert ex.committed[0].candidate.value == b"their value"
    assert drv.head.next_epoch == 2 and drv.state is None
    assert ex.published[-1] == ex.committed[0]  # the certificate is gossiped after the commit (as its notice)


def test_a_signature_is_verified_once_and_our_own_never() -> None:
    drv, ex = _driver()
    drv.boot(2_500)  # epoch 1 is already due: its instance starts at once
    ex.drain(2_500)
    assert drv.running_epoch == 1
    for env in _decision():
        for _ in range(3):  # the same envelope from three peers
            drv.feed(d.PeerMessage(env, "peer"), 2_600)
            ex.drain(2_600)
    assert [c.epoch for c in ex.committed] == [1]
    assert drv.counters.signatures.verified == 4  # one proposal, three precommits
    assert drv.signatures.verified == 4 and drv.signatures.marked >= 1  # ours entered, not checked
    assert drv.counters.signed >= 1  # we signed (a prevote at least) and never verified it


def test_a_proposal_waits_for_its_value_check_and_a_certificate_commits_without_an_instance() -> None:
    drv, ex = _driver()
    drv.boot(500)
    ex.drain(500)
    decision = _decision()
    cand = wire.decode_as(decision[0].body, Proposal).candidate
    sigs = sorted((commit_sig_of(env) for env in decision[1:]), key=lambda s: s.validator)
    round_ = wire.decode_as(decision[1].body, Precommit).round
    cert = Certificate(cand, round_, tuple(sigs))
    drv.feed(d.CertificateIn(cert, "peer"), 1_200)  # epoch 1 not due yet: verified, checked, committed
    ex.drain(1_200)
    assert ex.checked == [b"their value"]
    assert ex.committed == [cert] and drv.counters.synced == 1
    bad = Certificate(Candidate(2, cert.value_id, b"x"), 0, tuple(sigs))
    drv.feed(d.CertificateIn(bad, "liar"), 1_300)
    assert drv.next_request(1_300) == d.PenalisePeer("liar", "bad_signature")


# ------------------------------------------------ gossiped certificates (review findings)

import pytest  # noqa: E402

from depin_p2p.errors import Ignore, Reject  # noqa: E402


def _forged(epoch: int) -> Certificate:
    return Certificate(Candidate(epoch, GENESIS_PREV_HASH, b"forged %d" % epoch), 0, ())


def test_a_forged_certificate_for_the_next_epoch_is_a_proven_fault_at_the_gate() -> None:
    # Without signatures it is rejected by the topic validator: never forwarded, so no honest
    # relay carries it to a node that would then blame the relay.
    drv, _ = _driver()
    with pytest.raises(Reject):
        d.screen_certificate(drv, _forged(1), now_ms=2_500)


def test_a_certificate_past_our_clock_is_ignored_and_chases_nothing() -> None:
    # Epoch 2**64-1 cannot have been decided yet: no catch-up, no penalty, and it leaves no
    # trace that would stop the next honest certificate from starting one.
    drv, _ = _driver()
    with pytest.raises(Ignore, match="certificate_from_the_future"):
        d.screen_certificate(drv, _forged(2**64 - 1), now_ms=2_500)
    assert d.screen_certificate(drv, _forged(2), now_ms=2_500) == 2  # a peer ahead: catch up to 2


def test_an_old_certificate_is_ignored() -> None:
    drv = d.EpochDriver(d.DriverConfig(NET, KEYS[0].public_key, CLOCK), d.Head(3, b"\x01" * 32, VALIDATORS))
    with pytest.raises(Ignore, match="old_certificate"):
        d.screen_certificate(drv, _forged(2), now_ms=4_500)


def test_a_vote_far_past_our_clock_is_ignored_at_the_gate_and_one_within_reach_passes() -> None:
    # Found by the future-flood role: a validator's signed votes for epochs 1000+ ahead passed
    # the topic validator, were forwarded to every peer and left no record anywhere.
    drv, _ = _driver()
    running = CLOCK.latest_due(2_500) + 1
    near = Prevote(running + d.FUTURE_EPOCHS, 0, None)
    d.screen_epoch(drv, near, now_ms=2_500)  # no error: a skewed clock a little ahead is fine
    with pytest.raises(Ignore, match="vote_from_the_future"):
        d.screen_epoch(drv, Prevote(running + d.FUTURE_EPOCHS + 1, 0, None), now_ms=2_500)


# ------------------------------------------------ commit notices: certificates gossiped without the value

from depin_p2p.consensus.state import CommitNotice, certificate_from, notice_of  # noqa: E402


def _certificate(decision: list[wire.Envelope]) -> Certificate:
    cand = wire.decode_as(decision[0].body, Proposal).candidate
    sigs = sorted((commit_sig_of(env) for env in decision[1:]), key=lambda s: s.validator)
    return Certificate(cand, wire.decode_as(decision[1].body, Precommit).round, tuple(sigs))


def test_a_commit_is_gossiped_as_a_notice_of_a_few_hundred_bytes_whatever_the_value() -> None:
    cert = _certificate(_decision())
    big = Certificate(Candidate(1, GENESIS_PREV_HASH, bytes(800_000)), cert.round, cert.signatures)
    wire_form = d.gossip_form(big)
    assert isinstance(wire_form, CommitNotice)
    assert len(wire.encode(wire_form)) < 400 < 800_000 < len(wire.encode(big))
    assert certificate_from(wire_form, big.candidate) == big  # the value makes it whole again
    assert certificate_from(wire_form, cert.candidate) is None  # another value does not
    envelope = _decision()[0]
    assert d.gossip_form(envelope) is envelope  # votes and proposals go out as they are


def test_a_notice_of_a_heard_proposal_becomes_its_certificate_and_commits() -> None:
    drv, ex = _driver()
    drv.boot(2_500)
    ex.drain(2_500)
    decision = _decision()
    drv.feed(d.PeerMessage(decision[0], "proposer"), 2_600)  # the proposal, but none of the precommits
    ex.drain(2_600)
    cert = _certificate(decision)
    got, chase = d.screen_notice(drv, notice_of(cert), now_ms=2_700)
    assert got == cert and chase is None
    drv.feed(d.CertificateIn(got, "peer"), 2_700)
    ex.drain(2_700)
    assert ex.committed == [cert]


def test_a_notice_of_a_value_never_heard_fetches_the_certificate_from_its_sender() -> None:
    drv, ex = _driver()
    drv.boot(2_500)
    ex.drain(2_500)
    got, chase = d.screen_notice(drv, notice_of(_certificate(_decision())), now_ms=2_600)
    assert got is None and chase == 1  # catch up to epoch 1 (the service then forwards nothing)
    assert not ex.committed


def test_a_forged_notice_is_a_proven_fault_and_old_or_future_ones_are_ignored() -> None:
    drv, _ = _driver()
    cert = _certificate(_decision())
    forged = notice_of(cert)
    stolen = CommitNotice(1, GENESIS_PREV_HASH, b"\x07" * 32, forged.round, forged.signatures)
    with pytest.raises(Reject, match="bad_signature"):  # the signatures are not over this value id
        d.screen_notice(drv, stolen, now_ms=2_500)
    with pytest.raises(Reject, match="insufficient_power"):
        d.screen_notice(drv, CommitNotice(1, GENESIS_PREV_HASH, cert.value_id, 0, ()), now_ms=2_500)
    with pytest.raises(Ignore, match="certificate_from_the_future"):
        d.screen_notice(drv, notice_of(_forged(2**64 - 1)), now_ms=2_500)
    assert d.screen_notice(drv, notice_of(_forged(2)), now_ms=2_500) == (None, 2)  # ahead: catch up
    old = d.EpochDriver(d.DriverConfig(NET, KEYS[0].public_key, CLOCK), d.Head(3, b"\x01" * 32, VALIDATORS))
    with pytest.raises(Ignore, match="old_certificate"):
        d.screen_notice(old, forged, now_ms=4_500)
    assert old.counters.ignore_codes["old_certificate"] == 1


def test_a_notice_of_a_proposal_whose_check_still_runs_becomes_its_certificate() -> None:
    # Review finding: a big proposal's check takes a while, and the notices of the nodes that
    # checked faster arrive meanwhile; the candidate is held, so nothing is fetched again.
    drv, ex = _driver()
    drv.boot(2_500)
    ex.drain(2_500)  # the instance of epoch 1 opens
    decision = _decision()
    drv.feed(d.PeerMessage(decision[0], "proposer"), 2_600)
    pending = [r for r in iter(lambda: drv.next_request(2_600), None)]
    assert any(isinstance(r, d.CheckValue) for r in pending)  # not answered: the check runs
    cert = _certificate(decision)
    assert d.screen_notice(drv, notice_of(cert), now_ms=2_700) == (cert, None)


def test_a_notice_past_the_epoch_being_written_is_chased_not_dropped() -> None:
    # Review finding: while epoch 1's commit was written, a notice for epoch 2 counted as old.
    drv, ex = _driver()
    drv.boot(2_500)
    ex.drain(2_500)
    for env in _decision():
        drv.feed(d.PeerMessage(env, "peer"), 2_600)
    while not isinstance(req := drv.next_request(2_600), d.Commit):  # answer all but the commit
        assert req is not None
        if (answer := ex.answer(req)) is not None:
            drv.feed(answer, 2_600)
    assert drv.pending_commit() is not None
    assert d.screen_notice(drv, notice_of(_forged(2)), now_ms=2_600) == (None, 2)  # ahead: catch up
    with pytest.raises(Ignore, match="old_certificate"):  # the one being written is as good as old
        d.screen_notice(drv, notice_of(_certificate(_decision())), now_ms=2_600)
