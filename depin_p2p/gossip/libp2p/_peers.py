"""Peers of the libp2p transport: connections, the address book and re-dials, penalties and bans."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
import trio
from libp2p.abc import INotifee
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from depin_p2p.clock import Clock
from depin_p2p.errors import TransportError
from depin_p2p.gossip.libp2p._pubsub import peer_of
from depin_p2p.gossip.penalty import PenaltyPolicy
from depin_p2p.gossip.transport import PeerEvent, PeerId, PeerStanding, TransportCounters

if TYPE_CHECKING:
    from depin_p2p.gossip.libp2p.transport import Libp2pConfig

log = structlog.get_logger(__package__)


@dataclass(slots=True)
class _BookEntry:
    addr: str
    next_attempt: float = 0.0
    backoff: float = 0.0


class _Notifee(INotifee):
    """Connection events into the transport; never blocks, never raises."""

    def __init__(self, owner: Peers) -> None:
        self._owner = owner

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def connected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._owner.on_connection_change(conn.muxed_conn.peer_id)

    async def disconnected(self, network: Any, conn: Any) -> None:
        await trio.lowlevel.checkpoint()
        self._owner.on_connection_change(conn.muxed_conn.peer_id)

    async def listen(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, multiaddr: Any) -> None:
        await trio.lowlevel.checkpoint()


def _peer_info(addr: str) -> Any:
    try:
        return info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:  # noqa: BLE001 -- multiaddr parsing raises assorted types
        raise TransportError(f"bad address {addr!r}: {exc}") from None



_UNSPECIFIED = ("/ip4/0.0.0.0/", "/ip6/::/")


def keep_dialable_addrs(peerstore: Any) -> None:
    """Keep unspecified addresses (``0.0.0.0``, ``::``) out of ``peerstore``.

    A peer listening on ``0.0.0.0:4001`` reports ``/ip4/0.0.0.0/tcp/4001``
    through identify; py-libp2p stored it and the next dial to that peer
    tried it, so reached port 4001 of our own machine, often ourselves, and
    failed the security handshake: a peer dropped once was never reached
    again (tests/integration/test_redial_netns.py).
    """
    add_addrs = peerstore.add_addrs

    def dialable_only(peer_id: Any, addrs: Any, ttl: int = 0) -> None:
        kept = [a for a in addrs if not str(a).startswith(_UNSPECIFIED)]
        if kept:
            add_addrs(peer_id, kept, ttl)

    peerstore.add_addrs = dialable_only

class Peers:
    """Who we are connected to, whom we re-dial, whom we charge and ban.

    Keeps its own address book (libp2p's reconnect waits ~60 s) and its
    own penalty table (libp2p's scoring never disconnects); a ban also
    blacklists the peer in ``pubsub``.
    """

    def __init__(
        self,
        host: Any,
        pubsub: Any,
        *,
        clock: Clock,
        config: Libp2pConfig,
        counters: TransportCounters,
        penalty_policy: PenaltyPolicy | None = None,
    ) -> None:
        self._host = host
        self._pubsub = pubsub
        self._clock = clock
        self._config = config
        self._counters = counters
        self._standing = PeerStanding(penalty_policy, clock, counters, self._cut_off)
        self._blacklisted: set[PeerId] = set()
        self.connected: set[PeerId] = set()
        self._book: dict[PeerId, _BookEntry] = {}
        self._kick_send, self._kick_receive = trio.open_memory_channel[PeerId](1024)
        host.get_network().register_notifee(_Notifee(self))
        keep_dialable_addrs(host.get_peerstore())

    def expire_bans(self) -> None:
        """Lift the pubsub blacklisting of peers whose ban has run out."""
        now_ms = self._clock.now_ms()
        for peer in [p for p in self._blacklisted if not self._standing.table.is_banned(p, now_ms)]:
            self._blacklisted.discard(peer)
            self._pubsub.remove_from_blacklist(ID.from_base58(peer))

    def on_connection_change(self, peer_id: Any) -> None:
        peer = peer_of(peer_id)
        connected = bool(self._host.get_network().get_connections(peer_id))
        if connected and self.is_banned(peer):
            self.kick(peer)
            return
        if connected == (peer in self.connected):
            return
        if connected:
            self.connected.add(peer)
        else:
            self.connected.discard(peer)
        self._emit(PeerEvent(peer, connected))

    def _emit(self, event: PeerEvent) -> None:
        self._standing.emit(event)

    def kick(self, peer: PeerId) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._kick_send.send_nowait(peer)

    async def kick_loop(self) -> None:
        async for peer in self._kick_receive:
            with trio.move_on_after(self._config.dial_timeout):
                await self._disconnect(peer)

    async def _disconnect(self, peer: PeerId) -> None:
        try:
            await self._host.disconnect(ID.from_base58(peer))
        except Exception as exc:  # noqa: BLE001 -- closing a dying connection may fail in many ways
            log.debug("gossip.peer.disconnect_failed", peer=peer, error=repr(exc)[:200])
        self.on_connection_change(ID.from_base58(peer))

    async def redial_due(self) -> None:
        now = trio.current_time()
        due = [
            (peer, entry)
            for peer, entry in self._book.items()
            if peer not in self.connected and not self.is_banned(peer) and entry.next_attempt <= now
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
            entry.backoff = min(self._config.redial_max, max(self._config.redial_min, entry.backoff * 2))
            entry.next_attempt = trio.current_time() + entry.backoff
            log.debug("gossip.peer.redial_failed", peer=peer, backoff=entry.backoff, error=str(exc)[:200])
        else:
            entry.backoff = 0.0
            log.info("gossip.peer.redialled", peer=peer)

    async def _dial(self, addr: str) -> PeerId:
        info = _peer_info(addr)
        peer = peer_of(info.peer_id)
        if self.is_banned(peer):
            raise TransportError(f"{peer} is banned")
        # The swarm refuses for 60 s any peer whose addresses all failed once
        # (its "negative cache"); a restarted peer would wait a minute. Our
        # address book does the back-off, so forget that verdict before dialling.
        cache = getattr(self._host.get_network(), "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(info.peer_id))
        # Dial the address we were given, not what the peerstore collected
        # for this peer (identify's listen addresses: see keep_dialable_addrs).
        self._host.get_peerstore().clear_addrs(info.peer_id)
        try:
            with trio.fail_after(self._config.dial_timeout):
                await self._host.connect(info)
        except trio.TooSlowError:
            raise TransportError(f"dial {addr} timed out") from None
        except Exception as exc:  # noqa: BLE001 -- libp2p dial errors have no common base
            raise TransportError(f"dial {addr} failed: {exc!r:.200}") from None
        self.on_connection_change(info.peer_id)
        return peer

    async def connect(self, addr: str, *, redial: bool = True) -> PeerId:
        """Dial a ``/ip4/.../tcp/.../p2p/<id>`` address; with ``redial`` keep it in the address book."""
        peer = await self._dial(addr)
        if redial:
            self._book[peer] = _BookEntry(addr)
        return peer

    def keep_dialling(self, addr: str) -> PeerId:
        """Put ``addr`` in the address book without dialling it here.

        The maintenance loop dials it at its next tick and, while it fails,
        again with back-off (``redial_min`` doubling up to ``redial_max``),
        then whenever the connection is lost, as for :meth:`connect`.
        Raises TransportError for an address without a ``/p2p/<id>``.
        """
        peer = peer_of(_peer_info(addr).peer_id)
        entry = self._book.get(peer)
        if entry is None or entry.addr != addr:
            self._book[peer] = _BookEntry(addr)
        return peer

    async def disconnect(self, peer: PeerId) -> None:
        """Forget ``peer`` for re-dials and close its connections (bounded by the dial timeout)."""
        self._book.pop(peer, None)
        with trio.move_on_after(self._config.dial_timeout):
            await self._disconnect(peer)

    def peers(self) -> frozenset[PeerId]:
        return frozenset(self.connected)

    def events(self, capacity: int = 256) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._standing.events(capacity)

    def penalise(self, peer: PeerId, code: str) -> None:
        """Charge ``peer``; logs the first reason per peer; bans and disconnects past the threshold."""
        self._standing.penalise(peer, code)

    def ban(self, peer: PeerId, seconds: float) -> None:
        self._standing.ban(peer, seconds)

    def _cut_off(self, peer: PeerId, _code: str) -> None:
        self._blacklisted.add(peer)
        self._pubsub.add_to_blacklist(ID.from_base58(peer))
        self.kick(peer)

    def is_banned(self, peer: PeerId) -> bool:
        return self._standing.is_banned(peer)
