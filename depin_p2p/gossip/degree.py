"""Bounded degree and peer exchange: whom to dial, whom to prune, what to hand out. [pure]

A node keeps about ``target`` connections instead of a full mesh. It learns
addresses from its bootstrap list and from peer exchange (PX,
``/depin/<network>/px/1``): a request carries the requester's own announce
addresses and, optionally, the peers it wants addresses of; the response
carries the responder's own addresses and a sample of the peers it knows.

Everything PX carries is an unsigned hint. A hint never costs anyone
anything: a dial to a wrong address fails (the transport authenticates the
peer id) and only backs that entry off; a response is a proven offence only
when it does not decode. To keep hints from crowding out what we know:

- the book is bounded; a full book evicts the worst third-party hint, never a
  bootstrap entry nor one a peer announced about itself;
- a hint never replaces addresses a peer announced itself or we dialled;
- we hand out only *verified* entries (bootstrap, self-announced, dialled),
  never third-party hints we have not tried;
- an address is accepted for a peer only if its last component is that peer
  id (``/p2p/<id>`` on libp2p, ``memory/<id>`` on the memory network) and it
  does not name an unspecified host (``0.0.0.0``, ``::``).

Decisions (:func:`compute_peer_plan`) are deterministic given the book, the
situation and a seed: candidate order comes from BLAKE2b(seed ‖ peer id).
Pruning is gentle and never a penalty: at most ``prune_batch`` per tick,
only above ``max_peers``, never a bootstrap peer, a peer we must keep (the
current validators, when we are one), a recently reached peer or a
connection younger than ``min_age_ms``.

Peers we must keep count towards the target but never crowd the others out:
with R of them, a node aims at ``max(target - R, max(1, target // 2))`` other peers
and prunes others only above that plus ``high - target``. (Counted in
one budget, 16 validators at target 8 each pruned every follower: the
network split into a validator clique that committed and followers that
heard nothing, bench/scale.py at 32 processes.) R counts every required
peer, connected or not: counting only the connected ones let validators
dial a full degree of others before their validators connected, and two
32-process runs with that rule fell to rounds 1-7 (5 and 7 of 10 epochs)
where two with this one committed every epoch in round 0. The price: a
validator whose fellow validators are down keeps fewer other peers.
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated

from depin_p2p import wire
from depin_p2p.errors import CodecError, InternalError, Reject

MAX_PX_PEERS = 32  # records per response
MAX_PX_WANT = 8  # peers one request may look up
MAX_ADDRS_PER_PEER = 4
MAX_ADDR_CHARS = 256
MAX_PEER_ID_CHARS = 96
MAX_PX_REQUEST_BYTES = 4 * 1024
MAX_PX_RESPONSE_BYTES = 48 * 1024  # 32 records of 4 maximal addresses fit

PeerIdStr = Annotated[str, wire.MaxLen(MAX_PEER_ID_CHARS)]
Addrs = Annotated[tuple[Annotated[str, wire.MaxLen(MAX_ADDR_CHARS)], ...], wire.MaxLen(MAX_ADDRS_PER_PEER)]


@wire.struct
@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer and the addresses it can be dialled at (a hint, unsigned)."""

    peer_id: PeerIdStr
    addrs: Addrs


@wire.message(type_id=65)
@dataclass(frozen=True, slots=True)
class PeerExchangeRequest:
    """PX request: the requester's own announce addresses, peers it looks for, how many records it wants."""

    addrs: Addrs
    want: Annotated[tuple[PeerIdStr, ...], wire.MaxLen(MAX_PX_WANT)]
    limit: Annotated[int, wire.Range(0, MAX_PX_PEERS)]


@wire.message(type_id=66)
@dataclass(frozen=True, slots=True)
class PeerExchangeResponse:
    """PX response: the responder's own announce addresses and a sample of peers it knows."""

    addrs: Addrs
    peers: Annotated[tuple[PeerRecord, ...], wire.MaxLen(MAX_PX_PEERS)]


def decode_px_request(data: bytes) -> PeerExchangeRequest:
    """Decode a PX request; ``Reject('malformed')`` if it does not decode (the only proven offence)."""
    try:
        return wire.decode_as(data, PeerExchangeRequest, MAX_PX_REQUEST_BYTES)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None


