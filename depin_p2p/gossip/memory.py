"""An in-process network for the simulator and tests.

Every node is a :class:`MemoryTransport` attached to one :class:`MemoryNetwork`.
Links have seeded latency, jitter, loss, duplication and reordering; the
network can be partitioned and healed. Time is trio's clock, so under
``trio.testing.MockClock(autojump_threshold=0)`` a whole cluster runs in
virtual time with no real sleeps.

Gossip is flooding over the connected graph among subscribers of a topic,
with content-id de-duplication, the same per-peer rate limit, validator and
penalty semantics as the libp2p transport, and the same bounded queues and
counters. With a
``mesh_degree`` (the simulator's choice), a node forwards only along its
topic mesh, as GossipSub does: each node prefers the ``mesh_degree``
reachable subscribed neighbours with the lowest seeded pair rank, and a link
is in the mesh when either end prefers the other (so every node has at least
that many mesh links, and the mesh re-forms around cuts, pauses and
departures). Connections, and so direct requests, stay a full graph.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose stale trio-stubs shadow trio's own
    # annotations and lack trio.TaskStatus; its TaskStatus is the same protocol.
    from trio_typing import TaskStatus

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.errors import Ignore, Reject, TransportError
from depin_p2p.gossip.penalty import PenaltyPolicy, TolerancePolicy, ToleranceTable
from depin_p2p.gossip.transport import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SUBSCRIPTION_CAPACITY,
    RATE_BURST,
    RATE_BYTES_BURST,
    RATE_BYTES_PER_SECOND,
    RATE_PER_SECOND,
    GossipMessage,
    Handler,
    PeerEvent,
    PeerId,
    PeerStanding,
    Prepare,
    RateLimit,
    TransportCounters,
    Validator,
    message_id,
)

log = structlog.get_logger(__name__)

ADDR_PREFIX = "memory/"
STREAMS_PER_PEER = 2  # as FrameLimits.streams_per_peer (gossip/libp2p/_frames.py)
_PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """One direction of a link. Probabilities are integer parts per million."""

    latency_ms: int = 5
    jitter_ms: int = 0
    loss_ppm: int = 0
    duplicate_ppm: int = 0
    reorder_ppm: int = 0
    reorder_extra_ms: int = 50


@dataclass(slots=True)
class NetworkCounters:
    """What the links did to the traffic (for simulator reports)."""

    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    partitioned: int = 0
    inbox_full: int = 0


@dataclass(slots=True)
class _Pending:
    event: trio.Event = field(default_factory=trio.Event)
    response: bytes | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Gossip:
    topic: str
    data: bytes
    sender: PeerId
    mid: bytes  # message_id((topic,), data), computed once by the publisher, not on every arrival


@dataclass(frozen=True, slots=True)
class _Request:
    rid: int
    protocol: str
    data: bytes
    sender: PeerId


@dataclass(frozen=True, slots=True)
class _Response:
    rid: int
    data: bytes | None
    error: str | None


_Item = _Gossip | _Request | _Response


class MemoryNetwork:
    """The shared medium: who is connected, link profiles, partitions, and the seeded randomness."""

    def __init__(
        self,
        *,
        seed: int,
        default_link: LinkProfile | None = None,
        penalty_policy: PenaltyPolicy | None = None,
        mesh_degree: int | None = None,
    ) -> None:
        self.seed = seed
        self.mesh_degree = mesh_degree  # None: flood every subscribed neighbour
        self.default_link = default_link or LinkProfile()
        self.penalty_policy = penalty_policy or PenaltyPolicy()
        self.counters = NetworkCounters()
        self._nodes: dict[PeerId, MemoryTransport] = {}
        self._links: dict[tuple[PeerId, PeerId], LinkProfile] = {}
        self._rngs: dict[tuple[PeerId, PeerId], random.Random] = {}
        self._groups: dict[PeerId, int] | None = None
        self._paused: set[PeerId] = set()
        # Mesh caches, valid while the topology version (connections, cuts, pauses,
        # subscriptions) is unchanged.
        self._version = 0
        self._ranks: dict[tuple[PeerId, PeerId], bytes] = {}
        self._preferred: dict[tuple[PeerId, str], tuple[int, frozenset[PeerId]]] = {}
        self._targets: dict[tuple[PeerId, str], tuple[int, tuple[PeerId, ...]]] = {}
        # While run() runs, every arrival waits in this one queue and one task delivers them all.
        self._dispatching = False
        self._queue: list[tuple[float, int, MemoryTransport, _Item]] = []
        self._queue_seq = itertools.count()
        self._queue_wake = trio.Event()
        self.streams: dict[tuple[PeerId, PeerId], int] = {}  # (from, to): held (open_stream)
        self.excess_streams: dict[PeerId, ToleranceTable] = {}

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver every node's arrivals from one task until cancelled (optional; for large clusters).

        Without it, each node's own task wakes for its own arrivals: a node of N wakes on
        its own, and a cluster of N spends N task switches and N timeouts where one does.
        Arrivals are handled in (due time, send order); each still goes through its
        node's own handler. Nodes not running when an arrival is due lose it.

        Cancellation: undelivered arrivals are dropped; nodes go back to their own loops.
        """
        self._dispatching = True
        try:
            task_status.started()
            queue = self._queue
            while True:
                now = trio.current_time()
                while queue and queue[0][0] <= now:
                    _, _, node, item = heapq.heappop(queue)
                    node._queued -= 1
                    if node._running:
                        node._handle(item)
                self._queue_wake = trio.Event()
                if queue:
                    with trio.move_on_at(queue[0][0]):
                        await self._queue_wake.wait()
                else:
                    await self._queue_wake.wait()
        finally:
            self._dispatching = False
            for _, _, node, _ in self._queue:
                node._queued -= 1
            self._queue.clear()

    def _dispatch_later(self, due: float, node: MemoryTransport, item: _Item) -> None:
        queue = self._queue
        earlier = not queue or due < queue[0][0]
        heapq.heappush(queue, (due, next(self._queue_seq), node, item))
        if earlier:
            self._queue_wake.set()

    def changed(self) -> None:
        """The topology changed: meshes are recomputed on the next message."""
        self._version += 1

    def create_node(self, name: str, *, inbox_capacity: int = 100_000) -> MemoryTransport:
        """A new node whose peer id is derived from ``name``, e.g. ``create_node("n0")``."""
        peer = PeerId("mem-" + hashlib.blake2b(name.encode(), digest_size=8).hexdigest())
        if peer in self._nodes:
            raise ValueError(f"node {name!r} already exists")
        node = MemoryTransport(self, peer, inbox_capacity=inbox_capacity)
        self._nodes[peer] = node
        return node

    def set_link(self, a: PeerId, b: PeerId, profile: LinkProfile, *, both_ways: bool = True) -> None:
        """Use ``profile`` for traffic from ``a`` to ``b`` (and back, by default)."""
        self._links[(a, b)] = profile
        if both_ways:
            self._links[(b, a)] = profile

    def partition(self, *groups: Iterable[PeerId]) -> None:
        """Cut traffic between groups; peers in no group form one more group. Connections stay up."""
        self._groups = {}
        self.changed()
        for i, members in enumerate(groups):
            for peer in members:
                self._groups[peer] = i

    def heal(self) -> None:
        """Remove every partition."""
        self._groups = None
        self.changed()

    def pause(self, peer: PeerId) -> None:
        """Freeze a node (like SIGSTOP): it neither receives nor answers until resumed."""
        self._paused.add(peer)
        self.changed()

    def resume(self, peer: PeerId) -> None:
        self._paused.discard(peer)
        self.changed()

    def _rng(self, a: PeerId, b: PeerId) -> random.Random:
        # One generator per directed link, seeded from (seed, a, b): traffic on
        # one link never shifts the randomness of another.
        rng = self._rngs.get((a, b))
        if rng is None:
            digest = hashlib.blake2b(f"{self.seed}|{a}|{b}".encode(), digest_size=8).digest()
            rng = random.Random(int.from_bytes(digest, "big"))
            self._rngs[(a, b)] = rng
        return rng

    def _cut(self, a: PeerId, b: PeerId) -> bool:
        if b in self._paused or a in self._paused:
            return True
        if self._groups is None:
            return False
        return self._groups.get(a, -1) != self._groups.get(b, -1)

    def _send(self, src: PeerId, dst: PeerId, item: _Item, *, lossy: bool, now: float | None = None) -> None:
        node = self._nodes.get(dst)
        if node is None:
            return
        self.counters.sent += 1
        if self._cut(src, dst):
            self.counters.partitioned += 1
            return
        if now is None:
            now = trio.current_time()
        profile = self._links.get((src, dst), self.default_link)
        drops = lossy and (profile.loss_ppm or profile.duplicate_ppm)
        if not (profile.jitter_ms or profile.reorder_ppm or drops):
            # A fixed-latency link draws nothing: no randomness to spend per message.
            if not node._enqueue(now + profile.latency_ms / 1000, item):
                self.counters.inbox_full += 1
            return
        rng = self._rng(src, dst)
        if lossy and profile.loss_ppm and rng.randrange(_PPM) < profile.loss_ppm:
            self.counters.lost += 1
            return
        copies = 1
        if lossy and profile.duplicate_ppm and rng.randrange(_PPM) < profile.duplicate_ppm:
            copies = 2
            self.counters.duplicated += 1
        for _ in range(copies):
            delay = profile.latency_ms
            if profile.jitter_ms:
                delay += rng.randrange(profile.jitter_ms + 1)
            if profile.reorder_ppm and rng.randrange(_PPM) < profile.reorder_ppm:
                delay += profile.reorder_extra_ms
            if not node._enqueue(now + delay / 1000, item):
                self.counters.inbox_full += 1

    def _connect(self, a: PeerId, b: PeerId) -> None:
        node_a, node_b = self._nodes.get(a), self._nodes.get(b)
        if node_a is None or node_b is None or not node_b._running:
            raise TransportError(f"no node listening at {ADDR_PREFIX}{b}")
        if a == b:
            raise TransportError("cannot connect to ourselves")
        if node_a.is_banned(b) or node_b.is_banned(a):
            raise TransportError(f"connection between {a} and {b} refused: banned")
        if b in node_a._neighbours:
            return
        node_a._neighbours.add(b)
        node_b._neighbours.add(a)
        self.changed()
        node_a._emit(PeerEvent(b, True))
        node_b._emit(PeerEvent(a, True))

    def _disconnect(self, a: PeerId, b: PeerId) -> None:
        node_a, node_b = self._nodes.get(a), self._nodes.get(b)
        if node_a is None or node_b is None or b not in node_a._neighbours:
            return
        node_a._neighbours.discard(b)
        node_b._neighbours.discard(a)
        self.streams.pop((a, b), None)  # a connection's streams close with it
        self.streams.pop((b, a), None)
        self.changed()
        node_a._emit(PeerEvent(b, False))
        node_b._emit(PeerEvent(a, False))

    def _subscribers(self, peers: Iterable[PeerId], topic: str) -> list[PeerId]:
        return [p for p in peers if topic in self._nodes[p]._subs]

    def _rank(self, a: PeerId, b: PeerId) -> bytes:
        pair = (a, b) if a < b else (b, a)
        rank = self._ranks.get(pair)
        if rank is None:
            rank = hashlib.blake2b(f"mesh|{self.seed}|{pair[0]}|{pair[1]}".encode(), digest_size=8).digest()
            self._ranks[pair] = rank
        return rank

    def _prefers(self, a: PeerId, topic: str) -> frozenset[PeerId]:
        got = self._preferred.get((a, topic))
        if got is not None and got[0] == self._version:
            return got[1]
        reachable = [p for p in self._subscribers(self._nodes[a]._neighbours, topic) if not self._cut(a, p)]
        reachable.sort(key=lambda p: self._rank(a, p))
        chosen = frozenset(reachable[: self.mesh_degree])
        self._preferred[(a, topic)] = (self._version, chosen)
        return chosen

    def gossip_targets(self, a: PeerId, topic: str) -> tuple[PeerId, ...]:
        """The neighbours ``a`` forwards ``topic`` to: all subscribed ones, or its mesh."""
        got = self._targets.get((a, topic))
        if got is not None and got[0] == self._version:
            return got[1]
        peers = self._subscribers(self._nodes[a]._neighbours, topic)
        if self.mesh_degree is None or len(peers) <= self.mesh_degree:
            targets = tuple(peers)
        else:
            mine = self._prefers(a, topic)
            targets = tuple(sorted(p for p in peers if p in mine or a in self._prefers(p, topic)))
        self._targets[(a, topic)] = (self._version, targets)
        return targets


