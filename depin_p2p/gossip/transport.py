"""What the node needs from a network, independent of libp2p.

Two implementations: :mod:`depin_p2p.gossip.memory` (in-process, virtual
time, for the simulator and tests) and :mod:`depin_p2p.gossip.libp2p` (real
TCP + Noise + Yamux + GossipSub). One conformance suite runs against both.

Semantics both implementations share:

- ``publish`` sends to every subscribed peer of the topic (not to ourselves);
  a message is identified by :func:`message_id` of its topic and bytes, so
  the same bytes published twice on a topic, or by two nodes, are delivered
  at most once to each peer, and the same bytes on another topic are another
  message. A publish always goes out, even of bytes published before: a
  peer that missed them the first time (it was down) gets them then.
- A topic validator runs on every message from a peer before it is delivered
  or forwarded (after the subscription's ``prepare`` hook, if the transport
  runs one: libp2p does, the memory network does not). It returns to
  accept, raises ``Ignore`` to drop quietly, or ``Reject`` to drop and
  penalise the peer that forwarded it. Any other
  exception (a bug of ours) drops the message and is counted as the reject
  code ``validator_error``, but costs the peer nothing: only a proven offence does.
- Accepted messages land on a bounded channel per subscription; when the
  consumer falls behind, the newest message is dropped and counted.
- ``request`` opens one exchange on a named protocol: the request and the
  response are each capped in size and the whole exchange runs under a
  timeout. A handler raising ``Reject`` penalises the requester.
- Penalties accumulate per peer (see :mod:`depin_p2p.gossip.penalty`); a peer
  over the threshold is disconnected and banned for a while.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NewType, Protocol

import structlog
import trio

from depin_p2p.clock import Clock
from depin_p2p.gossip.penalty import PenaltyPolicy, PenaltyTable

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose stale trio-stubs shadow trio's own
    # annotations and lack trio.TaskStatus; its TaskStatus is the same protocol.
    from trio_typing import TaskStatus

PeerId = NewType("PeerId", str)

# A validator sees the forwarding peer and the raw bytes; it returns (accept)
# or raises Ignore / Reject. It is synchronous on purpose: it runs inline on
# the receive path and must never block the network.
Validator = Callable[[PeerId, bytes], None]
# A prepare hook runs before the validator where the transport's receive path may await
# (libp2p's: one task per message); it warms caches (a batch of signature checks on worker
# threads) and decides nothing: it must not raise, and a transport may skip it (the memory
# network does, so the simulator stays synchronous and deterministic).
Prepare = Callable[[PeerId, bytes], Awaitable[None]]
# A request handler returns the response bytes; Reject penalises the requester.
Handler = Callable[[PeerId, bytes], Awaitable[bytes]]

DEFAULT_SUBSCRIPTION_CAPACITY = 1024
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024

PROOFS = "proofs"
TX = "tx"
CONSENSUS = "consensus"
SYNC = "sync"
CHALLENGE = "challenge"
STATUS = "status"
PX = "px"  # peer exchange (gossip/peers.py)


_log = structlog.get_logger("depin_p2p.gossip")


def message_id(topics: Iterable[str], data: bytes) -> bytes:
    """A gossip message's id: BLAKE2b-256 of ``u32 len ‖ topic`` for each topic, then the bytes.

    Lengths big-endian, topics UTF-8 in the message's order (our messages
    have one). ``from`` and ``seqno`` are not in it: identical bytes from two
    publishers on one topic are one message.
    """
    h = hashlib.blake2b(digest_size=32)
    for name in topics:
        raw = name.encode()
        h.update(struct.pack(">I", len(raw)) + raw)
    h.update(data)
    return h.digest()


def topic(network_id: str, name: str, version: int = 1) -> str:
    """The gossip topic ``/depin/<network>/<name>/<version>``, e.g. ``/depin/devnet/proofs/1``."""
    return f"/depin/{network_id}/{name}/{version}"


def protocol(network_id: str, name: str, version: int = 1) -> str:
    """The request/response protocol id ``/depin/<network>/<name>/<version>``, e.g. ``.../sync/1``."""
    return f"/depin/{network_id}/{name}/{version}"


@dataclass(frozen=True, slots=True)
class GossipMessage:
    """An accepted gossip message: its topic, bytes and the peer that forwarded it to us."""

    topic: str
    data: bytes
    peer: PeerId


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """A peer connected (``connected=True``) or disconnected."""

    peer: PeerId
    connected: bool


@dataclass(slots=True)
class TransportCounters:
    """Drop and penalty counters, exported as metrics by the node.

    Mutable on purpose: the transport increments them in place.
    """

    published: int = 0
    delivered: int = 0
    ignored: int = 0
    rejected: int = 0
    duplicates: int = 0
    dropped_subscriber_full: int = 0
    dropped_rate_limited: int = 0
    dropped_peer_events_full: int = 0
    malformed_frames: int = 0
    requests_served: int = 0
    requests_failed: int = 0
    peers_banned: int = 0
    peers_dropped_unresponsive: int = 0
    reject_codes: dict[str, int] = field(default_factory=dict)
    # Gossip messages dropped by the rate limit, by forwarding peer (bounded: MAX_COUNTED_PEERS).
    rate_limited_peers: dict[str, int] = field(default_factory=dict)
    # Inbound pubsub streams reset for being over a peer's share, by peer (bounded likewise).
    excess_streams_peers: dict[str, int] = field(default_factory=dict)
    # What our validators said of each forwarding peer's messages, by peer then code (rejects
    # as their code, ignores as ``ignored_<code>``; bounded likewise): what each peer cost us.
    codes_by_peer: dict[str, dict[str, int]] = field(default_factory=dict)
    # Payload bytes of the pubsub messages read off the wire, duplicates included, by topic (only
    # topics we subscribe to; the rest as "other"): what each kind of gossip costs to receive.
    inbound_bytes_by_topic: dict[str, int] = field(default_factory=dict)
    inbound_messages_by_topic: dict[str, int] = field(default_factory=dict)

    def count_inbound(self, topic: str, size: int) -> None:
        """One pubsub message of ``size`` payload bytes read for ``topic`` (ours, or ``"other"``)."""
        self.inbound_bytes_by_topic[topic] = self.inbound_bytes_by_topic.get(topic, 0) + size
        self.inbound_messages_by_topic[topic] = self.inbound_messages_by_topic.get(topic, 0) + 1

    def count_reject(self, code: str, peer: str | None = None) -> None:
        self.rejected += 1
        self.reject_codes[code] = self.reject_codes.get(code, 0) + 1
        if peer is not None:
            self._count_code(peer, code)

    def count_malformed(self, code: str, peer: str) -> None:
        """A pubsub frame from ``peer`` that did not decode (``code``: malformed_rpc, ...)."""
        self.malformed_frames += 1
        self._count_code(peer, code)

    def count_ignore(self, code: str, peer: str) -> None:
        self.ignored += 1
        self._count_code(peer, f"ignored_{code}")

    def _count_code(self, peer: str, code: str) -> None:
        codes = self.codes_by_peer.get(peer)
        if codes is None:
            if len(self.codes_by_peer) >= MAX_COUNTED_PEERS:
                return
            codes = self.codes_by_peer[peer] = {}
        codes[code] = codes.get(code, 0) + 1

    def count_rate_limited(self, peer: str) -> None:
        self.dropped_rate_limited += 1
        _count_peer(self.rate_limited_peers, peer)

    def count_excess_stream(self, peer: str) -> None:
        _count_peer(self.excess_streams_peers, peer)


def _count_peer(counts: dict[str, int], peer: str) -> None:
    if peer in counts or len(counts) < MAX_COUNTED_PEERS:
        counts[peer] = counts.get(peer, 0) + 1


MAX_COUNTED_PEERS = 1024
# Gossip messages (and payload bytes) accepted per forwarding peer: both transports' defaults.
RATE_PER_SECOND = 2_000
RATE_BURST = 4_000
RATE_BYTES_PER_SECOND = 16 * 1024 * 1024
RATE_BYTES_BURST = 32 * 1024 * 1024  # a full 1 MiB message fits


class _Bucket:
    __slots__ = ("at", "bytes", "tokens")

    def __init__(self, tokens: float, byte_tokens: float, at: float) -> None:
        self.tokens = tokens
        self.bytes = byte_tokens
        self.at = at


class RateLimit:
    """Token buckets on trio time, one per forwarding peer: gossip messages and their bytes.

    Both transports charge a remote gossip message here before their seen-cache: a duplicate
    costs its sender rate as a new message does. A message over the rate is dropped and counted
    (``TransportCounters.count_rate_limited``), never charged: an honest relay in a burst is
    not an attacker.
    """

    def __init__(
        self,
        counters: TransportCounters,
        *,
        per_second: int,
        burst: int,
        bytes_per_second: int,
        bytes_burst: int,
        max_peers: int = 4096,
    ) -> None:
        self._counters = counters
        self._per_second, self._burst = per_second, burst
        self._bytes_per_second, self._bytes_burst = bytes_per_second, bytes_burst
        self._max_peers = max_peers
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, peer: str, size: int, now: float) -> bool:
        """Take one message of ``size`` bytes from ``peer``'s buckets at ``now`` (trio seconds);
        False: over the rate (dropped, counted)."""
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) > self._max_peers:
                self._buckets.clear()
            bucket = self._buckets[peer] = _Bucket(self._burst, self._bytes_burst, now)
        elapsed = now - bucket.at
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._per_second)
        bucket.bytes = min(self._bytes_burst, bucket.bytes + elapsed * self._bytes_per_second)
        bucket.at = now
        if bucket.tokens < 1 or bucket.bytes < size:
            self._counters.count_rate_limited(peer)
            return False
        bucket.tokens -= 1
        bucket.bytes -= size
        return True


class PeerStanding:
    """Penalties, bans and the peer-event fan-out: the part of a transport both implementations share.

    ``on_ban(peer, code)`` is the transport's own way to cut a banned peer off
    (the memory network drops the link; libp2p also blacklists it in pubsub).
    """

    def __init__(
        self,
        policy: PenaltyPolicy | None,
        clock: Clock,
        counters: TransportCounters,
        on_ban: Callable[[PeerId, str], None],
        **log_fields: str,
    ) -> None:
        self.table = PenaltyTable(policy)
        self._clock = clock
        self._counters = counters
        self._on_ban = on_ban
        self._log_fields = log_fields
        self._channels: list[trio.MemorySendChannel[PeerEvent]] = []

    def events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        send, receive = trio.open_memory_channel[PeerEvent](capacity)
        self._channels.append(send)
        return receive

    def emit(self, event: PeerEvent) -> None:
        for channel in list(self._channels):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._counters.dropped_peer_events_full += 1
            except trio.BrokenResourceError:
                self._channels.remove(channel)

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer``; logs the first reason per peer; bans and cuts it off past the threshold."""
        outcome = self.table.penalise(peer, code, self._clock.now_ms())
        if outcome.first:
            _log.warning("gossip.peer.penalised", peer=peer, code=code, **self._log_fields)
        if outcome.banned:
            self._banned(peer, code)

    def ban(self, peer: PeerId, seconds: float) -> None:
        self.table.ban(peer, self._clock.now_ms() + int(seconds * 1000))
        self._banned(peer, "explicit")

    def is_banned(self, peer: PeerId) -> bool:
        return self.table.is_banned(peer, self._clock.now_ms())

    def _banned(self, peer: PeerId, code: str) -> None:
        self._counters.peers_banned += 1
        _log.warning("gossip.peer.banned", peer=peer, code=code, **self._log_fields)
        self._on_ban(peer, code)


