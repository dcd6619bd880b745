"""The consensus topic's intake: the topic validator, the pump into the loop's inbox, and catch-up starts.

The topic validator (:meth:`GossipIntake.validate`, run by the transport before
a message is delivered or forwarded) decodes each message once and screens it
against the driver (:func:`~depin_p2p.consensus.driver.screen_any`): a bad
signature or a non-validator's vote is rejected there (the peer pays); one
showing us behind starts catch-up. What passes is stashed by content id for
the pump (:meth:`GossipIntake.pump`), which feeds the loop's inbox in the
transport's delivery order.

A commit notice of a value this node has not heard proposed waits
``NOTICE_WAIT_S`` for it (the proposal may still be on its way or in its
check), then becomes its certificate, or the node fetches the certificate
(:meth:`~depin_p2p.consensus.sync.CatchUp.chase_after`).
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from functools import partial

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import driver as d
from depin_p2p.consensus.state import Certificate, CommitNotice, DuplicateVoteEvidence, Proposal
from depin_p2p.consensus.sync import CatchUp
from depin_p2p.errors import CodecError, Ignore, Reject, ValidationError
from depin_p2p.gossip.transport import GossipMessage, PeerId

STASH_CAPACITY = 4_096  # decoded messages between the topic validator and the pump
NOTICE_WAIT_S = 2.0  # a notice of a value we lack waits this long for its proposal, then fetches

log = structlog.get_logger("depin_p2p.consensus")


class GossipIntake:
    """Screens consensus gossip for one driver and posts what passes to the loop's inbox."""

    def __init__(
        self,
        driver: d.EpochDriver,
        clock: Clock,
        catch_up: CatchUp,
        send: trio.MemorySendChannel[d.Input | trio.Event],
    ) -> None:
        self._driver, self._clock, self._sync, self._send = driver, clock, catch_up, send
        self._stash: OrderedDict[bytes, object] = OrderedDict()
        self.nursery: trio.Nursery | None = None  # where catch-up runs; set once the loop runs

    def validate(self, peer: PeerId, data: bytes) -> None:
        """Topic validator: decode once, screen, start catch-up if need be; stash for the pump."""
        try:
            got = wire.decode(data, d.CONSENSUS_MESSAGE_CAP)
        except CodecError as exc:
            raise Reject("malformed", str(exc)) from None
        item, ahead = d.screen_any(self._driver, got, self._clock.now_ms())  # a notice: its certificate
        if ahead is not None:  # a peer is ahead, or has what we lack: catch up (one chase at a time)
            self._catch_up(peer, ahead, got if item is None else None)
            if not isinstance(item, wire.Envelope):
                raise Ignore("certificate_ahead", f"epoch {ahead}: catching up")
        self._stash[wire.content_id(data)] = item
        while len(self._stash) > STASH_CAPACITY:
            self._stash.popitem(last=False)
        if isinstance(item, wire.Envelope):
            with contextlib.suppress(Exception):  # a log that cannot be written costs no message
                _log_heard(item, peer, len(data))

    def _catch_up(self, peer: PeerId, up_to: int, notice: object | None) -> None:
        if self.nursery is None:
            return
        if isinstance(notice, CommitNotice) and up_to == self._driver.head.next_epoch:  # a value we lack
            settle = partial(self._settle, peer, notice)
            self.nursery.start_soon(self._sync.chase_after, peer, up_to, NOTICE_WAIT_S, settle)
        else:
            self.nursery.start_soon(self._sync.chase, peer, up_to)

    async def _settle(self, peer: PeerId, notice: CommitNotice) -> bool:
        """True if ``notice`` is settled: its epoch committed, or its proposal heard meanwhile."""
        if notice.epoch < self._driver.head.next_epoch:
            return True  # committed meanwhile (not counted as an ignored message a second time)
        try:
            cert, _ = d.screen_notice(self._driver, notice, self._clock.now_ms())
        except ValidationError:
            return True  # its epoch is being written
        if cert is not None:
            await self._send.send(d.CertificateIn(cert, peer))
        return cert is not None

    async def pump(self, channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        """Feed the inbox what the validator stashed, in delivery order."""
        async with channel:
            async for msg in channel:
                item = self._stash.pop(wire.content_id(msg.data), None)
                if isinstance(item, wire.Envelope):
                    await self._send.send(d.PeerMessage(item, msg.peer))
                elif isinstance(item, Certificate):
                    await self._send.send(d.CertificateIn(item, msg.peer))
                elif isinstance(item, DuplicateVoteEvidence):
                    await self._send.send(d.EvidenceIn(item))


def _log_heard(env: wire.Envelope, peer: PeerId, size: int) -> None:
    """``consensus.proposal.heard`` (info: one per round) or ``consensus.vote.heard`` (debug).

    With each signer's ``consensus.vote.signed`` line, these say how long a
    proposal or vote took to reach each node (why a round timed out).
    """
    # A second decode (the screen's is not kept): about 7 us for a vote, 3.5 ms for a 900 kB proposal.
    msg = d.decode_consensus(env)
    fields = {"epoch": msg.epoch, "round": msg.round, "signer": env.signer.hex()[:16], "peer": str(peer)}
    if isinstance(msg, Proposal):
        log.info("consensus.proposal.heard", **fields, bytes=size)
    elif log.is_enabled_for(logging.DEBUG):
        log.debug("consensus.vote.heard", kind=type(msg).__name__.lower(), **fields)