def _default_rate(counters: TransportCounters) -> RateLimit:
    return RateLimit(
        counters,
        per_second=RATE_PER_SECOND,
        burst=RATE_BURST,
        bytes_per_second=RATE_BYTES_PER_SECOND,
        bytes_burst=RATE_BYTES_BURST,
    )


async def open_stream(transport: MemoryTransport, peer: PeerId) -> bool:
    """Open one more stream from ``transport`` to ``peer`` and hold it, sending nothing: True
    if held. Raises TransportError if not connected.

    Gossip here travels without streams, so no honest node opens one; this models what
    libp2p's pubsub does with them (``gossip/libp2p/_frames.py``): a peer may hold
    ``STREAMS_PER_PEER`` (GossipSub needs one), each further one is reset (refused) and,
    beyond a tolerance of 16 refilled at one a second, costs ``excess_pubsub_streams``. A
    stream that sends nothing is never timed out there either (only a frame once begun).
    """
    await trio.lowlevel.checkpoint()
    net, me = transport._net, transport.peer_id
    node = net._nodes.get(peer)
    if node is None or peer not in transport.peers() or net._cut(me, peer):
        raise TransportError(f"no stream to {peer}: not connected")
    if node.is_banned(me):
        return False
    held = net.streams.get((me, peer), 0)
    if held < STREAMS_PER_PEER:
        net.streams[(me, peer)] = held + 1
        return True
    node.counters.count_excess_stream(me)
    tolerance = net.excess_streams.get(peer)
    if tolerance is None:
        tolerance = net.excess_streams[peer] = ToleranceTable(TolerancePolicy(items=16, refill_per_second=1))
    if tolerance.excess(me, 1, node._clock.now_ms()):
        node.penalise(me, "excess_pubsub_streams")
    return False