class Transport(Protocol):
    """A node's network. Every method is safe to call only while ``run`` is running."""

    @property
    def peer_id(self) -> PeerId:
        """Our own peer id."""
        ...

    @property
    def counters(self) -> TransportCounters: ...

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the transport until cancelled; ``task_status.started()`` once it listens."""
        ...

    def listen_addrs(self) -> tuple[str, ...]:
        """Addresses other nodes can pass to :meth:`connect`."""
        ...

    async def connect(self, addr: str, *, redial: bool = True) -> PeerId:
        """Dial ``addr``; with ``redial`` keep it in the re-dial book (re-dialled when lost).

        ``redial=False`` is for a caller that decides itself whom to re-dial
        (the peer manager, :mod:`depin_p2p.gossip.peers`).
        Raises TransportError if the dial fails or the peer is banned.
        """
        ...

    async def disconnect(self, peer: PeerId) -> None:
        """Close our connections to ``peer`` and drop it from the re-dial book; no penalty, no ban.

        Returns once the connection is gone or the attempt timed out; never raises.
        """
        ...

    def peers(self) -> frozenset[PeerId]:
        """Currently connected peers."""
        ...

    def topic_peers(self, topic: str) -> frozenset[PeerId]:
        """Peers our messages on ``topic`` go to now (GossipSub: the mesh)."""
        ...

    async def subscribe(
        self,
        topic: str,
        validator: Validator,
        *,
        capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY,
        prepare: Prepare | None = None,
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join ``topic``; accepted messages arrive on the returned channel (bounded by ``capacity``).

        ``prepare`` (optional, see :data:`Prepare`) is awaited before ``validator`` on a
        message that passed the transport's own checks (not banned, within rate, not seen).
        """
        ...

    async def publish(self, topic: str, data: bytes) -> None:
        """Send ``data`` to the topic. Never blocks on slow peers; never raises for a peer's fault."""
        ...

    def set_handler(
        self, protocol: str, handler: Handler, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        """Serve requests on ``protocol`` with ``handler``."""
        ...

    async def request(
        self,
        peer: PeerId,
        protocol: str,
        data: bytes,
        *,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> bytes:
        """One request/response exchange. Raises TransportError on timeout, reset, refusal or oversize.

        Cancellation: the exchange is abandoned (the stream is reset).
        """
        ...

    def peer_events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        """A new bounded channel of peer connect/disconnect events (drops counted when full)."""
        ...

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer`` for a rejected message or request; bans it past the threshold."""
        ...

    def ban(self, peer: PeerId, seconds: float) -> None:
        """Disconnect ``peer`` and refuse it for ``seconds``."""
        ...

    def is_banned(self, peer: PeerId) -> bool: ...
