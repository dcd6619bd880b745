"""The guarded ``Pubsub`` and ``GossipSub`` of the libp2p transport (see the package docstring)."""

from __future__ import annotations

import contextlib
import functools
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
import trio
from google.protobuf.message import DecodeError
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.tools.anyio_service.exceptions import LifecycleError
from libp2p.utils.varint import encode_uvarint

from depin_p2p.gossip.libp2p._frames import FrameReader, FrameRefused, FrameStalled
from depin_p2p.gossip.libp2p._records import SenderRecords
from depin_p2p.gossip.libp2p._window import credit_in_halves
from depin_p2p.gossip.penalty import TolerancePolicy, ToleranceTable
from depin_p2p.gossip.transport import PeerId, TransportCounters, message_id

log = structlog.get_logger(__package__)  # one logger for the whole transport, as before the split


def peer_of(pid: Any) -> PeerId:
    """Our peer id of a libp2p ``ID``."""
    return PeerId(pid.to_base58())


class PubsubOwner(Protocol):
    """What :class:`_GuardedPubsub` asks of the transport about remote messages."""

    @property
    def counters(self) -> TransportCounters: ...

    def on_malformed(self, peer_id: Any, code: str, exc: BaseException) -> None: ...

    def rate_ok(self, forwarder: Any, size: int) -> bool: ...

    def validate(self, forwarder: Any, msg: Any) -> bool: ...

    def wants_prepare(self, msg: Any) -> bool: ...

    async def prepare(self, forwarder: Any, msg: Any) -> None: ...

    def penalise(self, peer: PeerId, code: str) -> None: ...


def _contained(async_fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[None]]:
    """``async_fn`` as a task that logs its exception instead of failing its service."""

    @functools.wraps(async_fn)
    async def task(*args: Any) -> None:
        try:
            await async_fn(*args)
        except Exception as exc:  # noqa: BLE001 -- a failed py-libp2p task must not end the node
            name = getattr(async_fn, "__name__", "?")
            log.info("gossip.libp2p.task_failed", task=name, error=repr(exc)[:200])

    return task


def _contain_tasks(service: Any) -> None:
    """Make every task ``service`` schedules from now on unable to end it (and so the node).

    py-libp2p runs most of its per-peer work as tasks of the service's
    manager; one exception in any of them fails the whole service, which
    ends ``background_trio_service`` and our ``run``. Non-daemon tasks are
    wrapped by :func:`_contained`. Scheduling on a service that is stopping
    raises ``RuntimeError('Nursery is closed to new arrivals')`` or
    ``LifecycleError`` into whoever asked (the read loop, ``add_to_blacklist``):
    there is nothing left to run then, so it becomes a no-op. Daemon tasks
    are left alone: a daemon that ends is a broken service, which must stay loud.
    """
    manager = service.manager
    schedule = manager.run_task

    def run_task(async_fn: Any, *args: Any, daemon: bool = False, name: str | None = None, **kw: Any) -> None:
        if not daemon:
            name = name or getattr(async_fn, "__name__", None)
            async_fn = _contained(async_fn)
        try:
            schedule(async_fn, *args, daemon=daemon, name=name, **kw)
        except (RuntimeError, LifecycleError) as exc:
            log.debug("gossip.libp2p.task_not_scheduled", task=name, error=repr(exc)[:200])

    manager.run_task = run_task


def _stream_is_closing(stream: Any) -> bool:
    """True when ``stream`` or its connection is being torn down (best effort over py-libp2p's flags)."""
    conn = getattr(stream, "muxed_conn", None)
    if conn is None or getattr(conn, "is_closed", False):
        return True
    shutting = getattr(conn, "event_shutting_down", None)
    if shutting is not None and shutting.is_set():
        return True
    muxed = getattr(stream, "muxed_stream", None)
    return any(getattr(muxed, flag, False) for flag in ("closed", "reset_received", "recv_closed"))


