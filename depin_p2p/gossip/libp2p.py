"""The libp2p transport: TCP + Noise + Yamux, GossipSub, request/response streams.

The ONLY module that imports libp2p; ``Any`` from its untyped API stays here.
Importing it has no side effect beyond importing libp2p itself.

py-libp2p 0.8.1 needs defending (see ``LIBP2P_NOTES.md``):

- A pubsub frame that is not valid protobuf, or a message whose ``key`` is
  garbage, raises out of ``Pubsub.stream_handler`` / ``push_msg`` and ends
  the whole trio run. :class:`_GuardedPubsub` overrides both: the stream is
  reset, the peer is charged a severe penalty (a ban), the node keeps running.
- Exceptions in our validators and request handlers are caught here too.
- Built-in spam protection (10 msg/s per peer and topic, own publishes
  included) and adaptive gossip are off; we rate-limit per peer ourselves and
  trim ``recent_message_deliveries`` which otherwise grows without bound.
- A frozen peer is never noticed by libp2p: we ping every peer and drop the
  ones that miss several pings in a row; the ping timeout grows with our own
  measured event-loop lag, and a round during which our own loop stalled
  judges nobody. Restarted peers are re-dialled from our own address book
  with back-off, not libp2p's 60 s reconnect.
- libp2p's peer scoring never disconnects: our penalty table does.
- Only a proven offence costs a peer. A pubsub frame is malformed only when
  it was read whole and fails to parse while its stream is still open; a
  stream that fails while a connection is torn down, a cancelled stream, a
  nursery closing or a timeout is a dead or slow peer: the stream is reset
  and the peer dropped, never penalised. Exceptions raised while *we*
  forward an accepted message never cost the peer that sent it.
- py-libp2p writes to a peer's pubsub stream from several tasks at once (the
  per-peer sending loop, the replay of recent messages to a new peer, the
  flush of pending messages): a message over one 64 KiB Yamux frame is then
  interleaved with another and the receiver reads garbage, for which it
  would ban an honest peer. :meth:`_GuardedPubsub.write_msg` serialises the
  writes of each stream.
- Teardown races end the node in py-libp2p: ``_teardown_if_connected``
  deletes ``peers[peer_id]`` after an ``await`` during which the sending
  loop's dead-peer handler may already have deleted it (``KeyError``), and
  scheduling a task on a stopping service raises ``RuntimeError('Nursery is
  closed to new arrivals')`` into the read loop or into ``add_to_blacklist``.
  Every non-daemon task the pubsub service schedules is contained (an
  exception is logged, never propagated into the service), scheduling on a
  stopped service is a no-op, and the teardown paths tolerate a peer that
  is already gone. (GossipSub itself schedules only its heartbeat daemon.)
"""

from __future__ import annotations

import contextlib
import functools
import struct
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose stale trio-stubs shadow trio's own
    # annotations and lack trio.TaskStatus; its TaskStatus is the same protocol.
    from trio_typing import TaskStatus

# libp2p is imported at module level (side-effect free apart from its own
# logger reset); every name from it is untyped, hence the Any below.
from google.protobuf.message import DecodeError
from libp2p import new_host
from libp2p.abc import INotifee
from libp2p.crypto import ed25519 as _ed25519
from libp2p.crypto import x25519 as _x25519
from libp2p.custom_types import TProtocol
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.tools.anyio_service.exceptions import LifecycleError
from multiaddr import Multiaddr

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Ignore, Reject, TransportError
from depin_p2p.gossip.liveness import LivenessPolicy, LoopLag, MissedPings
from depin_p2p.gossip.penalty import PenaltyPolicy, PenaltyTable
from depin_p2p.gossip.transport import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SUBSCRIPTION_CAPACITY,
    GossipMessage,
    Handler,
    PeerEvent,
    PeerId,
    TransportCounters,
    Validator,
    protocol,
)

log = structlog.get_logger(__name__)

_LEN = struct.Struct(">I")
PING_PAYLOAD_BYTES = 8


