"""Consensus roles: a validator (or a node posing as one) misusing votes.

- ``equivocating-validator``: beside each prevote and precommit it signs, a
  twin for another value (:func:`devnet.adversaries.equivocating.twin_vote`).
  Caught as conflicting votes and duplicate-vote evidence; slashed.
- ``stale-replay``: replays each of its votes under another network's id,
  and its votes of two epochs back. Caught as ``wrong_network`` rejects.
- ``split-proposer``: beside each proposal it signs, a second one for the
  same epoch and round with another value (its own content less one
  report), so peers that hear one first prevote for a different value.
  Caught as conflicting proposals (``conflicting_votes``, which covers
  proposals, and ``conflicting_proposal``) or ``invalid_value``.
- ``non-validator-voter``: a node with no stake signs a prevote for the
  running epoch every 500 ms. Caught as ``unknown_validator`` rejects.
- ``future-flood``: a validator signs, every 250 ms, a prevote for an epoch
  1000 or more past its next one. Caught as ``vote_from_the_future``
  ignores (dropped at gossip intake, not forwarded, nobody charged: a
  forwarder may only relay it, and a vote is no proof of a fault).
- ``withholding-proposer``: a validator that signs its proposals but never
  sends them (re-sends included). Caught as ``missed_proposal_slot``: honest
  nodes' propose timeouts in its slots, by the slot's proposer (the
  consensus counters' ``proposals_missed``). Its penalty is only that its
  slots are skipped: the round times out and the epoch is committed in a
  later round of another proposer (``rounds_skipped``). The node has no
  liveness penalty (no proposer reward to withhold, no jailing), and a missed
  slot is no proof of a fault: a slow or cut-off proposer misses it too.
- ``amnesia``: right after its first prevote from ``from_epoch`` on, crashes
  and restarts at once with an empty sign-state (the votes it signed and its
  lock forgotten; its ledger kept). Back up in the same epoch and round, it
  prevotes again, for another value (it never saw the proposal again): two
  signed prevotes for one (epoch, round). They reach the honest nodes after
  they decided the epoch without it, and are convicted all the same
  (duplicate-vote evidence from the conflict watch, then a slash). A lock
  ignored in a later round, with no second vote at one step, would prove
  nothing by itself: this role shows the provable case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from depin_p2p import wire
from depin_p2p.consensus.state import Precommit, Prevote, Proposal
from depin_p2p.consensus.value import EpochContent
from devnet.adversaries.base import Host, Role
from devnet.adversaries.equivocating import twin_vote


def _own_vote(host: Host, data: bytes) -> tuple[wire.Envelope, Prevote | Precommit] | None:
    item = wire.decode(data)
    if not isinstance(item, wire.Envelope) or item.signer != host.key.public_key:
        return None
    msg = wire.decode(item.body)
    if not isinstance(msg, Prevote | Precommit):
        return None
    return item, msg


class EquivocatingValidator(Role):
    name = "equivocating-validator"
    family = "consensus"
    summary = "two votes per step"
    codes = frozenset({"conflicting_votes", "duplicate_vote_evidence"})
    validator_only = True

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        if topic_name != host.consensus_topic:
            return ()
        item = wire.decode(data)
        if not isinstance(item, wire.Envelope):
            return ()
        twin = twin_vote(item, host.key, host.network_id, host.from_epoch)
        if twin is None:
            return ()
        host.attack.note("twin_votes", host.clock.now_ms())
        return (wire.encode(twin),)


class StaleReplay(Role):
    name = "stale-replay"
    family = "consensus"
    summary = "replays old-epoch and other-network votes"
    codes = frozenset({"wrong_network"})
    validator_only = True

    def __init__(self) -> None:
        self._old: dict[int, list[bytes]] = {}

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        own = _own_vote(host, data) if topic_name == host.consensus_topic else None
        if own is None or not self.active(host):
            return ()
        _, msg = own
        self._old.setdefault(msg.epoch, []).append(data)
        now = host.clock.now_ms()
        other = wire.seal(msg, host.key, host.network_id + "-other")
        host.attack.note("other_network_votes", now)
        out = [wire.encode(other)]
        old = self._old.pop(msg.epoch - 2, [])
        if old:
            host.attack.note("old_epoch_votes", now, len(old))
            out += old
        return out


class SplitProposer(Role):
    name = "split-proposer"
    family = "consensus"
    summary = "two different proposals per round"
    codes = frozenset({"conflicting_votes", "conflicting_proposal", "invalid_value"})
    validator_only = True

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        if topic_name != host.consensus_topic or not self.active(host):
            return ()
        item = wire.decode(data)
        if not isinstance(item, wire.Envelope) or item.signer != host.key.public_key:
            return ()
        msg = wire.decode(item.body)
        if not isinstance(msg, Proposal):
            return ()
        content = wire.decode_as(msg.candidate.value, EpochContent)
        other = dataclasses.replace(content, reports=content.reports[:-1])
        if other == content:
            other = dataclasses.replace(content, reports=(), beacons=())
        candidate = dataclasses.replace(msg.candidate, value=wire.encode(other))
        twin = wire.seal(dataclasses.replace(msg, candidate=candidate), host.key, host.network_id)
        host.attack.note("second_proposals", host.clock.now_ms())
        return (wire.encode(twin),)


class NonValidatorVoter(Role):
    name = "non-validator-voter"
    family = "consensus"
    summary = "a node with no stake votes"
    codes = frozenset({"unknown_validator"})

    async def run(self, host: Host) -> None:
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 500)
            if not self.active(host):
                continue
            vote = wire.seal(Prevote(host.current_epoch(), 0, None), host.key, host.network_id)
            host.attack.note("votes_without_stake", host.clock.now_ms())
            await host.publish_raw(host.consensus_topic, wire.encode(vote))


class FutureFlood(Role):
    name = "future-flood"
    family = "consensus"
    summary = "votes for far-future epochs"
    codes = frozenset({"ignored_vote_from_the_future"})
    validator_only = True  # a validator's key: its votes pass the signer check

    async def run(self, host: Host) -> None:
        n = 0
        while True:
            await host.clock.sleep_until_ms(host.clock.now_ms() + 250)
            if not self.active(host):
                continue
            n += 1
            vote = wire.seal(Prevote(host.current_epoch() + 1_000 + n, 0, None), host.key, host.network_id)
            host.attack.note("future_votes", host.clock.now_ms())
            await host.publish_raw(host.consensus_topic, wire.encode(vote))


class WithholdingProposer(Role):
    name = "withholding-proposer"
    family = "consensus"
    summary = "never sends its proposals"
    codes = frozenset({"missed_proposal_slot"})
    validator_only = True

    def withholds(self, host: Host, topic_name: str, data: bytes) -> bool:
        if topic_name != host.consensus_topic or not self.active(host):
            return False
        item = wire.decode(data)
        if not isinstance(item, wire.Envelope) or item.signer != host.key.public_key:
            return False
        if not isinstance(wire.decode(item.body), Proposal):
            return False
        host.attack.note("withheld_proposals", host.clock.now_ms())
        return True


class Amnesia(Role):
    """Restarts once, right after its first prevote from ``from_epoch`` on, having lost its
    sign-state: it signs the running epoch again from scratch, lock and votes forgotten."""

    name = "amnesia"
    family = "consensus"
    summary = "restarts after a prevote with its sign-state (votes, lock) forgotten"
    codes = frozenset({"conflicting_votes", "duplicate_vote_evidence"})
    validator_only = True

    def __init__(self) -> None:
        self._restarted = False

    async def on_publish(self, host: Host, topic_name: str, data: bytes) -> Sequence[bytes]:
        own = _own_vote(host, data) if topic_name == host.consensus_topic else None
        if own is None or self._restarted or not self.active(host) or not isinstance(own[1], Prevote):
            return ()
        self._restarted = True
        host.attack.note("restarts_forgetting", host.clock.now_ms())
        host.restart_forgetting_sign_state()
        return ()


ROLES: tuple[type[Role], ...] = (
    Amnesia,
    EquivocatingValidator, StaleReplay, SplitProposer, NonValidatorVoter, FutureFlood, WithholdingProposer)
