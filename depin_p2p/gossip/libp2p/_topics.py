"""Our side of GossipSub: subscriptions, their validators and the per-peer rate limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
import trio

from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.libp2p._pubsub import peer_of
from depin_p2p.gossip.transport import (
    GossipMessage,
    PeerId,
    Prepare,
    RateLimit,
    TransportCounters,
    Validator,
)

log = structlog.get_logger(__package__)


class Topics:
    """Admits remote pubsub messages: rate limit, our validators, delivery to our bounded channels.

    The :class:`~._pubsub.PubsubOwner` of the guarded pubsub. ``penalise``
    charges a peer (the transport's penalty table).
    """

    def __init__(
        self,
        counters: TransportCounters,
        *,
        penalise: Callable[[PeerId, str], None],
        rate_per_second: int,
        rate_burst: int,
        bytes_per_second: int,
        bytes_burst: int,
    ) -> None:
        self._counters = counters
        self._penalise = penalise
        self._rate = RateLimit(
            counters,
            per_second=rate_per_second,
            burst=rate_burst,
            bytes_per_second=bytes_per_second,
            bytes_burst=bytes_burst,
        )
        self.subs: dict[str, tuple[Validator, trio.MemorySendChannel[GossipMessage]]] = {}
        self.prepares: dict[str, Prepare] = {}
        # When each peer last sent us gossip: a peer that talks is alive, so
        # pings (which a busy, CPU-starved node may answer late) only judge
        # the quiet ones.
        self.heard: dict[PeerId, float] = {}

    @property
    def counters(self) -> TransportCounters:
        return self._counters

    def penalise(self, peer: PeerId, code: str) -> None:
        self._penalise(peer, code)

    def on_malformed(self, peer_id: Any, code: str, exc: BaseException) -> None:
        peer = peer_of(peer_id)
        self._counters.count_malformed(code, peer)
        log.debug("gossip.frame.malformed", peer=peer, code=code, error=repr(exc)[:200])
        self._penalise(peer, code)

    def rate_ok(self, forwarder: Any, size: int) -> bool:
        """Take one message and its ``size`` bytes from ``forwarder``'s buckets; False: dropped, counted."""
        now = trio.current_time()
        peer = peer_of(forwarder)
        self.heard[peer] = now
        return self._rate.admit(peer, size, now)

    def wants_prepare(self, msg: Any) -> bool:
        """Whether one of the message's topics has a ``prepare`` hook to await before validation."""
        return any(t in self.prepares for t in msg.topicIDs)

    async def prepare(self, forwarder: Any, msg: Any) -> None:
        """Await the ``prepare`` hooks of the message's topics; never raises (a hook decides nothing)."""
        peer = peer_of(forwarder)
        data = bytes(msg.data)
        for topic in msg.topicIDs:
            hook = self.prepares.get(topic)
            if hook is None:
                continue
            try:
                await hook(peer, data)
            except trio.Cancelled:
                raise
            except Exception:  # a bug in a hook: the validator still judges the message
                log.exception("gossip.prepare.crashed", topic=topic, peer=peer)

    def validate(self, forwarder: Any, msg: Any) -> bool:
        """Run our validators for the message's topics: True to deliver and forward."""
        peer = peer_of(forwarder)
        topics = [t for t in msg.topicIDs if t in self.subs]
        if not topics:
            return False
        data = bytes(msg.data)
        for topic in topics:
            validator, _ = self.subs[topic]
            try:
                validator(peer, data)
            except Ignore as exc:
                self._counters.count_ignore(exc.code, peer)
                return False
            except Reject as exc:
                self._counters.count_reject(exc.code, peer)
                self._penalise(peer, exc.code)
                return False
            except Exception:  # our bug: it costs the message, never the node or the peer
                log.exception("gossip.validator.crashed", topic=topic, peer=peer)
                self._counters.count_reject("validator_error", peer)
                return False
        for topic in topics:
            _, channel = self.subs[topic]
            try:
                channel.send_nowait(GossipMessage(topic, data, peer))
                self._counters.delivered += 1
            except trio.WouldBlock:
                self._counters.dropped_subscriber_full += 1
            except trio.BrokenResourceError:
                self.subs.pop(topic, None)
        return True