def decode_px_response(data: bytes) -> PeerExchangeResponse:
    """Decode a PX response; ``Reject('malformed')`` if it does not decode (the only proven offence)."""
    try:
        return wire.decode_as(data, PeerExchangeResponse, MAX_PX_RESPONSE_BYTES)
    except CodecError as exc:
        raise Reject("malformed", str(exc)) from None


_UNSPECIFIED = ("/ip4/0.0.0.0/", "/ip6/::/")


def is_address_of(addr: str, peer: str) -> bool:
    """Is ``addr`` a dialable address that names ``peer`` as its last component?"""
    if not peer or len(addr) > MAX_ADDR_CHARS or any(addr.startswith(u) for u in _UNSPECIFIED):
        return False
    return addr.endswith("/" + peer) and len(addr) > len(peer) + 1


def addresses_of(peer: str, addrs: Iterable[str]) -> tuple[str, ...]:
    """The addresses in ``addrs`` that are ``peer``'s (see :func:`is_address_of`), deduplicated, capped."""
    out: list[str] = []
    for addr in addrs:
        if is_address_of(addr, peer) and addr not in out:
            out.append(addr)
            if len(out) == MAX_ADDRS_PER_PEER:
                break
    return tuple(out)


def peer_of_address(addr: str) -> str:
    """The peer id an address names (its last component)."""
    return addr.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------
# Policy and the address book