class _GuardedPubsub(Pubsub):
    """``Pubsub`` whose remote-facing entry points and teardown paths cannot raise into the host.

    ``push_msg`` is re-implemented (not wrapped) so that our validator sees
    the forwarding peer, accepted messages reach our own bounded channels with
    that peer id, and there is no validation cache that would remember an
    ``Ignore`` as a permanent rejection.
    """

    def __init__(
        self,
        host: Any,
        router: Any,
        owner: PubsubOwner,
        *,
        frames: FrameReader,
        outbound_queue_rpcs: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, router, **kwargs)
        self._owner = owner
        self._frames = frames
        self._outbound_queue_rpcs = outbound_queue_rpcs
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()
        # Extra streams beyond what a teardown race gives an honest py-libp2p peer (a few, seen
        # with 16 processes on 2 cores) cost; those within it are only reset.
        self._excess_streams = ToleranceTable(TolerancePolicy(items=16, refill_per_second=1))
        self._sender_records = SenderRecords()

    async def run(self) -> None:
        _contain_tasks(self)
        await super().run()

    async def _handle_new_peer(self, peer_id: Any) -> None:
        await super()._handle_new_peer(peer_id)
        queue = self.peer_queues.get(peer_id)
        if queue is not None:
            # The default 32 RPCs hold only 16 publishes (each also emits an
            # IDONTWANT) and overflow drops silently; size it for a burst.
            queue._queue.max_size = self._outbound_queue_rpcs

    # RPCs already queued for a peer go out as one stream write, from about this many bytes on no
    # more is added (the last one taken may pass it): a yamux frame or two, each one or two Noise
    # messages and syscalls, instead of one of each per RPC.
    batch_bytes = 60 * 1024

    async def handle_sending_messages(self, peer_id: Any, stream: Any, queue: Any) -> None:
        """py-libp2p's per-peer sending loop, writing every RPC queued meanwhile in one write.

        py-libp2p writes each RPC on its own: a yamux frame, a Noise frame and a
        syscall for each 3 kB bundle or 150-byte vote, and the peer reads them
        one by one. Frames, not bytes, are what py-libp2p pays for, and they
        pile up exactly when a node is starved (32 processes on 2 cores: votes
        took 10 s to cross the network). The loop never waits to fill a batch:
        it takes what is there, so an idle node's latency is unchanged. The
        bytes on the stream are the same length-prefixed RPCs, in the same order
        (the priority lane first, as py-libp2p pops it), so any reader reads them
        unchanged; a control frame queued during a write waits for that batch.
        """
        try:
            while True:
                rpc = await queue.pop()
                if rpc is None:
                    return
                batch = [rpc.SerializeToString()]
                size = len(batch[0])
                while size < self.batch_bytes and (more := queue._queue.pop()) is not None:
                    batch.append(more.SerializeToString())
                    size += len(batch[-1])
                if not await self._write_rpcs(stream, batch):
                    return
        except Exception as exc:  # noqa: BLE001 -- as py-libp2p's loop: the peer is dead to us
            log.debug("gossip.send.failed", peer=peer_of(peer_id), error=repr(exc)[:200])
            self._handle_dead_peer(peer_id)

    async def write_msg(self, stream: Any, rpc_msg: Any) -> bool:
        """One RPC on ``stream`` (py-libp2p's replay of recent messages to a new peer writes so)."""
        return await self._write_rpcs(stream, [rpc_msg.SerializeToString()])

    async def _write_rpcs(self, stream: Any, rpcs: list[bytes]) -> bool:
        """Serialized RPCs on ``stream``, each length-prefixed, never interleaved with another writer's.

        Yamux splits a write into 64 KiB frames, each taken under its own
        lock: two tasks writing big RPCs to one stream at once (the sending
        loop and the replay to a new peer) would interleave their frames, and
        the receiver would parse garbage. False when the stream is closed or reset.
        """
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        data = b"".join(encode_uvarint(len(r)) + r for r in rpcs)
        async with lock:
            try:
                await stream.write(data)
            except (StreamClosed, StreamReset):
                self._handle_dead_peer(stream.muxed_conn.peer_id)
                return False
        return True

    async def stream_handler(self, stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id
        if not self._frames.open_stream(peer_id):
            # GossipSub needs one inbound stream per peer; extra ones only hold our memory.
            self._owner.counters.count_excess_stream(peer_of(peer_id))
            if self._excess_streams.excess(peer_of(peer_id), 1, int(trio.current_time() * 1000)):
                self._owner.penalise(peer_of(peer_id), "excess_pubsub_streams")
            with contextlib.suppress(Exception):
                await stream.reset()
            return
        credit_in_halves(stream)  # not a window update per read (see _window.py)
        try:
            await self.continuously_read_stream(stream)
        except (DecodeError, ParseError) as exc:
            # The length-prefixed read returned a whole frame and it does not
            # parse: only a broken or hostile sender writes that, unless the
            # stream is already going away under it.
            if _stream_is_closing(stream):
                log.debug("gossip.stream.failed", peer=peer_of(peer_id), error=repr(exc)[:200])
            else:
                self._owner.on_malformed(peer_id, "malformed_rpc", exc)
        except FrameRefused as exc:
            self._owner.on_malformed(peer_id, exc.code, exc)
        except FrameStalled as exc:
            # Dropped with its stream, never charged: a CPU-starved honest sender stalls too (16
            # processes on 2 cores), and the in-flight budgets already bound what a stall holds.
            log.info("gossip.frame.stalled", peer=peer_of(peer_id), blame=exc.blame, detail=str(exc))
        except Exception as exc:  # noqa: BLE001 -- teardown, reset, cancelled stream, closing nursery, timeout
            # A dead or slow peer, or our own service stopping: not an offence.
            log.debug("gossip.stream.failed", peer=peer_of(peer_id), error=repr(exc)[:200])
        else:
            return
        finally:
            self._frames.close_stream(peer_id)
        with contextlib.suppress(Exception):
            await stream.reset()
        self._handle_dead_peer(peer_id)

    async def continuously_read_stream(self, stream: Any) -> None:
        """py-libp2p's read loop, reading each frame through our :class:`FrameReader`.

        The handling of a parsed RPC is py-libp2p's own (0.8.1), except that a
        peer's unchanged signed peer record is not verified again (``_records.py``).
        A stream that ends or breaks between frames or inside one ends the
        loop quietly, as in py-libp2p.
        """
        peer_id = stream.muxed_conn.peer_id
        try:
            while self.manager.is_running:
                incoming = await self._frames.read(stream, peer_id)
                if incoming is None:
                    return
                rpc_incoming = rpc_pb2.RPC()
                rpc_incoming.ParseFromString(incoming)
                if not self._sender_records.admit(rpc_incoming, self.host, peer_id, trio.current_time()):
                    continue
                if rpc_incoming.publish:
                    counters = self._owner.counters
                    for msg in rpc_incoming.publish:
                        # Keyed by a topic we subscribe to, never by a name a peer made up.
                        ours = next((t for t in msg.topicIDs if t in self.topic_ids), None)
                        counters.count_inbound("other" if ours is None else ours, len(msg.data))
                        if ours is not None and self.manager.is_running:
                            self.manager.run_task(self.push_msg, peer_id, msg)
                subscriptions = rpc_incoming.subscriptions
                if subscriptions and len(subscriptions) <= self.max_subscriptions_per_rpc:
                    for message in subscriptions:
                        self.handle_subscription(peer_id, message)
                if rpc_incoming.HasField("control"):
                    await self.router.handle_rpc(rpc_incoming, peer_id)
        except (StreamEOF, StreamError, IOException, RawConnError, EOFError) as exc:
            log.debug("gossip.stream.ended", peer=peer_of(peer_id), error=repr(exc)[:200])

    def _handle_dead_peer(self, peer_id: Any) -> None:
        # Called from the read loop, the sending loop, write_msg and the
        # dead-peer queue, some of them concurrently for one peer.
        self._sender_records.forget(peer_id)
        try:
            super()._handle_dead_peer(peer_id)
        except Exception as exc:  # noqa: BLE001 -- the peer is gone either way
            log.debug("gossip.libp2p.dead_peer_failed", peer=peer_of(peer_id), error=repr(exc)[:200])

    async def _teardown_if_connected(self, peer_id: Any) -> None:
        """py-libp2p's teardown of a blacklisted peer, tolerating one already torn down.

        The original deletes ``peers[peer_id]`` after awaiting the stream
        reset; meanwhile the sending loop, failing on that very reset, has
        already removed the peer, and the ``KeyError`` ended the node.
        """
        stream = self.peers.get(peer_id)
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.reset()
            if self.peers.get(peer_id) is stream:
                self._handle_dead_peer(peer_id)
        self._forget_all_subscriptions(peer_id)

    async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
        local = msg_forwarder == self.my_id
        charged = False
        try:
            if not local and self._owner.wants_prepare(msg):
                # The transport's own checks first (a banned, flooding or repeating peer costs
                # no preparation), then the hook (it may await: signatures checked on worker
                # threads), then all of them again, since other copies ran meanwhile.
                if not self._admissible(msg_forwarder, msg, self._msg_id_constructor(msg), charge=True):
                    return
                charged = True
                await self._owner.prepare(msg_forwarder, msg)
            admitted = self._admit(msg_forwarder, msg, local=local, charged=charged)
        except Exception as exc:
            if local:
                raise
            # The message was parsed whole and its own fields do not check out.
            self._owner.on_malformed(msg_forwarder, "malformed_message", exc)
            return
        if not admitted:
            return
        try:
            await self.router.publish(msg_forwarder, msg)
        except Exception as exc:
            if local:
                raise
            # Forwarding is our work (and our peers' connections), not the sender's fault.
            log.debug("gossip.forward.failed", peer=peer_of(msg_forwarder), error=repr(exc)[:200])

    def _admit(self, forwarder: Any, msg: Any, *, local: bool, charged: bool = False) -> bool:
        """Our checks of one pubsub message: True to forward it. Raises on a message that cannot be parsed.

        ``charged``: the checks before its ``prepare`` hook counted it in the rate limit and checked
        its pubsub signature already.
        """
        owner = self._owner
        mid = self._msg_id_constructor(msg)
        if local:
            # Our own publish always goes out, seen or not: consensus re-sends its votes as the
            # same bytes for peers that missed them (a receiver that saw them drops a duplicate).
            self.seen_messages.add(mid)
            return True
        if not self._admissible(forwarder, msg, mid, charge=not charged):
            return False
        accepted = owner.validate(forwarder, msg)
        self.seen_messages.add(mid)
        return accepted

    def _admissible(self, forwarder: Any, msg: Any, mid: bytes, *, charge: bool) -> bool:
        """The transport's checks before our validator: not banned, new; with ``charge`` (the first
        time) also within rate and with a good pubsub signature."""
        owner = self._owner
        if self.is_peer_blacklisted(forwarder) or (charge and not owner.rate_ok(forwarder, len(msg.data))):
            return False
        if self.seen_messages.has(mid):
            owner.counters.duplicates += 1
            return False
        if charge and not signature_validator(msg):
            owner.penalise(peer_of(forwarder), "bad_pubsub_signature")
            return False
        return ID(msg.from_id) != self.my_id  # claims to be ours but we never published it


class _GossipSub(GossipSub):
    """GossipSub that does not send IDONTWANT for messages under ``idontwant_min_bytes``.

    py-libp2p sends one IDONTWANT RPC to every mesh peer for every message it
    receives or publishes. On a 5-process loopback mesh that doubled or
    tripled the median latency of 3 KB messages (measured: p50 1009 ms vs
    399 ms and 276 ms vs 41 ms in back-to-back runs), because frames, not
    bytes, are what py-libp2p pays for. We still honour the IDONTWANTs that
    other peers send us. go-libp2p's threshold is 1 KiB; ours is 64 KiB:
    never for the few-kB bundles, votes, commit notices and transactions,
    always for proposals (100 kB to 1 MiB each). There one small
    control frame saves a whole copy: at 32 processes with 1 radio each the
    proposal bytes a node read fell from about 12.6 to 7.5 MB over 10 epochs,
    every epoch in round 0 both times (bench/scale.py, docs/LIBP2P_NOTES.md).
    """

    idontwant_min_bytes = 64 * 1024
    # A GRAFT this soon after the sender's PRUNE reached us is a flood (libp2p score penalty
    # and a PRUNE back). py-libp2p's 10 s equals our 10 s back-off: no room for a PRUNE that
    # queued for seconds on a busy machine, so honest peers were flagged. go-libp2p keeps
    # 1/6 of the back-off (10 s of 60 s); so do we.
    graft_flood_threshold_s = 2.0
    # How far past a back-off's end our own GRAFTs wait, and how early a peer's is taken.
    back_off_slack_s = 3.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graft_flood_threshold = self.graft_flood_threshold_s

    async def publish(self, msg_forwarder: Any, pubsub_msg: Any) -> None:
        self._idontwant_enabled = len(pubsub_msg.data) >= self.idontwant_min_bytes
        await super().publish(msg_forwarder, pubsub_msg)

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Any) -> None:
        if getattr(self, "_idontwant_enabled", True):
            await super()._emit_idontwant_for_message(msg_id, topic_ids)

    def mesh_heartbeat(self) -> Any:
        """py-libp2p's mesh maintenance, with a back-off for each peer it prunes (as go-libp2p).

        Without it, a heartbeat that found the mesh under ``degree_low`` could
        GRAFT a peer pruned a second earlier, which that peer logs and scores
        as a GRAFT flood (thousands of lines in minutes at 16 processes).
        """
        graft, prune = super().mesh_heartbeat()
        for peer, topics in prune.items():
            for t in topics:
                self._add_back_off(peer, t, False)
        return graft, prune

    def _check_back_off(self, peer: Any, topic: str) -> bool:
        """Whether ``peer`` is backed off on ``topic`` (no GRAFT, IHAVE, fanout): its end plus a slack.

        Both ends of a PRUNE count the same back-off, each from its own clock:
        the side that pruned from when it sent the PRUNE, the other from when it
        read it, seconds later on a starved machine. The first side's back-off
        ends first, its GRAFT reaches a peer still backed off, which ignores it,
        starts a new back-off and PRUNEs back, and the roles swap: a ping-pong
        for as long as both want each other. At 32 processes 45 % of 6,978
        "GRAFT: ignoring" lines came in the last 3 s of a back-off. go-libp2p
        keeps a back-off two heartbeats past its end; we wait
        ``back_off_slack_s``, and (:meth:`handle_graft`) take a GRAFT as that
        much early.
        """
        till = self.back_off.get(topic, {}).get(peer)
        if till is None:
            return False
        if till + self.back_off_slack_s > time.time():
            return True
        del self.back_off[topic][peer]
        return False

    async def handle_graft(self, graft_msg: Any, sender_peer_id: Any) -> None:
        """py-libp2p's GRAFT handling, taking a GRAFT within ``back_off_slack_s`` of a back-off's end.

        A GRAFT refused for another reason (a flood, a graylisted or direct
        peer) keeps the back-off it found: py-libp2p prunes such a sender
        without backing off itself.
        """
        topic = graft_msg.topicID
        till = self.back_off.get(topic, {}).get(sender_peer_id)
        early = till is not None and till - self.back_off_slack_s <= time.time()
        if early:
            del self.back_off[topic][sender_peer_id]
        await super().handle_graft(graft_msg, sender_peer_id)
        if till is not None and early and sender_peer_id not in self.mesh.get(topic, ()):
            backs = self.back_off.setdefault(topic, {})
            backs[sender_peer_id] = max(backs.get(sender_peer_id, 0), till)

    async def _emit_control_msgs(
        self,
        peers_to_graft: dict[Any, list[str]],
        peers_to_prune: dict[Any, list[str]],
        peers_to_gossip: dict[Any, dict[str, list[bytes]]],
    ) -> None:
        """One control frame per peer with that peer's GRAFTs, PRUNEs and IHAVEs, nothing else.

        py-libp2p 0.8.1 builds the lists once before its loop over the peers to
        graft and never empties them, so each peer grafted in a heartbeat also
        got every earlier one's GRAFTs, PRUNEs and IHAVEs: peers grafted us on
        topics we never chose them for, against our back-off (29,749 "GRAFT:
        ignoring request" lines in 15 minutes at 32 processes), and pruned us
        where we had not pruned them. Epoch 1 never committed there.
        """
        for peer in dict.fromkeys([*peers_to_graft, *peers_to_prune, *peers_to_gossip]):
            grafts = [rpc_pb2.ControlGraft(topicID=t) for t in peers_to_graft.get(peer, ())]
            prunes = [rpc_pb2.ControlPrune(topicID=t) for t in peers_to_prune.get(peer, ())]
            ihaves = [
                rpc_pb2.ControlIHave(messageIDs=ids, topicID=t)
                for t, ids in peers_to_gossip.get(peer, {}).items()
            ]
            await self.emit_control_message(self.pack_control_msgs(ihaves, grafts, prunes), peer)

    def _prune_pending_messages(self, peer_id: Any) -> None:
        """py-libp2p's pruning of the messages queued for a peer not yet subscribed, without a rebuild.

        py-libp2p queues every message it publishes or forwards for each
        connected peer not (yet) in its topic's peer list (bounded by
        ``max_pending_messages_per_peer`` and ``pending_messages_ttl``, set in
        ``transport.py``), and rebuilds that peer's whole queue before each
        append: 7 % of a node's samples in a 16-process devnet. The queue is in
        time order, so the expired messages and the excess are both a prefix:
        same result, one slice deleted.
        """
        queue = self._pending_messages.get(peer_id)
        if queue is None:
            return
        now, ttl = time.time(), self._pending_messages_ttl
        drop = 0
        while drop < len(queue) and now - queue[drop][0] > ttl:
            drop += 1
        drop = max(drop, len(queue) - self._max_pending_messages_per_peer)
        if drop:
            del queue[:drop]
        if not queue:
            self._pending_messages.pop(peer_id, None)

    def _check_equivocation(self, msg: Any) -> bool:
        """py-libp2p's equivocation check, remembering a 32-byte digest instead of the message.

        py-libp2p keeps the first message of every (from, seqno) it forwards
        (up to 1,000, trimmed to 500 each heartbeat). With protobuf's upb
        backend a kept sub-message holds on to the arena of the whole RPC
        frame it was parsed from, memory tracemalloc does not see: 2,000 kept
        messages out of 20 KB frames held 58 MB of RSS and 0.2 MB traced.
        """
        key = msg.from_id + msg.seqno
        digest = message_id(tuple(msg.topicIDs), msg.data)
        seen = self.equivocation_detection.get(key)
        if seen is None:
            # The heartbeat still trims this dict by count; only its values change type.
            self.equivocation_detection[key] = digest  # type: ignore[assignment]
            return True
        if seen == digest:
            return True
        if self.scorer is not None:
            self.scorer.penalize_equivocation(ID(msg.from_id), 100.0)
        return False
