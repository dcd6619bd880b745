"""The peer manager: bounded degree, peer exchange, and dialling on demand.

The same service runs on the memory network and on libp2p: it uses only the
:class:`~depin_p2p.gossip.transport.Transport` protocol. Every decision (whom
to dial, whom to prune, whom to ask for peers, what to hand out) is made by
the pure :mod:`depin_p2p.gossip.degree`; this module runs its plan:

- dials go through ``connect(addr, redial=False)``: the manager, not the
  transport, decides whom to re-dial, with back-off kept in its book;
- a prune is ``disconnect(peer)``: never a penalty;
- right after each dial of ours, and on the plan's schedule, it asks one peer
  for peers over ``/depin/<network>/px/1`` and serves the same requests;
- :meth:`PeerManager.reach` dials a peer on demand before a direct request
  (a compute challenge) when we are not connected to it, asking our peers
  for its address first if the book has none.

Only an undecodable PX message costs its sender (``malformed``); a slow or
failing peer only backs its entry off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.errors import Reject, TransportError
from depin_p2p.gossip.degree import (
    MAX_PX_PEERS,
    MAX_PX_REQUEST_BYTES,
    MAX_PX_RESPONSE_BYTES,
    AddressBook,
    DegreePolicy,
    PeerExchangeRequest,
    PeerExchangeResponse,
    PeerSituation,
    addresses_of,
    compute_peer_plan,
    decode_px_request,
    decode_px_response,
)
from depin_p2p.gossip.transport import PX, PeerEvent, PeerId, Transport, protocol

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("depin_p2p.gossip.peers")

DIAL_TIMEOUT_S = 5.0
EXCHANGE_TIMEOUT_S = 5.0
REACH_TIMEOUT_S = 5.0
REACH_ASK = 3  # peers asked for an unknown peer's address


@dataclass(slots=True)
class PeerCounters:
    """Exported in the node's status. Mutable: the manager increments in place."""

    dials: int = 0
    dial_failures: int = 0
    pruned: int = 0
    exchanges: int = 0
    exchange_failures: int = 0
    exchanges_served: int = 0
    reached: int = 0
    reach_failures: int = 0