@dataclass(frozen=True, slots=True)
class DegreePolicy:
    """How many connections to keep and how eagerly to change them; integer milliseconds."""

    target: int = 8
    max_peers: int = 0  # 0: target + max(2, target // 2)
    book_capacity: int = 1_024
    tick_ms: int = 1_000  # how often the manager re-plans while below target
    idle_tick_ms: int = 5_000  # ... and when satisfied
    exchange_ms: int = 30_000  # PX with one peer this often at target...
    short_exchange_ms: int = 3_000  # ... and this often below it
    dial_batch: int = 4  # new dials per tick at most
    prune_batch: int = 1  # gently: one connection per tick at most
    min_age_ms: int = 30_000  # a connection younger than this is never pruned
    reach_keep_ms: int = 120_000  # a peer reached on demand is kept this long
    backoff_min_ms: int = 1_000
    backoff_max_ms: int = 60_000
    bootstrap_backoff_max_ms: int = 10_000  # a restarted seed is found again soon
    disconnect_backoff_ms: int = 20_000  # a peer that just went away is not re-dialled at once
    max_failures: int = 6  # a third-party hint failing this often in a row is forgotten

    def __post_init__(self) -> None:
        if self.target < 1 or (self.max_peers and self.max_peers < self.target):
            raise InternalError(f"degree policy: target {self.target}, max {self.max_peers}")

    @property
    def high(self) -> int:
        """Prune only above this many connections."""
        return self.max_peers or self.target + max(2, self.target // 2)

    @property
    def others_floor(self) -> int:
        """Connections kept to peers we need not keep, however many we must (half the target)."""
        return max(1, self.target // 2)


class Source(enum.IntEnum):
    """Where an entry's addresses came from; a higher source is trusted more."""

    HINT = 0  # a third party said so
    SELF = 1  # the peer announced them itself, over an authenticated connection, or we dialled them
    BOOTSTRAP = 2  # configured by the operator


@dataclass(slots=True)
class BookEntry:
    peer: str
    addrs: tuple[str, ...]
    source: Source
    bootstrap: bool = False
    failures: int = 0
    next_dial_ms: int = 0  # back-off after failed dials
    quiet_until_ms: int = 0  # after a disconnect: not re-dialled before, unless we must
    seen_ms: int = 0  # last time it was connected or announced itself


class AddressBook:
    """Known peers and their addresses, bounded; the state the plan reads."""

    def __init__(self, self_peer: str, policy: DegreePolicy | None = None) -> None:
        self.policy = policy or DegreePolicy()
        self._self = self_peer
        self._entries: OrderedDict[str, BookEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer: object) -> bool:
        return peer in self._entries

    def get(self, peer: str) -> BookEntry | None:
        return self._entries.get(peer)

    def entries(self) -> tuple[BookEntry, ...]:
        return tuple(self._entries.values())

    def bootstrap_peers(self) -> frozenset[str]:
        return frozenset(p for p, e in self._entries.items() if e.bootstrap)

    def add_bootstrap(self, addr: str) -> str | None:
        """Add an operator-configured address; returns its peer id (None if it names none)."""
        peer = peer_of_address(addr)
        addrs = addresses_of(peer, [addr])
        if not addrs or peer == self._self:
            return None
        entry = self._entries.get(peer)
        if entry is None:
            self._insert(BookEntry(peer, addrs, Source.BOOTSTRAP, bootstrap=True))
        else:
            entry.addrs = addresses_of(peer, (*addrs, *entry.addrs))
            entry.source, entry.bootstrap = Source.BOOTSTRAP, True
        return peer

    def on_announced(self, peer: str, addrs: Iterable[str], now_ms: int) -> None:
        """``peer`` told us its own addresses over an authenticated connection."""
        own = addresses_of(peer, addrs)
        if not own or peer == self._self:
            return
        entry = self._entries.get(peer)
        if entry is None:
            self._insert(BookEntry(peer, own, Source.SELF, seen_ms=now_ms))
            return
        keep = entry.addrs if entry.source is Source.BOOTSTRAP else ()
        entry.addrs = addresses_of(peer, (*own, *keep))
        entry.source = max(entry.source, Source.SELF)
        entry.seen_ms = now_ms

    def on_hint(self, record: PeerRecord, now_ms: int) -> None:
        """A third party says ``record.peer_id`` is at ``record.addrs``: note it if it adds anything."""
        peer = record.peer_id
        addrs = addresses_of(peer, record.addrs)
        if not addrs or peer == self._self:
            return
        entry = self._entries.get(peer)
        if entry is None:
            self._insert(BookEntry(peer, addrs, Source.HINT))
        elif entry.source is Source.HINT:
            entry.addrs = addresses_of(peer, (*entry.addrs, *addrs))

    def on_connected(self, peer: str, now_ms: int, *, addr: str | None = None) -> None:
        """Connected (``addr``: the address we dialled, now proven to reach ``peer``)."""
        entry = self._entries.get(peer)
        if entry is None:
            if addr is not None and is_address_of(addr, peer):
                self._insert(BookEntry(peer, (addr,), Source.SELF, seen_ms=now_ms))
            return
        entry.failures, entry.next_dial_ms, entry.quiet_until_ms, entry.seen_ms = 0, 0, 0, now_ms
        if addr is not None and entry.source is Source.HINT and is_address_of(addr, peer):
            entry.addrs, entry.source = (addr,), Source.SELF

    def on_disconnected(self, peer: str, now_ms: int) -> None:
        entry = self._entries.get(peer)
        if entry is not None:
            entry.quiet_until_ms = now_ms + self.policy.disconnect_backoff_ms
            entry.seen_ms = now_ms

    def on_dial_failed(self, peer: str, now_ms: int) -> None:
        """Back off exponentially; forget a third-party hint that keeps failing."""
        entry = self._entries.get(peer)
        if entry is None:
            return
        entry.failures += 1
        if entry.source is Source.HINT and entry.failures >= self.policy.max_failures:
            del self._entries[peer]
            return
        cap = self.policy.bootstrap_backoff_max_ms if entry.bootstrap else self.policy.backoff_max_ms
        delay = min(cap, self.policy.backoff_min_ms << min(entry.failures - 1, 20))
        entry.next_dial_ms = now_ms + delay

    def _insert(self, entry: BookEntry) -> None:
        if len(self._entries) >= self.policy.book_capacity:
            victim = self._victim(entry.source)
            if victim is None:
                return  # full of entries worth more than this one
            del self._entries[victim]
        self._entries[entry.peer] = entry

    def _victim(self, incoming: Source) -> str | None:
        worst: BookEntry | None = None
        for e in self._entries.values():
            if e.bootstrap or e.source > incoming or (e.source is Source.SELF and incoming is Source.SELF):
                continue
            if worst is None or (e.source, -e.failures, e.seen_ms) < (
                worst.source,
                -worst.failures,
                worst.seen_ms,
            ):
                worst = e
        return None if worst is None else worst.peer

    def records_for(
        self, requester: str, *, limit: int, want: Iterable[str], connected: Iterable[str], seed: bytes
    ) -> tuple[PeerRecord, ...]:
        """What to hand ``requester``: the wanted peers we know, then connected peers, then others.

        Only verified entries (not third-party hints); never the requester itself.
        """
        limit = max(0, min(limit, MAX_PX_PEERS))
        chosen: list[str] = []
        live = set(connected)
        for peer in want:
            entry = self._entries.get(peer)
            if entry is not None and entry.source is not Source.HINT and peer not in chosen:
                chosen.append(peer)
        rest = [
            e.peer
            for e in self._entries.values()
            if e.source is not Source.HINT and e.peer != requester and e.peer not in chosen
        ]
        rest.sort(key=lambda p: (p not in live, _rank(seed, p)))
        chosen.extend(rest)
        return tuple(PeerRecord(p, self._entries[p].addrs) for p in chosen[:limit])


def _rank(seed: bytes, peer: str) -> bytes:
    return hashlib.blake2b(seed + peer.encode(), digest_size=8).digest()


# --------------------------------------------------------------------------
# The plan


@dataclass(frozen=True, slots=True)
class PeerSituation:
    """What the shell knows now, besides the book."""

    now_ms: int
    connected: Mapping[str, int]  # peer -> when it connected (ms)
    required: frozenset[str] = frozenset()  # keep a direct connection (current validators, when we are one)
    reached: Mapping[str, int] = field(default_factory=dict)  # peer -> when it was last reached (ms)
    dialing: frozenset[str] = frozenset()
    banned: frozenset[str] = frozenset()
    last_exchange_ms: int | None = None  # None: never exchanged


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """What to do now: dial these (peer, addresses), prune these, ask these for peers, then sleep."""

    dial: tuple[tuple[str, tuple[str, ...]], ...]
    prune: tuple[str, ...]
    exchange: tuple[str, ...]
    sleep_ms: int


def compute_peer_plan(book: AddressBook, situation: PeerSituation, seed: bytes) -> PeerPlan:
    """Decide the next step of keeping ``target`` connections; see the module docstring."""
    policy, s = book.policy, situation
    connected = s.connected
    now = s.now_ms

    alone = not connected

    def dialable(e: BookEntry, urgent: bool) -> bool:
        # A peer that just went away is left alone for a while (no churn with a peer that pruned
        # us), unless we must reach it: a required peer, or anyone when we have nobody.
        return (
            e.peer not in connected
            and e.peer not in s.dialing
            and e.peer not in s.banned
            and e.next_dial_ms <= now
            and (urgent or alone or e.quiet_until_ms <= now)
            and bool(e.addrs)
        )

    entries = book.entries()
    dial: list[str] = [e.peer for e in entries if e.peer in s.required and dialable(e, True)]
    dial.sort(key=lambda p: _rank(seed, p))
    # Required peers come on top of a floor of others: a validator that must keep more
    # validators than its degree still keeps some followers, or the network splits in two.
    others = [p for p in connected if p not in s.required]
    others_target = max(policy.target - len(s.required), policy.others_floor)
    others_high = others_target + policy.high - policy.target
    short = others_target - len(others) - sum(1 for p in s.dialing if p not in s.required)
    if short > 0:
        # Bootstrap peers last once we know others, so the seeds are not everyone's neighbours;
        # first when we have nobody at all.
        candidates = [e for e in entries if e.peer not in s.required and dialable(e, False)]
        candidates.sort(key=lambda e: (e.bootstrap != alone, e.failures, _rank(seed, e.peer)))
        dial.extend(e.peer for e in candidates[: min(short, policy.dial_batch)])
    by_peer = {e.peer: e for e in entries}
    dials = tuple((p, by_peer[p].addrs) for p in dial)

    prune: list[str] = []
    excess = len(others) - others_high
    if excess > 0:
        keep = book.bootstrap_peers()
        prunable = [
            p
            for p in others
            if p not in keep
            and now - connected[p] >= policy.min_age_ms
            and now - s.reached.get(p, -policy.reach_keep_ms) >= policy.reach_keep_ms
        ]
        prunable.sort(key=lambda p: _rank(seed, p))
        prune = prunable[: min(excess, policy.prune_batch)]

    satisfied = len(others) >= others_target
    exchange: tuple[str, ...] = ()
    due = s.last_exchange_ms is None or now - s.last_exchange_ms >= (
        policy.exchange_ms if satisfied else policy.short_exchange_ms
    )
    if due and connected:
        exchange = (min(connected, key=lambda p: _rank(seed + b"px", p)),)
    sleep = policy.idle_tick_ms if satisfied and not dials and not prune else policy.tick_ms
    return PeerPlan(dials, tuple(prune), exchange, sleep)
