"""Proof gossip: batching into bundles, de-duplication, validation, bounded queues.

GossipSub in py-libp2p costs milliseconds of CPU per message, so proofs do
not travel one per message: :class:`ProofGossip` collects the node's own
proofs and publishes them as one :class:`ProofBundle` ``flush_ms`` after the
first one arrives (or as soon as a bundle is full), and publishes partial
bundles at most every ``min_interval_ms``: the gossip message rate stays in
the tens per second whatever the proof rate.

On receipt every item of a bundle is de-duplicated by content id (ignored
ones included) *before* its signature is checked, then validated cheapest
first (:mod:`depin_p2p.gossip.validation`: time window, then the
subsystem's ``screen_item``, epoch and registry, then the signature, then
its full ``check_item``). A bundle with any rejected item is rejected as a
whole: an honest node only ever bundles and forwards items it validated, so
the forwarding peer is at fault. A bundle with nothing new is ignored (not
forwarded). Accepted items come out of :attr:`ProofGossip.received`, with
the peer that forwarded them.

An item far outside any plausible window (``far_out_of_window``: no honest
node signs one, and none forwards one, see below) costs no signature check
and, beyond a small per-peer tolerance, one light penalty per item, replays
included: a pre-signed pool of throw-away proofs reshuffled into new bundles
ends in a ban. A bundle carrying such an item is not relayed as it is (its
forwarder would pay downstream): its fresh items are delivered here and go
out again in our own bundles. Our own outbox never sends an item that waited
longer than ``max_outbox_age_ms`` (a node resumed after a pause does not
flush stale proofs).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import structlog
import trio

from depin_p2p import verifiers, wire
from depin_p2p.clock import Clock
from depin_p2p.errors import CodecError, Ignore, InternalError, Reject
from depin_p2p.gossip.penalty import TolerancePolicy, ToleranceTable
from depin_p2p.gossip.prefetch import Prefetch
from depin_p2p.gossip.transport import MAX_COUNTED_PEERS, PROOFS, GossipMessage, PeerId, Transport, topic
from depin_p2p.gossip.validation import (
    FAR_OUT_OF_WINDOW,
    FAR_TOO_OLD,
    GossipRule,
    Screen,
    validate_gossip_envelope,
)

if TYPE_CHECKING:
    # libp2p pulls in trio-typing, whose stale trio-stubs shadow trio's own
    # annotations and lack trio.TaskStatus; its TaskStatus is the same protocol.
    from trio_typing import TaskStatus

log = structlog.get_logger(__name__)

MAX_BUNDLE_ITEMS = 64
MAX_BUNDLE_BYTES = 512 * 1024


@wire.message(type_id=64)
@dataclass(frozen=True, slots=True)
class ProofBundle:
    """Signed envelopes (encoded) travelling together in one gossip message. Not itself signed."""

    items: Annotated[tuple[bytes, ...], wire.MaxLen(MAX_BUNDLE_ITEMS)]


# The subsystem's own check of a verified item: returns to accept, raises Ignore / Reject.
ItemCheck = Callable[[wire.Verified, PeerId], None]


@dataclass(frozen=True, slots=True)
class ReceivedProof:
    """A new, verified proof from the network, and the peer that forwarded its bundle."""

    verified: wire.Verified
    data: bytes
    peer: PeerId


MIN_INTERVAL_MS = 200
BUNDLES_PER_EPOCH = 4  # partial bundles a node sends per epoch, at most (see BatchConfig.for_epoch)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """Bundle size and timing, queue bounds."""

    flush_ms: int = 50  # a lone proof waits at most this long...
    min_interval_ms: int = MIN_INTERVAL_MS  # ...unless we published a partial bundle less than this ago
    max_items: int = MAX_BUNDLE_ITEMS
    max_bytes: int = MAX_BUNDLE_BYTES
    submit_capacity: int = 10_000
    output_capacity: int = 10_000
    seen_capacity: int = 200_000
    # How long a proof id is remembered: at least the widest time window of the
    # topic's rules (a proof older than that is ignored before its signature
    # check anyway), never less than this.
    min_seen_ttl_ms: int = 120_000
    pending_bundles: int = 4_096
    max_outbox_age_ms: int = 30_000  # an own item not sent by then is dropped, never sent stale
    far_tolerance: TolerancePolicy = field(default_factory=TolerancePolicy)
    # Ed25519 checks a peer's bundles may cost this node: a burst, then a steady rate. Items
    # beyond it are neither checked nor relayed nor remembered (another peer's copy still
    # counts); never a penalty: a busy honest relay is not an attacker.
    check_budget: TolerancePolicy = field(
        default_factory=lambda: TolerancePolicy(items=16_384, refill_per_second=4_096)
    )

    @classmethod
    def for_epoch(cls, epoch_length_ms: int) -> BatchConfig:
        """Partial bundles at most every ``epoch / BUNDLES_PER_EPOCH`` (never under the default).

        Every node's bundles reach every node, each from several mesh peers,
        and py-libp2p pays about a millisecond of CPU per RPC: the machine-wide
        cost grows with nodes x bundle rate x nodes. With one bundle interval
        per epoch fraction and epochs that grow with the network (the devnet's
        rule), the network's bundle rate stays flat as it grows. Beacons go out
        in an epoch's first half, so the last reports still leave in time.
        """
        return cls(min_interval_ms=max(MIN_INTERVAL_MS, epoch_length_ms // BUNDLES_PER_EPOCH))

    def __post_init__(self) -> None:
        if not 1 <= self.max_items <= MAX_BUNDLE_ITEMS:
            raise InternalError(f"max_items must be in [1, {MAX_BUNDLE_ITEMS}]")


def _count_by_peer(by_peer: dict[str, dict[str, int]], peer: str, code: str) -> None:
    if peer in by_peer or len(by_peer) < MAX_COUNTED_PEERS:
        codes = by_peer.setdefault(peer, {})
        codes[code] = codes.get(code, 0) + 1


@dataclass(slots=True)
class ServiceCounters:
    """Exported as metrics. Mutable: the service increments in place."""

    submitted: int = 0
    dropped_submit_full: int = 0
    bundles_published: int = 0
    bundles_accepted: int = 0
    bundles_rejected: int = 0
    bundles_ignored: int = 0
    items_duplicate: int = 0
    items_accepted: int = 0
    items_ignored: int = 0
    dropped_output_full: int = 0
    dropped_stale: int = 0  # own items that waited in the outbox past max_outbox_age_ms
    items_far: int = 0  # far_out_of_window items received (replays included)
    items_far_charged: int = 0  # ...of which beyond the forwarding peer's tolerance
    items_over_budget: int = 0  # not checked: the forwarding peer had used its check budget
    bundles_rebundled: int = 0  # not relayed as they came (a far item inside); fresh items resent
    signatures: wire.SignatureTally = field(default_factory=wire.SignatureTally)  # Ed25519 checks here
    reject_codes: dict[str, int] = field(default_factory=dict)
    ignore_codes: dict[str, int] = field(default_factory=dict)
    # Items of accepted bundles ignored one by one, by forwarding peer then code (bounded).
    item_ignores_by_peer: dict[str, dict[str, int]] = field(default_factory=dict)


class _Lru:
    """A bounded set of content ids, each kept ``ttl_ms`` after it was last added; oldest out first."""

    def __init__(self, capacity: int, ttl_ms: int) -> None:
        self._items: OrderedDict[bytes, int] = OrderedDict()  # id -> when added, oldest first
        self._capacity = capacity
        self._ttl_ms = ttl_ms

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def add(self, key: bytes, now_ms: int) -> None:
        self._items[key] = now_ms
        self._items.move_to_end(key)
        horizon = now_ms - self._ttl_ms
        while self._items and (
            len(self._items) > self._capacity or next(iter(self._items.values())) < horizon
        ):
            self._items.popitem(last=False)


class ProofGossip:
    """The proofs topic of one node.

    Args:
        transport: the node's network.
        network_id: our network; names the topic and is checked in every envelope.
        clock: time for the gossip time window.
        rules: message types carried, by type id (domain, time window).
        check_item: the subsystem's validator for each verified item.
        screen_item: the subsystem's cheap checks of a decoded item and its claimed
            signer (epoch, registry), run before the signature check.
        config: batching and bounds.
        signatures: the node's verified-signature cache (a private one if None); this
            service's share of its checks is counted in ``counters.signatures``.
        verifier: checks a bundle's signatures in one batch off the trio loop (both cores),
            from the transport's ``prepare`` hook, before the validator runs; None (the
            simulator): every check inline in the validator.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        network_id: str,
        clock: Clock,
        rules: Mapping[int, GossipRule],
        check_item: ItemCheck | None = None,
        config: BatchConfig | None = None,
        signatures: wire.SignatureCache | None = None,
        screen_item: Screen | None = None,
        verifier: verifiers.BatchVerifier | None = None,
    ) -> None:
        self.config = config or BatchConfig()
        self.counters = ServiceCounters()
        cache = wire.SignatureCache() if signatures is None else signatures  # (an empty one is falsy)
        self._cache = cache
        self._verify = cache.verifier(self.counters.signatures)
        self.topic = topic(network_id, PROOFS)
        self._transport = transport
        self._network_id = network_id
        self._clock = clock
        self._rules = dict(rules)
        self._check_item = check_item
        self._screen = screen_item
        self._tolerance = ToleranceTable(self.config.far_tolerance)
        self._check_budget = ToleranceTable(self.config.check_budget)
        widest = max(
            (r.window.max_age_ms + r.window.max_future_ms for r in self._rules.values() if r.window),
            default=0,
        )
        self._seen = _Lru(self.config.seen_capacity, max(self.config.min_seen_ttl_ms, widest))
        self._far = _Lru(self.config.seen_capacity // 8, max(self.config.min_seen_ttl_ms, widest))
        self._outbox: deque[tuple[int, bytes]] = deque()  # (submitted at, item)
        self._outbox_bytes = 0
        self._wake = trio.Event()
        self._last_partial = float("-inf")
        self._pending: OrderedDict[bytes, list[ReceivedProof]] = OrderedDict()
        self._prefetch = None
        if verifier is not None:
            self._prefetch = Prefetch(
                verifier,
                cache,
                self.counters.signatures,
                self._check_budget,
                network_id=network_id,
                rules=self._rules,
                screen=screen_item,
            )
        self._out_send, self.received = trio.open_memory_channel[ReceivedProof](self.config.output_capacity)

    # ---------------------------------------------------------------- send

    def submit(self, envelope: bytes) -> bool:
        """Queue one of our own encoded envelopes for the next bundle.

        Returns False (and counts a drop) when the outbox is full or the item
        can never fit in a bundle. Our own items are marked seen, so their
        echoes from the network are dropped as duplicates.
        """
        if len(self._outbox) >= self.config.submit_capacity or len(envelope) > self.config.max_bytes - 64:
            self.counters.dropped_submit_full += 1
            return False
        now_ms = self._clock.now_ms()
        self._seen.add(wire.content_id(envelope), now_ms)
        self._outbox.append((now_ms, envelope))
        self._outbox_bytes += len(envelope)
        self.counters.submitted += 1
        self._wake.set()
        return True

    def _take_bundle(self) -> ProofBundle:
        items: list[bytes] = []
        size = 16  # msgpack array headers
        oldest = self._clock.now_ms() - self.config.max_outbox_age_ms
        while self._outbox and len(items) < self.config.max_items:
            at, item = self._outbox[0]
            item_size = len(item) + 5
            if items and size + item_size > self.config.max_bytes:
                break
            self._outbox.popleft()
            self._outbox_bytes -= len(item)
            if at < oldest:
                self.counters.dropped_stale += 1
                continue
            items.append(item)
            size += item_size
        return ProofBundle(tuple(items))

    def _bundle_full(self) -> bool:
        return len(self._outbox) >= self.config.max_items or self._outbox_bytes >= self.config.max_bytes

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if not self._outbox:
                continue
            if not self._bundle_full():
                # Wait for the bundle to fill, at most flush_ms after its first
                # item; but send partial bundles at most every min_interval_ms,
                # so the gossip message rate stays in the tens per second
                # network-wide (py-libp2p pays milliseconds per message).
                deadline = max(
                    trio.current_time() + self.config.flush_ms / 1000,
                    self._last_partial + self.config.min_interval_ms / 1000,
                )
                while not self._bundle_full() and trio.current_time() < deadline:
                    with trio.move_on_at(deadline):
                        await self._wake.wait()
                    self._wake = trio.Event()
            while self._outbox:
                full = self._bundle_full()
                bundle = self._take_bundle()
                if not bundle.items:
                    continue
                if not full:
                    self._last_partial = trio.current_time()
                await self._transport.publish(self.topic, wire.encode(bundle))
                self.counters.bundles_published += 1
                if not self._bundle_full():
                    break
            if self._outbox:
                self._wake.set()

    # ------------------------------------------------------------- receive

    async def prepare_bundle(self, peer: PeerId, data: bytes) -> None:
        """The transport's ``prepare`` hook: check a bundle's new signatures in one batch, off the loop.

        Decides nothing (see :class:`~depin_p2p.gossip.prefetch.Prefetch`): the
        validator that runs next finds the good signatures in the node's cache
        and the items decoded. Cancellation: the batch is abandoned.
        """
        if self._prefetch is None:
            return
        try:
            bundle = wire.decode_as(data, ProofBundle)
        except CodecError:
            return
        def known(cid: bytes) -> bool:
            return cid in self._far or cid in self._seen

        await self._prefetch.items(peer, bundle.items, known, self._clock.now_ms())

    def validate_bundle(self, peer: PeerId, data: bytes) -> None:
        """The transport validator of the proofs topic: raises Ignore / Reject, stashes new items."""
        try:
            bundle = wire.decode_as(data, ProofBundle)
        except CodecError as exc:
            self._count_reject("malformed_bundle")
            raise Reject("malformed_bundle", str(exc)) from None
        fresh: list[ReceivedProof] = []
        fresh_ids: set[bytes] = set()
        now_ms = self._clock.now_ms()
        far = over_budget = stale = 0
        allowance = self._check_budget.remaining(peer, now_ms)
        checks_before = self._cache.verified
        try:
            for item in bundle.items:
                cid = wire.content_id(item)
                if cid in self._far:
                    far += 1  # a replay of a far item: no check, and it counts again
                elif cid in self._seen or cid in fresh_ids:
                    self.counters.items_duplicate += 1
                elif self._cache.verified - checks_before >= allowance:
                    over_budget += 1  # not checked, not remembered: another peer's copy still counts
                else:
                    judged = self._judge(item, cid, peer, now_ms)
                    if isinstance(judged, ReceivedProof):
                        fresh.append(judged)
                        fresh_ids.add(cid)
                    elif judged == FAR_OUT_OF_WINDOW:
                        far += 1
                    elif judged == FAR_TOO_OLD:
                        stale += 1
        finally:
            self._check_budget.excess(peer, self._cache.verified - checks_before, now_ms)
        for cid in fresh_ids:
            self._seen.add(cid, now_ms)
        if far:
            self._charge_far(peer, far, now_ms)
            self._rebundle(fresh)
            raise Ignore(FAR_OUT_OF_WINDOW, f"{far} items far outside any window")
        if over_budget or stale:  # what was fresh goes on in our bundles; the rest stops here
            self.counters.items_over_budget += over_budget
            self._rebundle(fresh)
            code = "over_check_budget" if over_budget else FAR_TOO_OLD
            raise Ignore(code, f"{over_budget} items beyond the check budget, {stale} far too old")
        if not fresh:
            self.counters.bundles_ignored += 1
            raise Ignore("nothing_new")
        self._pending[wire.content_id(data)] = fresh
        while len(self._pending) > self.config.pending_bundles:
            self._pending.popitem(last=False)

    def _judge(self, item: bytes, cid: bytes, peer: PeerId, now_ms: int) -> ReceivedProof | str:
        """One new item: the proof if it is good, else the code it was ignored for; raises Reject."""
        try:
            verified = validate_gossip_envelope(
                item,
                network_id=self._network_id,
                rules=self._rules,
                now_ms=now_ms,
                verify=self._verify,
                screen=self._screen,
                decoded=None if self._prefetch is None else self._prefetch.take(cid),
            )
            if self._check_item is not None:
                self._check_item(verified, peer)
        except Ignore as exc:
            self.counters.items_ignored += 1
            self.counters.ignore_codes[exc.code] = self.counters.ignore_codes.get(exc.code, 0) + 1
            _count_by_peer(self.counters.item_ignores_by_peer, peer, exc.code)
            # Seen too: an ignored item costs no penalty, so a replay of it (reshuffled into
            # new bundles) must not cost a signature check again either.
            self._seen.add(cid, now_ms)
            if exc.code == FAR_OUT_OF_WINDOW:
                self._far.add(cid, now_ms)
            return exc.code
        except Reject as exc:
            self._count_reject(exc.code)
            raise
        return ReceivedProof(verified, item, peer)

    def _charge_far(self, peer: PeerId, count: int, now_ms: int) -> None:
        """Charge ``peer`` one light penalty per far item beyond its tolerance."""
        self.counters.items_far += count
        over = self._tolerance.excess(peer, count, now_ms)
        self.counters.items_far_charged += over
        for _ in range(over):
            self._transport.penalise(peer, FAR_OUT_OF_WINDOW)

    def _rebundle(self, fresh: list[ReceivedProof]) -> None:
        """Deliver a bundle's fresh items here and send them on in our own bundles, not in it."""
        self.counters.bundles_ignored += 1
        if not fresh:
            return
        self.counters.bundles_rebundled += 1
        for proof in fresh:
            self._deliver(proof)
            self.submit(proof.data)

    def _deliver(self, proof: ReceivedProof) -> None:
        try:
            self._out_send.send_nowait(proof)
            self.counters.items_accepted += 1
        except trio.WouldBlock:
            self.counters.dropped_output_full += 1

    def _count_reject(self, code: str) -> None:
        self.counters.bundles_rejected += 1
        self.counters.reject_codes[code] = self.counters.reject_codes.get(code, 0) + 1

    async def _drain(self, channel: trio.MemoryReceiveChannel[GossipMessage]) -> None:
        async with channel:
            async for msg in channel:
                fresh = self._pending.pop(wire.content_id(msg.data), None)
                if fresh is None:
                    continue
                self.counters.bundles_accepted += 1
                for proof in fresh:
                    self._deliver(proof)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe to the proofs topic and run the flush timer until cancelled.

        Cancellation: items still in the outbox are dropped (they were never sent).
        """
        if self._prefetch is None:
            channel = await self._transport.subscribe(self.topic, self.validate_bundle, capacity=1024)
        else:
            channel = await self._transport.subscribe(
                self.topic, self.validate_bundle, capacity=1024, prepare=self.prepare_bundle
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain, channel)
            nursery.start_soon(self._flush_loop)
            task_status.started()