class PeerManager:
    """Keeps about ``policy.target`` connections; see the module docstring.

    Args:
        transport: the node's network.
        network_id: names the PX protocol.
        clock: the node clock (the book's back-offs are in its milliseconds).
        policy: target degree and timings.
        bootstrap: operator-configured addresses, each ending in the peer id.
        required: the peers we must keep a direct connection to (the current
            validators, when we are one), asked each tick.
        announce: our own addresses as handed out to peers (default: the
            transport's listen addresses).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        network_id: str,
        clock: Clock,
        policy: DegreePolicy | None = None,
        bootstrap: Sequence[str] = (),
        required: Callable[[], frozenset[PeerId]] = frozenset,
        announce: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._transport = transport
        self._clock = clock
        self._protocol = protocol(network_id, PX)
        self._required = required
        self._announce = announce or transport.listen_addrs
        self.book = AddressBook(transport.peer_id, policy)
        self.policy = self.book.policy
        for addr in bootstrap:
            if self.book.add_bootstrap(addr) is None:
                log.warning("gossip.peers.bad_bootstrap", addr=addr)
        self.counters = PeerCounters()
        self._since: dict[PeerId, int] = {}  # connected peers: since when (ms)
        self._reached: dict[str, int] = {}  # peers reached on demand: when (ms)
        self._dialing: dict[PeerId, trio.Event] = {}
        self._last_exchange_ms: int | None = None
        self._ticks = 0
        self._wake = trio.Event()

    def announced(self) -> tuple[str, ...]:
        """Our addresses as we hand them to peers (PX requests and answers)."""
        return addresses_of(self._transport.peer_id, self._announce())

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve PX and keep the degree until cancelled (the transport runs already).

        Cancellation: dials and exchanges in flight are abandoned.
        """
        self._transport.set_handler(self._protocol, self._on_exchange, max_request_bytes=MAX_PX_REQUEST_BYTES)
        events = self._transport.peer_events()
        now = self._clock.now_ms()
        for peer in self._transport.peers():
            self._since[peer] = now
            self.book.on_connected(peer, now)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, events)
            nursery.start_soon(self._loop, nursery)
            task_status.started()

    async def _watch(self, events: trio.MemoryReceiveChannel[PeerEvent]) -> None:
        async for event in events:
            now = self._clock.now_ms()
            if event.connected:
                self._since.setdefault(event.peer, now)
                self.book.on_connected(event.peer, now)
            else:
                self._since.pop(event.peer, None)
                self.book.on_disconnected(event.peer, now)
                self._wake.set()  # re-plan now: we may be short

    async def _loop(self, nursery: trio.Nursery) -> None:
        while True:
            now = self._clock.now_ms()
            plan = compute_peer_plan(self.book, self._situation(now), self._seed())
            for peer, addrs in plan.dial:
                done = self._start_dial(PeerId(peer))
                if done is not None:
                    nursery.start_soon(self._dial, PeerId(peer), addrs, done, True)
            for peer in plan.prune:
                nursery.start_soon(self._prune, PeerId(peer))
            for peer in plan.exchange:
                self._last_exchange_ms = now
                nursery.start_soon(self._exchange, PeerId(peer), ())
            with trio.move_on_at(self._clock.deadline_for(now + plan.sleep_ms)):
                await self._wake.wait()
            self._wake = trio.Event()

    def _situation(self, now: int) -> PeerSituation:
        connected = self._transport.peers()
        horizon = now - self.policy.reach_keep_ms
        self._reached = {p: t for p, t in self._reached.items() if t > horizon}
        required = self._required()
        known = [e.peer for e in self.book.entries()]
        return PeerSituation(
            now_ms=now,
            connected={p: self._since.get(p, now) for p in connected},
            required=frozenset(required),
            reached=dict(self._reached),
            dialing=frozenset(self._dialing),
            banned=frozenset(p for p in known if self._transport.is_banned(PeerId(p))),
            last_exchange_ms=self._last_exchange_ms,
        )

    def _seed(self) -> bytes:
        self._ticks += 1
        data = self._transport.peer_id.encode() + self._ticks.to_bytes(8, "big")
        return hashlib.blake2b(data, digest_size=16).digest()

    # -------------------------------------------------------------- actions

    def _start_dial(self, peer: PeerId) -> trio.Event | None:
        """Claim the one dial of ``peer`` (None: one is in flight); the event is set when it ends."""
        if peer in self._dialing:
            return None
        done = self._dialing[peer] = trio.Event()
        return done

    async def _dial(self, peer: PeerId, addrs: tuple[str, ...], done: trio.Event, exchange: bool) -> bool:
        self.counters.dials += 1
        try:
            for addr in addrs:
                try:
                    with trio.fail_after(DIAL_TIMEOUT_S):
                        got = await self._transport.connect(addr, redial=False)
                except (TransportError, trio.TooSlowError) as exc:
                    log.debug("gossip.peers.dial_failed", peer=peer, addr=addr, error=str(exc)[:200])
                    continue
                now = self._clock.now_ms()
                self._since.setdefault(got, now)
                self.book.on_connected(peer, now, addr=addr)
                if exchange:
                    await self._exchange(peer, ())
                return True
            self.counters.dial_failures += 1
            self.book.on_dial_failed(peer, self._clock.now_ms())
            return False
        finally:
            if self._dialing.get(peer) is done:
                del self._dialing[peer]
            done.set()

    async def _prune(self, peer: PeerId) -> None:
        self.counters.pruned += 1
        log.info("gossip.peers.pruned", peer=peer, connected=len(self._transport.peers()))
        await self._transport.disconnect(peer)

    def _request(self, want: Sequence[str]) -> bytes:
        own = addresses_of(self._transport.peer_id, self._announce())
        return wire.encode(PeerExchangeRequest(own, tuple(want), MAX_PX_PEERS))

    async def _exchange(self, peer: PeerId, want: Sequence[str]) -> None:
        """Ask ``peer`` for peers (and for the ``want``ed ones); note what it says."""
        self.counters.exchanges += 1
        try:
            data = await self._transport.request(
                peer,
                self._protocol,
                self._request(want),
                timeout=EXCHANGE_TIMEOUT_S,
                max_response_bytes=MAX_PX_RESPONSE_BYTES,
            )
            response = decode_px_response(data)
        except TransportError as exc:
            self.counters.exchange_failures += 1
            log.debug("gossip.peers.exchange_failed", peer=peer, error=str(exc)[:200])
            return
        except Reject as exc:
            self.counters.exchange_failures += 1
            self._transport.penalise(peer, exc.code)
            return
        now = self._clock.now_ms()
        self.book.on_announced(peer, response.addrs, now)
        for record in response.peers:
            self.book.on_hint(record, now)
        self._wake.set()

    async def _on_exchange(self, peer: PeerId, data: bytes) -> bytes:
        """Serve a PX request: note the requester's addresses, hand out a sample of ours.

        Raises Reject('malformed') for a request that does not decode.
        """
        await trio.lowlevel.checkpoint()
        request = decode_px_request(data)
        self.book.on_announced(peer, request.addrs, self._clock.now_ms())
        self.counters.exchanges_served += 1
        records = self.book.records_for(
            peer,
            limit=request.limit,
            want=request.want,
            connected=self._transport.peers(),
            seed=self._seed(),
        )
        own = addresses_of(self._transport.peer_id, self._announce())
        return wire.encode(PeerExchangeResponse(own, records))

    # ------------------------------------------------------------ on demand

    async def reach(self, peer: PeerId, *, timeout: float = REACH_TIMEOUT_S) -> bool:
        """Be connected to ``peer`` for a direct request: dial it now if its address is known.

        An unknown peer's address is asked of up to three connected peers
        first. Returns whether we are connected; never raises for the peer's
        fault. A reached peer is kept (not pruned) for a while.
        Cancellation: the dial or exchange in flight is abandoned.
        """
        transport = self._transport
        if peer == transport.peer_id:
            return True
        if peer in transport.peers():
            self._reached[peer] = self._clock.now_ms()
            return True
        if transport.is_banned(peer):
            return False
        with trio.move_on_after(timeout):
            if self.book.get(peer) is None:
                seed = self._seed()
                ask = sorted(transport.peers(), key=lambda p: hashlib.blake2b(seed + p.encode()).digest())
                for other in ask[:REACH_ASK]:
                    await self._exchange(other, (peer,))
                    if self.book.get(peer) is not None:
                        break
            entry = self.book.get(peer)
            pending = self._dialing.get(peer)
            if pending is not None:
                await pending.wait()  # a dial in flight: its outcome is ours
            elif entry is not None:
                done = self._start_dial(peer)
                assert done is not None  # no checkpoint since the check above
                await self._dial(peer, entry.addrs, done, False)
        ok = peer in transport.peers()
        if ok:
            self.counters.reached += 1
            self._reached[peer] = self._clock.now_ms()
        else:
            self.counters.reach_failures += 1
            log.info("gossip.peers.unreachable", peer=peer, known=self.book.get(peer) is not None)
        return ok
