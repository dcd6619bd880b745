"""The libp2p transport's facade: builds the host, GossipSub and our parts, and runs them."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio
from libp2p import new_host
from libp2p.crypto import ed25519 as _ed25519
from libp2p.crypto import x25519 as _x25519
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import TransportError
from depin_p2p.gossip.libp2p import _inbound
from depin_p2p.gossip.libp2p._frames import FrameLimits, FrameReader
from depin_p2p.gossip.libp2p._peers import Peers
from depin_p2p.gossip.libp2p._ping import Ping
from depin_p2p.gossip.libp2p._pubsub import _GossipSub, _GuardedPubsub, peer_of
from depin_p2p.gossip.libp2p._streams import Streams
from depin_p2p.gossip.libp2p._topics import Topics
from depin_p2p.gossip.liveness import LivenessPolicy, LoopLag
from depin_p2p.gossip.penalty import PenaltyPolicy
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
    Prepare,
    TransportCounters,
    Validator,
    message_id,
)

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose stale trio-stubs shadow trio's own
    # annotations and lack trio.TaskStatus; its TaskStatus is the same protocol.
    from trio_typing import TaskStatus

__all__ = ["NOISE_PROTOCOL_ID", "YAMUX_PROTOCOL_ID", "Libp2pConfig", "Libp2pTransport", "libp2p_key_pair"]

log = structlog.get_logger(__package__)


@dataclass(frozen=True, slots=True)
class Libp2pConfig:
    """Tunables of the libp2p transport; defaults suit a LAN devnet."""

    listen_addr: str = "/ip4/127.0.0.1/tcp/0"
    heartbeat_interval: int = 1  # GossipSub heartbeat, seconds (libp2p default: 120)
    # Mesh degree, measured (bench/scale.py, 16 nodes, 8 s epochs on 2 cores): at libp2p's 6/4/12
    # each message reached a node 10 times and one epoch committed in 5 minutes; at 4/3/6, 3.6
    # times, and 10 epochs committed at 1.2x the epoch length (docs/LIBP2P_NOTES.md).
    degree: int = 4
    degree_low: int = 3
    degree_high: int = 6
    dial_timeout: float = 5.0
    redial_min: float = 0.5
    redial_max: float = 5.0  # bounds how long a restarted peer waits for us; dials are cheap
    # Liveness (see depin_p2p.gossip.liveness): ping quiet peers every 1.5 s, wait 3 s plus
    # 4 x our own recent event-loop lag (at most 30 s), drop after 3 misses in a row.
    liveness: LivenessPolicy = field(default_factory=LivenessPolicy)
    lag_sample_interval: float = 0.25
    rate_limit_per_second: int = RATE_PER_SECOND  # gossip messages accepted per forwarding peer
    rate_limit_burst: int = RATE_BURST
    # Gossip payload bytes accepted per forwarding peer (a full 1 MiB message fits the burst).
    rate_limit_bytes_per_second: int = RATE_BYTES_PER_SECOND
    rate_limit_bytes_burst: int = RATE_BYTES_BURST
    max_inbound_rpc_bytes: int = wire.MAX_MESSAGE_BYTES + 64 * 1024
    # Inbound pubsub frames: streams per peer, bytes in flight, deadlines (its
    # max_frame_bytes is replaced by max_inbound_rpc_bytes).
    frames: FrameLimits = field(default_factory=FrameLimits)
    seen_ttl: int = 120
    outbound_queue_rpcs: int = 1024  # per-peer outbound queue (libp2p default: 32, dropped silently)
    # Inbound handshakes in progress at once (py-libp2p's own cap leaked a slot per accepted
    # connection: depin_p2p.gossip.libp2p._inbound).
    max_inbound_handshakes: int = 64


def libp2p_key_pair(key: KeyPair) -> Any:
    """The libp2p key pair of our node key (same seed, same peer id)."""
    return _ed25519.create_new_key_pair(key.seed)


async def _no_auto_connect() -> None:
    await trio.lowlevel.checkpoint()


ADDRS_TTL_S = 1.0


def _remember_addrs(host: Any, ttl_s: float) -> None:
    """Answer ``host.get_addrs()`` from a copy at most ``ttl_s`` old (an empty answer is not kept).

    py-libp2p attaches our signed peer record to every outgoing RPC and, to
    know whether its cached record is still current, rebuilds our address
    list each time (``env_to_send_in_RPC``): 3 % of a node's CPU in a
    16-node devnet. Our addresses change when we start listening (or learn
    an observed one from identify), not per message.
    """
    compute = host.get_addrs
    kept: list[Any] = []
    until = 0.0

    def get_addrs() -> list[Any]:
        nonlocal kept, until
        now = time.monotonic()
        if now >= until or not kept:
            kept, until = compute(), now + ttl_s
        return list(kept)

    host.get_addrs = get_addrs


class Libp2pTransport:
    """A node's libp2p network. Implements :class:`~depin_p2p.gossip.transport.Transport`.

    Args:
        key: the node key; its seed is also the libp2p identity.
        network_id: the network this node belongs to.
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
        self.config = config = config or Libp2pConfig()
        self._clock = clock
        self._network_id = network_id
        self._peer_id = PeerId(key.peer_id)
        self._counters = TransportCounters()
        kp = libp2p_key_pair(key)
        # The Noise static key is ephemeral on purpose: identity is the signed libp2p key.
        noise = NoiseTransport(kp, noise_privkey=_x25519.create_new_key_pair().private_key)
        muxers: Any = {YAMUX_PROTOCOL_ID: Yamux}
        self._host: Any = new_host(key_pair=kp, sec_opt={NOISE_PROTOCOL_ID: noise}, muxer_opt=muxers)
        _remember_addrs(self._host, ADDRS_TTL_S)
        # The swarm's auto-connector dials every peer in the peerstore while we hold fewer than
        # its low watermark (100), 60 s after a disconnect: a pruned peer would come back.
        # Whom to dial is ours to decide (our re-dial book, the peer manager).
        swarm: Any = self._host.get_network()
        swarm.auto_connector.maybe_connect = _no_auto_connect
        self.inbound_handshakes = _inbound.install(swarm, config.max_inbound_handshakes)
        self._router: Any = _GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_initial_delay=0.1,
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            prune_back_off=10,
            # Copies of each message kept for a peer not (yet) in its topic: 100 for 30 s by
            # default. Bounded (and 2 bootstrap peers), bench/scale.py at 16 nodes went from
            # 155 to 136 MB largest RSS, epochs from 1.19x to 1.01x their length.
            max_pending_messages_per_peer=16,
            pending_messages_ttl=5.0,
        )
        # self.penalise reaches self._peers, built below: the pubsub and the
        # peers (which blacklist in the pubsub) need each other.
        self._topics = Topics(
            self._counters,
            penalise=self.penalise,
            rate_per_second=config.rate_limit_per_second,
            rate_burst=config.rate_limit_burst,
            bytes_per_second=config.rate_limit_bytes_per_second,
            bytes_burst=config.rate_limit_bytes_burst,
        )
        lag = LoopLag(config.liveness)
        limits = dataclasses.replace(config.frames, max_frame_bytes=config.max_inbound_rpc_bytes)
        frames = FrameReader(limits, lag)
        self._pubsub: Any = _GuardedPubsub(
            self._host,
            self._router,
            self._topics,
            frames=frames,
            outbound_queue_rpcs=config.outbound_queue_rpcs,
            msg_id_constructor=lambda msg: message_id(msg.topicIDs, msg.data),
            seen_ttl=config.seen_ttl,
            max_inbound_rpc_size=config.max_inbound_rpc_bytes,
        )
        self._peers = Peers(
            self._host,
            self._pubsub,
            clock=clock,
            config=config,
            counters=self._counters,
            penalty_policy=penalty_policy,
        )
        self._streams = Streams(
            self._host, self._counters, timeout=config.dial_timeout, penalise=self.penalise
        )
        # Liveness: yamux PING frames (/ipfs/ping/1.0.0, which new_host serves, on other muxers).
        self._ping = Ping(
            self._host,
            lag=lag,
            policy=config.liveness,
            lag_sample_interval=config.lag_sample_interval,
            counters=self._counters,
            peers=self._peers,
            heard=self._topics.heard,
        )
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
                    nursery.start_soon(self._peers.kick_loop)
                    nursery.start_soon(self._maintenance_loop)
                    nursery.start_soon(self._ping.lag_loop)
                    nursery.start_soon(self._ping.ping_loop)
                    log.info("gossip.transport.started", peer=self._peer_id, addrs=list(self._listen))
                    task_status.started()
        except OSError as exc:
            raise TransportError(f"cannot listen on {self.config.listen_addr}: {exc}") from exc

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(0.25)
            self._peers.expire_bans()
            # Adaptive gossip is off, so nothing else trims this list.
            self._router.recent_message_deliveries.clear()
            await self._peers.redial_due()

    # ------------------------------------------------------- request/response

    def set_handler(
        self, protocol: str, handler: Handler, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        """Serve ``protocol`` with ``handler``; see :meth:`Transport.set_handler`."""
        self._streams.set_handler(protocol, handler, max_request_bytes=max_request_bytes)

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
        return await self._streams.exchange(peer, protocol, data, timeout, max_response_bytes)

    # --------------------------------------------------------------- gossip

    async def subscribe(
        self,
        topic: str,
        validator: Validator,
        *,
        capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY,
        prepare: Prepare | None = None,
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join ``topic``; see :meth:`Transport.subscribe` (``prepare`` runs in the message's own task)."""
        send, receive = trio.open_memory_channel[GossipMessage](capacity)
        self._topics.subs[topic] = (validator, send)
        if prepare is None:
            self._topics.prepares.pop(topic, None)
        else:
            self._topics.prepares[topic] = prepare
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
        if topic in self._topics.subs:
            return frozenset(peer_of(p) for p in self._router.mesh.get(topic, ()))
        return frozenset(peer_of(p) for p in self._pubsub.peer_topics.get(topic, ()))

    # ---------------------------------------------------------------- peers

    async def connect(self, addr: str, *, redial: bool = True) -> PeerId:
        """Dial a ``/ip4/.../tcp/.../p2p/<id>`` address; with ``redial`` keep it in the re-dial book."""
        return await self._peers.connect(addr, redial=redial)

    async def disconnect(self, peer: PeerId) -> None:
        """Close our connections to ``peer`` and forget it for re-dials; no penalty."""
        await self._peers.disconnect(peer)

    def keep_dialling(self, addr: str) -> PeerId:
        """Keep dialling ``addr`` (with back-off) until connected, and re-dial it when lost.

        For addresses that may not listen yet (bootstrap peers): nothing is
        dialled here; the maintenance loop dials within a quarter second.
        Raises TransportError for an address without a ``/p2p/<id>``.
        """
        return self._peers.keep_dialling(addr)

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self._peers.connected)

    def peer_events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._peers.events(capacity)

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer``; logs the first reason per peer; bans and disconnects past the threshold."""
        self._peers.penalise(peer, code)

    def ban(self, peer: PeerId, seconds: float) -> None:
        self._peers.ban(peer, seconds)

    def is_banned(self, peer: PeerId) -> bool:
        return self._peers.is_banned(peer)
