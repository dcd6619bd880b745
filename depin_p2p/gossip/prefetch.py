"""Signature checks of gossiped proofs in batches, before the validator runs (both cores).

The validator of a topic is synchronous (it runs on the receive path and
must never block the network); an Ed25519 check is most of what a proof
costs. :class:`Prefetch` runs where the transport may await (its
``prepare`` hook, :data:`~depin_p2p.gossip.transport.Prepare`): it decodes
and screens a bundle's new items exactly as the validator would, sends the
signatures of those that pass to a :class:`~depin_p2p.verifiers.BatchVerifier`
in one batch (worker threads), and enters the good ones in the node's
signature cache. It decides nothing: the validator then judges every item
as before, finding good signatures in the cache and the items decoded.
Checks run here are charged to the forwarding peer's check budget, as the
validator's own are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import trio

from depin_p2p import verifiers, wire
from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.penalty import ToleranceTable
from depin_p2p.gossip.transport import PeerId
from depin_p2p.gossip.validation import (
    GossipRule,
    Screen,
    Screened,
    decode_gossip_envelope,
    screen_gossip_envelope,
)

DECODED_CAPACITY = 8_192  # items decoded here, waiting for the validator


class Prefetch:
    """Batched signature checks of new items for one topic's validator.

    Args:
        verifier: where the batches run.
        cache: the node's signature cache (good signatures are entered there).
        tally: the topic's share of the cache's checks.
        budget: the topic's per-peer check budget (checks run here are charged to it).
        network_id, rules, screen: as the validator's (same decoding, same cheap checks).
    """

    def __init__(
        self,
        verifier: verifiers.BatchVerifier,
        cache: wire.SignatureCache,
        tally: wire.SignatureTally,
        budget: ToleranceTable,
        *,
        network_id: str,
        rules: Mapping[int, GossipRule],
        screen: Screen | None,
    ) -> None:
        self._verifier = verifier
        self._cache = cache
        self._tally = tally
        self._budget = budget
        self._network_id = network_id
        self._rules = rules
        self._screen = screen
        self._decoded: dict[bytes, Screened] = {}  # item content id -> decoded here
        self._warming: dict[bytes, trio.Event] = {}  # item content id -> set once its batch is checked

    def take(self, cid: bytes) -> Screened | None:
        """The item decoded here, if it was (once: the validator takes it)."""
        return self._decoded.pop(cid, None)

    async def items(
        self, peer: PeerId, items: Iterable[bytes], known: Callable[[bytes], bool], now_ms: int
    ) -> None:
        """Decode, screen and check in one batch the items of one message not ``known`` (content ids).

        An item that fails decoding or screening is left for the validator to
        judge. An item another message is checking already is waited for,
        not checked twice. Cancellation: the batch is abandoned, nothing entered.
        """
        allowance = self._budget.remaining(peer, now_ms)
        todo: list[tuple[bytes, bytes, bytes]] = []
        mine: list[bytes] = []
        waits: list[trio.Event] = []
        for item in items:
            cid = wire.content_id(item)
            busy = self._warming.get(cid)
            if busy is not None:
                waits.append(busy)
                continue
            if cid in self._decoded or known(cid):
                continue
            try:
                decoded = decode_gossip_envelope(item, network_id=self._network_id, rules=self._rules)
                screen_gossip_envelope(decoded, rules=self._rules, now_ms=now_ms, screen=self._screen)
            except (Ignore, Reject):
                continue
            self._decoded[cid] = decoded
            if len(todo) >= allowance or self._cache.unchecked(*decoded.item()) is None:
                continue
            todo.append(decoded.item())
            mine.append(cid)
            self._warming[cid] = trio.Event()
        while len(self._decoded) > DECODED_CAPACITY:
            del self._decoded[next(iter(self._decoded))]
        try:
            checks = await verifiers.warm(self._cache, self._verifier, todo, self._tally)
            self._budget.excess(peer, checks, now_ms)
        finally:
            for cid in mine:
                self._warming.pop(cid).set()
        for event in waits:
            await event.wait()