@dataclass(frozen=True, slots=True)
class Libp2pConfig:
    """Tunables of the libp2p transport; defaults suit a LAN devnet."""

    listen_addr: str = "/ip4/127.0.0.1/tcp/0"
    heartbeat_interval: int = 1  # GossipSub heartbeat, seconds (libp2p default: 120)
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    dial_timeout: float = 5.0
    redial_min: float = 0.5
    redial_max: float = 5.0  # bounds how long a restarted peer waits for us; dials are cheap
    # Liveness (see depin_p2p.gossip.liveness): ping quiet peers every 1.5 s, wait 3 s plus
    # 4 x our own recent event-loop lag (at most 30 s), drop after 3 misses in a row.
    liveness: LivenessPolicy = field(default_factory=LivenessPolicy)
    lag_sample_interval: float = 0.25
    rate_limit_per_second: int = 2_000  # gossip messages accepted per forwarding peer
    rate_limit_burst: int = 4_000
    max_inbound_rpc_bytes: int = wire.MAX_MESSAGE_BYTES + 64 * 1024
    seen_ttl: int = 120
    outbound_queue_rpcs: int = 1024  # per-peer outbound queue (libp2p default: 32, dropped silently)


def libp2p_key_pair(key: KeyPair) -> Any:
    """The libp2p key pair of our node key (same seed, same peer id)."""
    return _ed25519.create_new_key_pair(key.seed)


def _peer(pid: Any) -> PeerId:
    return PeerId(pid.to_base58())


class _TokenBucket:
    """Integer-free token bucket on trio time; one per forwarding peer."""

    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


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

    def __init__(self, host: Any, router: Any, owner: Libp2pTransport, **kwargs: Any) -> None:
        super().__init__(host, router, **kwargs)
        self._owner = owner
        self._write_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()

    async def run(self) -> None:
        _contain_tasks(self)
        await super().run()

    async def _handle_new_peer(self, peer_id: Any) -> None:
        await super()._handle_new_peer(peer_id)
        queue = self.peer_queues.get(peer_id)
        if queue is not None:
            # The default 32 RPCs hold only 16 publishes (each also emits an
            # IDONTWANT) and overflow drops silently; size it for a burst.
            queue._queue.max_size = self._owner.config.outbound_queue_rpcs

    async def write_msg(self, stream: Any, rpc_msg: Any) -> bool:
        """One RPC on ``stream``, never interleaved with another writer's.

        Yamux splits a write into 64 KiB frames, each taken under its own
        lock: two tasks writing big RPCs to one stream at once (py-libp2p's
        sending loop and its replay of recent messages to a new peer do)
        interleave their frames, and the receiver parses garbage.
        """
        lock = self._write_locks.get(stream)
        if lock is None:
            lock = self._write_locks[stream] = trio.Lock()
        async with lock:
            ok: bool = await super().write_msg(stream, rpc_msg)
            return ok

    async def stream_handler(self, stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id
        try:
            await self.continuously_read_stream(stream)
        except (DecodeError, ParseError) as exc:
            # The length-prefixed read returned a whole frame and it does not
            # parse: only a broken or hostile sender writes that, unless the
            # stream is already going away under it.
            if _stream_is_closing(stream):
                log.debug("gossip.stream.failed", peer=_peer(peer_id), error=repr(exc)[:200])
            else:
                self._owner._on_malformed(peer_id, "malformed_rpc", exc)
        except Exception as exc:  # noqa: BLE001 -- teardown, reset, cancelled stream, closing nursery, timeout
            # A dead or slow peer, or our own service stopping: not an offence.
            log.debug("gossip.stream.failed", peer=_peer(peer_id), error=repr(exc)[:200])
        else:
            return
        with contextlib.suppress(Exception):
            await stream.reset()
        self._handle_dead_peer(peer_id)

    def _handle_dead_peer(self, peer_id: Any) -> None:
        # Called from the read loop, the sending loop, write_msg and the
        # dead-peer queue, some of them concurrently for one peer.
        try:
            super()._handle_dead_peer(peer_id)
        except Exception as exc:  # noqa: BLE001 -- the peer is gone either way
            log.debug("gossip.libp2p.dead_peer_failed", peer=_peer(peer_id), error=repr(exc)[:200])

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
        try:
            admitted = self._admit(msg_forwarder, msg, local=local)
        except Exception as exc:
            if local:
                raise
            # The message was parsed whole and its own fields do not check out.
            self._owner._on_malformed(msg_forwarder, "malformed_message", exc)
            return
        if not admitted:
            return
        try:
            await self.router.publish(msg_forwarder, msg)
        except Exception as exc:
            if local:
                raise
            # Forwarding is our work (and our peers' connections), not the sender's fault.
            log.debug("gossip.forward.failed", peer=_peer(msg_forwarder), error=repr(exc)[:200])

    def _admit(self, forwarder: Any, msg: Any, *, local: bool) -> bool:
        """Our checks of one pubsub message: True to forward it. Raises on a message that cannot be parsed."""
        owner = self._owner
        if not local and (self.is_peer_blacklisted(forwarder) or not owner._rate_ok(forwarder)):
            return False
        mid = self._msg_id_constructor(msg)
        if self.seen_messages.has(mid):
            if not local:
                owner._counters.duplicates += 1
            return False
        if not local:
            if not signature_validator(msg):
                owner.penalise(_peer(forwarder), "bad_pubsub_signature")
                return False
            if ID(msg.from_id) == self.my_id:
                return False  # claims to be ours but we never published it
            accepted = owner._validate(forwarder, msg)
            self.seen_messages.add(mid)
            return accepted
        self.seen_messages.add(mid)
        return True


class _GossipSub(GossipSub):
    """GossipSub that does not send IDONTWANT for messages under ``idontwant_min_bytes``.

    py-libp2p sends one IDONTWANT RPC to every mesh peer for every message it
    receives or publishes. On a 5-process loopback mesh that doubled or
    tripled the median latency of 3 KB messages (measured: p50 1009 ms vs
    399 ms and 276 ms vs 41 ms in back-to-back runs), because frames, not
    bytes, are what py-libp2p pays for. We still honour the IDONTWANTs that
    other peers send us. go-libp2p's threshold is 1 KiB; ours defaults to
    "never" for the bundle sizes we send.
    """

    idontwant_min_bytes = wire.MAX_MESSAGE_BYTES + 1

    async def publish(self, msg_forwarder: Any, pubsub_msg: Any) -> None:
        self._idontwant_enabled = len(pubsub_msg.data) >= self.idontwant_min_bytes
        await super().publish(msg_forwarder, pubsub_msg)

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Any) -> None:
        if getattr(self, "_idontwant_enabled", True):
            await super()._emit_idontwant_for_message(msg_id, topic_ids)