class MemoryTransport:
    """One node on a :class:`MemoryNetwork`. Implements :class:`~depin_p2p.gossip.transport.Transport`."""

    def __init__(self, network: MemoryNetwork, peer_id: PeerId, *, inbox_capacity: int) -> None:
        self._net = network
        self._peer_id = peer_id
        self._inbox_capacity = inbox_capacity
        self._inbox: list[tuple[float, int, _Item]] = []
        self._queued = 0  # arrivals for us in the network's queue (while it dispatches)
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._running = False
        self._neighbours: set[PeerId] = set()
        self._subs: dict[str, tuple[Validator, trio.MemorySendChannel[GossipMessage]]] = {}
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._pending: dict[int, _Pending] = {}
        self._rids = itertools.count(1)
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._seen_cap = 65_536
        self._clock = Clock(wall_anchor_ms=0)
        self._counters = TransportCounters()
        self._standing = PeerStanding(
            network.penalty_policy,
            self._clock,
            self._counters,
            lambda peer, _code: network._disconnect(peer_id, peer),
            node=peer_id,
        )
        self._request_send: trio.MemorySendChannel[_Request] | None = None
        self._rate = _default_rate(self._counters)

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @property
    def counters(self) -> TransportCounters:
        return self._counters

    def listen_addrs(self) -> tuple[str, ...]:
        return (ADDR_PREFIX + self._peer_id,)

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self._neighbours)

    def topic_peers(self, topic: str) -> frozenset[PeerId]:
        return frozenset(self._net._subscribers(self._neighbours, topic))

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver this node's inbound traffic until cancelled.

        Cancellation: the node goes offline; its connections are dropped.
        """
        # Requests are served by a fixed pool so a flood of requests queues
        # (bounded) instead of spawning unbounded tasks.
        send, receive = trio.open_memory_channel[_Request](256)
        self._request_send = send
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(self._serve_requests, receive.clone())
                self._running = True
                task_status.started()
                await self._deliver_loop()
        finally:
            self._running = False
            self._request_send = None
            for peer in list(self._neighbours):
                self._net._disconnect(self._peer_id, peer)
            for pending in self._pending.values():
                pending.error = "closed"
                pending.event.set()

    async def _deliver_loop(self) -> None:
        while True:
            now = trio.current_time()
            while self._inbox and self._inbox[0][0] <= now:
                _, _, item = heapq.heappop(self._inbox)
                self._handle(item)
            self._wake = trio.Event()
            if self._inbox:
                with trio.move_on_at(self._inbox[0][0]):
                    await self._wake.wait()
            else:
                await self._wake.wait()

    def _enqueue(self, due: float, item: _Item) -> bool:
        if not self._running or len(self._inbox) + self._queued >= self._inbox_capacity:
            return False
        if self._net._dispatching:
            self._queued += 1
            self._net._dispatch_later(due, self, item)
            return True
        inbox = self._inbox
        # The loop sleeps until its earliest item is due: wake it only if this one is due sooner
        # (with fixed link latency, most arrivals are not, and a wake-up per message would cost
        # a task switch each).
        earlier = not inbox or due < inbox[0][0]
        heapq.heappush(inbox, (due, next(self._seq), item))
        if earlier:
            self._wake.set()
        return True

    def _handle(self, item: _Item) -> None:
        if isinstance(item, _Response):
            pending = self._pending.get(item.rid)
            if pending is not None:
                pending.response, pending.error = item.data, item.error
                pending.event.set()
            return
        if item.sender not in self._neighbours or self.is_banned(item.sender):
            return
        if isinstance(item, _Gossip):
            self._on_gossip(item)
        elif self._request_send is not None:
            try:
                self._request_send.send_nowait(item)
            except trio.WouldBlock:
                self._counters.requests_failed += 1
                self._reply(item, None, "overloaded")

    def _mark_seen(self, mid: bytes) -> bool:
        if mid in self._seen:
            return False
        self._seen[mid] = None
        if len(self._seen) > self._seen_cap:
            self._seen.popitem(last=False)
        return True

    def _on_gossip(self, msg: _Gossip) -> None:
        sub = self._subs.get(msg.topic)
        if sub is None or not self._rate.admit(msg.sender, len(msg.data), trio.current_time()):
            return  # as libp2p, the rate is charged before the seen-cache (over it: no penalty)
        if not self._mark_seen(msg.mid):
            self._counters.duplicates += 1
            return
        validator, channel = sub
        try:
            validator(msg.sender, msg.data)
        except Ignore as exc:
            self._counters.count_ignore(exc.code, msg.sender)
            return
        except Reject as exc:
            self._counters.count_reject(exc.code, msg.sender)
            self.penalise(msg.sender, exc.code)
            return
        except Exception:  # our bug: it costs the message, never the node or the peer
            log.exception("gossip.validator.crashed", topic=msg.topic, peer=msg.sender)
            self._counters.count_reject("validator_error", msg.sender)
            return
        try:
            channel.send_nowait(GossipMessage(msg.topic, msg.data, msg.sender))
            self._counters.delivered += 1
        except trio.WouldBlock:
            self._counters.dropped_subscriber_full += 1
        except trio.BrokenResourceError:
            self._subs.pop(msg.topic, None)
            self._net.changed()
            return
        self._forward(msg.topic, msg.data, msg.mid, exclude=msg.sender)

    def _forward(self, topic: str, data: bytes, mid: bytes, exclude: PeerId | None) -> None:
        item = _Gossip(topic, data, self._peer_id, mid)
        now = trio.current_time()
        for peer in self._net.gossip_targets(self._peer_id, topic):
            if peer != exclude:
                self._net._send(self._peer_id, peer, item, lossy=True, now=now)

    async def _serve_requests(self, receive: trio.MemoryReceiveChannel[_Request]) -> None:
        async with receive:
            async for req in receive:
                await self._serve_one(req)

    async def _serve_one(self, req: _Request) -> None:
        entry = self._handlers.get(req.protocol)
        if entry is None:
            self._counters.requests_failed += 1
            self._reply(req, None, "unsupported_protocol")
            return
        handler, max_request = entry
        if len(req.data) > max_request:
            self._counters.requests_failed += 1
            self.penalise(req.sender, "oversized_request")
            self._reply(req, None, "oversized_request")
            return
        try:
            response = await handler(req.sender, req.data)
        except (Reject, Ignore) as exc:
            if isinstance(exc, Reject):
                self.penalise(req.sender, exc.code)
            self._counters.requests_failed += 1
            self._reply(req, None, exc.code)
            return
        except Exception:
            log.exception("gossip.handler.crashed", protocol=req.protocol, peer=req.sender)
            self._counters.requests_failed += 1
            self._reply(req, None, "handler_error")
            return
        self._counters.requests_served += 1
        self._reply(req, response, None)

    def _reply(self, req: _Request, data: bytes | None, error: str | None) -> None:
        self._net._send(self._peer_id, req.sender, _Response(req.rid, data, error), lossy=False)

    def _emit(self, event: PeerEvent) -> None:
        self._standing.emit(event)

    # ---------------------------------------------------------------- API

    async def connect(self, addr: str, *, redial: bool = True) -> PeerId:
        """Connect to the node at ``memory/<peer id>``. Raises TransportError if absent or banned.

        The memory network keeps no re-dial book: ``redial`` changes nothing here.
        """
        await trio.lowlevel.checkpoint()
        if not addr.startswith(ADDR_PREFIX):
            raise TransportError(f"not a memory address: {addr!r}")
        peer = PeerId(addr[len(ADDR_PREFIX) :])
        self._net._connect(self._peer_id, peer)
        return peer

    async def disconnect(self, peer: PeerId) -> None:
        """Close the link to ``peer`` (both ends see it go); no penalty."""
        await trio.lowlevel.checkpoint()
        self._net._disconnect(self._peer_id, peer)

    async def subscribe(
        self,
        topic: str,
        validator: Validator,
        *,
        capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY,
        prepare: Prepare | None = None,
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join ``topic``; see :meth:`Transport.subscribe`. ``prepare`` is never run: delivery here is
        synchronous, so the simulator stays deterministic; the validator alone decides anyway."""
        await trio.lowlevel.checkpoint()
        send, receive = trio.open_memory_channel[GossipMessage](capacity)
        self._subs[topic] = (validator, send)
        self._net.changed()
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        """Flood ``data`` to subscribed neighbours; never delivered to ourselves."""
        await trio.lowlevel.checkpoint()
        if len(data) > wire.MAX_MESSAGE_BYTES:
            raise TransportError(f"gossip message of {len(data)} bytes exceeds {wire.MAX_MESSAGE_BYTES}")
        mid = message_id((topic,), data)
        self._mark_seen(mid)
        self._counters.published += 1
        self._forward(topic, data, mid, exclude=None)

    def set_handler(
        self, protocol: str, handler: Handler, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        self._handlers[protocol] = (handler, max_request_bytes)

    async def request(
        self,
        peer: PeerId,
        protocol: str,
        data: bytes,
        *,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> bytes:
        """See :meth:`Transport.request`. Cancellation: the pending slot is dropped."""
        if peer not in self._neighbours:
            raise TransportError(f"not connected to {peer}")
        rid = next(self._rids)
        pending = _Pending()
        self._pending[rid] = pending
        try:
            self._net._send(self._peer_id, peer, _Request(rid, protocol, data, self._peer_id), lossy=False)
            with trio.move_on_after(timeout) as scope:
                await pending.event.wait()
            if scope.cancelled_caught:
                raise TransportError(f"request {protocol} to {peer} timed out after {timeout}s")
        finally:
            del self._pending[rid]
        if pending.error is not None or pending.response is None:
            raise TransportError(f"request {protocol} to {peer} failed: {pending.error}")
        if len(pending.response) > max_response_bytes:
            self.penalise(peer, "oversized_response")
            raise TransportError(f"response from {peer} exceeds {max_response_bytes} bytes")
        return pending.response

    def peer_events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._standing.events(capacity)

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer``; logs the first reason per peer; bans and disconnects past the threshold."""
        self._standing.penalise(peer, code)

    def ban(self, peer: PeerId, seconds: float) -> None:
        self._standing.ban(peer, seconds)

    def is_banned(self, peer: PeerId) -> bool:
        return self._standing.is_banned(peer)