class _Notifee(INotifee):
    """Connection events into the transport; never blocks, never raises."""

    def __init__(self, owner: Libp2pTransport) -> None:
        self._owner = owner

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def connected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._owner._on_connection_change(conn.muxed_conn.peer_id)

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._owner._on_connection_change(conn.muxed_conn.peer_id)

    async def listen(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()


@dataclass(slots=True)
class _BookEntry:
    addr: str
    next_attempt: float = 0.0
    backoff: float = 0.0


async def _read_exactly(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise TransportError("stream closed mid-frame")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream: Any, max_bytes: int, code: str) -> bytes:
    (length,) = _LEN.unpack(await _read_exactly(stream, _LEN.size))
    if length > max_bytes:
        raise Reject(code, f"{length} bytes > cap {max_bytes}")
    return await _read_exactly(stream, length)


class Libp2pTransport:
    """A node's libp2p network. Implements :class:`~depin_p2p.gossip.transport.Transport`.

    Args:
        key: the node key; its seed is also the libp2p identity.
        network_id: names the ping protocol (``/depin/<network>/ping/1``).
        clock: the node clock (penalties and bans are in its milliseconds).
        config: tunables.
        penalty_policy: scores and ban length.
    """

    def __init__(
        self,
        key: KeyPair,
        *,
        network_id: str,
        clock: Clock,
        config: Libp2pConfig | None = None,
        penalty_policy: PenaltyPolicy | None = None,
    ) -> None:
        self.config = config or Libp2pConfig()
        self._clock = clock
        self._network_id = network_id
        self._ping_protocol = protocol(network_id, "ping")
        self._peer_id = PeerId(key.peer_id)
        self._counters = TransportCounters()
        self._penalties = PenaltyTable(penalty_policy)
        self._blacklisted: set[PeerId] = set()
        self._subs: dict[str, tuple[Validator, trio.MemorySendChannel[GossipMessage]]] = {}
        self._event_channels: list[trio.MemorySendChannel[PeerEvent]] = []
        self._connected: set[PeerId] = set()
        self._book: dict[PeerId, _BookEntry] = {}
        self._buckets: dict[Any, _TokenBucket] = {}
        # When each peer last sent us gossip: a peer that talks is alive, so
        # pings (which a busy, CPU-starved node may answer late) only judge
        # the quiet ones.
        self._heard: dict[PeerId, float] = {}
        self._kick_send, self._kick_receive = trio.open_memory_channel[PeerId](1024)
        self._lag = LoopLag(self.config.liveness)
        kp = libp2p_key_pair(key)
        # The Noise static key is ephemeral on purpose: identity is the signed libp2p key.
        noise = NoiseTransport(kp, noise_privkey=_x25519.create_new_key_pair().private_key)
        muxers: Any = {YAMUX_PROTOCOL_ID: Yamux}
        self._host: Any = new_host(key_pair=kp, sec_opt={NOISE_PROTOCOL_ID: noise}, muxer_opt=muxers)
        self._router: Any = _GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=self.config.degree,
            degree_low=self.config.degree_low,
            degree_high=self.config.degree_high,
            heartbeat_interval=self.config.heartbeat_interval,
            heartbeat_initial_delay=0.1,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            prune_back_off=10,
        )
        self._pubsub: Any = _GuardedPubsub(
            self._host,
            self._router,
            self,
            msg_id_constructor=lambda msg: wire.content_id(msg.data),
            seen_ttl=self.config.seen_ttl,
            max_inbound_rpc_size=self.config.max_inbound_rpc_bytes,
        )
        self._host.get_network().register_notifee(_Notifee(self))
        self._host.set_stream_handler(TProtocol(self._ping_protocol), self._serve_ping)
        self._listen: tuple[str, ...] = ()

    # ------------------------------------------------------------ lifecycle

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @property
    def counters(self) -> TransportCounters:
        return self._counters

    def listen_addrs(self) -> tuple[str, ...]:
        return self._listen

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, run GossipSub and our maintenance tasks until cancelled.

        Raises TransportError if the listen address cannot be bound.
        Cancellation: closes every connection and stops listening.
        """
        try:
            async with (
                self._host.run([Multiaddr(self.config.listen_addr)]),
                background_trio_service(self._pubsub),
                background_trio_service(self._router),
            ):
                await self._pubsub.wait_until_ready()
                self._listen = tuple(
                    f"{a}/p2p/{self._peer_id}" if "/p2p/" not in str(a) else str(a)
                    for a in self._host.get_addrs()
                )
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._kick_loop)
                    nursery.start_soon(self._maintenance_loop)
                    nursery.start_soon(self._lag_loop)
                    nursery.start_soon(self._ping_loop)
                    log.info("gossip.transport.started", peer=self._peer_id, addrs=list(self._listen))
                    task_status.started()
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.config.listen_addr}: {exc}") from exc

    # ---------------------------------------------------------- callbacks

    def _on_malformed(self, peer_id: Any, code: str, exc: BaseException) -> None:
        peer = _peer(peer_id)
        self._counters.malformed_frames += 1
        log.debug("gossip.frame.malformed", peer=peer, code=code, error=repr(exc)[:200])
        self.penalise(peer, code)

    def _rate_ok(self, forwarder: Any) -> bool:
        now = trio.current_time()
        self._heard[_peer(forwarder)] = now
        bucket = self._buckets.get(forwarder)
        if bucket is None:
            if len(self._buckets) > 4096:
                self._buckets.clear()
            bucket = self._buckets[forwarder] = _TokenBucket(self.config.rate_limit_burst, now)
        refill = (now - bucket.at) * self.config.rate_limit_per_second
        bucket.tokens = min(self.config.rate_limit_burst, bucket.tokens + refill)
        bucket.at = now
        if bucket.tokens < 1:
            self._counters.dropped_rate_limited += 1
            return False
        bucket.tokens -= 1
        return True

    def _validate(self, forwarder: Any, msg: Any) -> bool:
        """Run our validators for the message's topics: True to deliver and forward."""
        peer = _peer(forwarder)
        topics = [t for t in msg.topicIDs if t in self._subs]
        if not topics:
            return False
        data = bytes(msg.data)
        for topic in topics:
            validator, _ = self._subs[topic]
            try:
                validator(peer, data)
            except Ignore:
                self._counters.ignored += 1
                return False
            except Reject as exc:
                self._counters.count_reject(exc.code)
                self.penalise(peer, exc.code)
                return False
            except Exception:  # a bug in our validator must cost the message, never the node
                log.exception("gossip.validator.crashed", topic=topic, peer=peer)
                self._counters.count_reject("validator_error")
                self.penalise(peer, "validator_error")
                return False
        for topic in topics:
            _, channel = self._subs[topic]
            try:
                channel.send_nowait(GossipMessage(topic, data, peer))
                self._counters.delivered += 1
            except trio.WouldBlock:
                self._counters.dropped_subscriber_full += 1
            except trio.BrokenResourceError:
                self._subs.pop(topic, None)
        return True

    def _on_connection_change(self, peer_id: Any) -> None:
        peer = _peer(peer_id)
        connected = bool(self._host.get_network().get_connections(peer_id))
        if connected and self.is_banned(peer):
            self._kick(peer)
            return
        if connected == (peer in self._connected):
            return
        if connected:
            self._connected.add(peer)
        else:
            self._connected.discard(peer)
        self._emit(PeerEvent(peer, connected))

    def _emit(self, event: PeerEvent) -> None:
        for channel in list(self._event_channels):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                self._counters.dropped_peer_events_full += 1
            except trio.BrokenResourceError:
                self._event_channels.remove(channel)

    def _kick(self, peer: PeerId) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._kick_send.send_nowait(peer)

    async def _kick_loop(self) -> None:
        async for peer in self._kick_receive:
            with trio.move_on_after(self.config.dial_timeout):
                await self._disconnect(peer)

    async def _disconnect(self, peer: PeerId) -> None:
        try:
            await self._host.disconnect(ID.from_base58(peer))
        except Exception as exc:  # noqa: BLE001 -- closing a dying connection may fail in many ways
            log.debug("gossip.peer.disconnect_failed", peer=peer, error=repr(exc)[:200])
        self._on_connection_change(ID.from_base58(peer))

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(0.25)
            now_ms = self._clock.now_ms()
            for peer in [p for p in self._blacklisted if not self._penalties.is_banned(p, now_ms)]:
                self._blacklisted.discard(peer)
                self._pubsub.remove_from_blacklist(ID.from_base58(peer))
            # Adaptive gossip is off, so nothing else trims this list.
            self._router.recent_message_deliveries.clear()
            await self._redial_due()

    async def _redial_due(self) -> None:
        now = trio.current_time()
        due = [
            (peer, entry)
            for peer, entry in self._book.items()
            if peer not in self._connected and not self.is_banned(peer) and entry.next_attempt <= now
        ]
        if not due:
            return
        async with trio.open_nursery() as nursery:
            for peer, entry in due:
                nursery.start_soon(self._redial, peer, entry)

    async def _redial(self, peer: PeerId, entry: _BookEntry) -> None:
        try:
            await self._dial(entry.addr)
        except TransportError as exc:
            entry.backoff = min(self.config.redial_max, max(self.config.redial_min, entry.backoff * 2))
            entry.next_attempt = trio.current_time() + entry.backoff
            log.debug("gossip.peer.redial_failed", peer=peer, backoff=entry.backoff, error=str(exc)[:200])
        else:
            entry.backoff = 0.0
            log.info("gossip.peer.redialled", peer=peer)

    @staticmethod
    def _now_ms() -> int:
        return int(trio.current_time() * 1000)

    async def _lag_loop(self) -> None:
        """Measure how late our own event loop runs: the ping loop's yardstick."""
        period = self.config.lag_sample_interval
        while True:
            before = trio.current_time()
            await trio.sleep(period)
            after = trio.current_time()
            self._lag.record(int(after * 1000), int((after - before - period) * 1000))

    async def _ping_loop(self) -> None:
        policy = self.config.liveness
        missed = MissedPings(policy)
        interval = policy.interval_ms / 1000
        while True:
            await trio.sleep(interval)
            started = self._now_ms()
            timeout_ms = self._lag.timeout_ms(started)
            now = trio.current_time()
            quiet = [p for p in self._connected if now - self._heard.get(p, -1e9) > interval]
            results: dict[PeerId, bool] = {}
            async with trio.open_nursery() as nursery:
                for peer in quiet:
                    nursery.start_soon(self._ping_one, peer, results, timeout_ms / 1000)
            judgeable = self._lag.round_is_judgeable(started, self._now_ms(), timeout_ms)
            if not judgeable and quiet:
                log.info("gossip.ping.round_skipped", lag_ms=self._lag.recent_ms(self._now_ms()))
            for peer in quiet:
                if results.get(peer, False) or trio.current_time() - self._heard.get(peer, -1e9) < 1:
                    missed.answered(peer)
                    continue
                if not judgeable:
                    continue  # our loop stalled: the round proves nothing about the peer
                if missed.missed(peer):
                    self._counters.peers_dropped_unresponsive += 1
                    log.warning(
                        "gossip.peer.unresponsive", peer=peer, timeout_ms=timeout_ms, missed=policy.failures
                    )
                    self._kick(peer)
            missed.forget_except(frozenset(self._connected))
            for peer in [p for p in self._heard if p not in self._connected]:
                del self._heard[peer]

    async def _ping_one(self, peer: PeerId, results: dict[PeerId, bool], timeout: float) -> None:
        payload = self._clock.now_ms().to_bytes(PING_PAYLOAD_BYTES, "big")
        try:
            answer = await self._exchange(peer, self._ping_protocol, payload, timeout, 64)
        except TransportError:
            results[peer] = False
        else:
            results[peer] = answer == payload
            if results[peer]:
                self._heard[peer] = trio.current_time()

    async def _serve_ping(self, stream: Any) -> None:
        async def echo(peer: PeerId, data: bytes) -> bytes:
            await trio.lowlevel.checkpoint()
            return data

        await self._serve(stream, echo, PING_PAYLOAD_BYTES)

    # ------------------------------------------------------- request/response

    async def _serve(self, stream: Any, handler: Handler, max_request: int) -> None:
        """Answer one request on ``stream``; every failure resets the stream, none escapes."""
        peer = _peer(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(self.config.dial_timeout):
                data = await _read_frame(stream, max_request, "oversized_request")
            response = await handler(peer, data)
            with trio.fail_after(self.config.dial_timeout):
                await stream.write(_LEN.pack(len(response)) + response)
                await stream.close()
        except Reject as exc:
            self.penalise(peer, exc.code)
        except (Ignore, TransportError, IOException, trio.TooSlowError):
            pass
        except Exception:  # a bug in a handler must cost the request, never the node
            log.exception("gossip.handler.crashed", peer=peer)
        else:
            self._counters.requests_served += 1
            return
        self._counters.requests_failed += 1
        with contextlib.suppress(Exception):
            await stream.reset()

    async def _exchange(
        self, peer: PeerId, proto: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        stream: Any = None
        done = False
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer), [proto])
                await stream.write(_LEN.pack(len(data)) + data)
                response = await _read_frame(stream, max_response, "oversized_response")
                done = True
                return response
        except trio.TooSlowError:
            raise TransportError(f"{proto} to {peer} timed out after {timeout}s") from None
        except Reject as exc:
            self.penalise(peer, exc.code)
            raise TransportError(f"{proto} to {peer}: {exc.code}") from None
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 -- libp2p raises many unrelated types for a failed stream
            raise TransportError(f"{proto} to {peer} failed: {exc!r:.200}") from None
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await (stream.close() if done else stream.reset())

    def set_handler(
        self, protocol: str, handler: Handler, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        """Serve ``protocol`` with ``handler``; see :meth:`Transport.set_handler`."""

        async def serve(stream: Any) -> None:
            await self._serve(stream, handler, max_request_bytes)

        self._host.set_stream_handler(TProtocol(protocol), serve)

    async def request(
        self,
        peer: PeerId,
        protocol: str,
        data: bytes,
        *,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> bytes:
        """One exchange on a fresh stream; see :meth:`Transport.request`. Cancellation resets the stream."""
        return await self._exchange(peer, protocol, data, timeout, max_response_bytes)

    # --------------------------------------------------------------- gossip

    async def subscribe(
        self, topic: str, validator: Validator, *, capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join ``topic``; see :meth:`Transport.subscribe`."""
        send, receive = trio.open_memory_channel[GossipMessage](capacity)
        self._subs[topic] = (validator, send)
        await self._pubsub.subscribe(topic)
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data``; raises TransportError only for our own oversized message."""
        if len(data) > wire.MAX_MESSAGE_BYTES:
            raise TransportError(f"gossip message of {len(data)} bytes exceeds {wire.MAX_MESSAGE_BYTES}")
        self._counters.published += 1
        await self._pubsub.publish(topic, data)

    def topic_peers(self, topic: str) -> frozenset[PeerId]:
        """Peers our messages on ``topic`` go to now (the mesh when subscribed)."""
        if topic in self._subs:
            return frozenset(_peer(p) for p in self._router.mesh.get(topic, ()))
        return frozenset(_peer(p) for p in self._pubsub.peer_topics.get(topic, ()))

    # ---------------------------------------------------------------- peers

    async def _dial(self, addr: str) -> PeerId:
        try:
            info = info_from_p2p_addr(Multiaddr(addr))
        except Exception as exc:  # noqa: BLE001 -- multiaddr parsing raises assorted types
            raise TransportError(f"bad address {addr!r}: {exc}") from None
        peer = _peer(info.peer_id)
        if self.is_banned(peer):
            raise TransportError(f"{peer} is banned")
        # The swarm refuses for 60 s any peer whose addresses all failed once
        # (its "negative cache"); a restarted peer would wait a minute. Our
        # address book does the back-off, so forget that verdict before dialling.
        cache = getattr(self._host.get_network(), "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(info.peer_id))
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self._host.connect(info)
        except trio.TooSlowError:
            raise TransportError(f"dial {addr} timed out") from None
        except Exception as exc:  # noqa: BLE001 -- libp2p dial errors have no common base
            raise TransportError(f"dial {addr} failed: {exc!r:.200}") from None
        self._on_connection_change(info.peer_id)
        return peer

    async def connect(self, addr: str) -> PeerId:
        """Dial a ``/ip4/.../tcp/.../p2p/<id>`` address and keep it in the address book."""
        peer = await self._dial(addr)
        self._book[peer] = _BookEntry(addr)
        return peer

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self._connected)

    def peer_events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        send, receive = trio.open_memory_channel[PeerEvent](capacity)
        self._event_channels.append(send)
        return receive

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer``; logs the first reason per peer; bans and disconnects past the threshold."""
        outcome = self._penalties.penalise(peer, code, self._clock.now_ms())
        if outcome.first:
            log.warning("gossip.peer.penalised", peer=peer, code=code)
        if outcome.banned:
            self._apply_ban(peer, code)

    def ban(self, peer: PeerId, seconds: float) -> None:
        self._penalties.ban(peer, self._clock.now_ms() + int(seconds * 1000))
        self._apply_ban(peer, "explicit")

    def _apply_ban(self, peer: PeerId, code: str) -> None:
        self._counters.peers_banned += 1
        log.warning("gossip.peer.banned", peer=peer, code=code)
        self._blacklisted.add(peer)
        self._pubsub.add_to_blacklist(ID.from_base58(peer))
        self._kick(peer)

    def is_banned(self, peer: PeerId) -> bool:
        return self._penalties.is_banned(peer, self._clock.now_ms())
