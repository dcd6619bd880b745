"""Signed peer records in pubsub RPCs: each peer's unchanged record is verified once, not per RPC.

py-libp2p 0.8.1 puts the sender's signed peer record (an Ed25519-signed
envelope of its peer id and addresses) into every pubsub RPC it sends, and on
receipt verifies it and rewrites the peerstore's addresses for that peer, twice
for an RPC with control messages (the read loop, then ``GossipSub.handle_rpc``).
A py-spy profile of a node in an idle 16-process devnet on 2 cores spent 13 %
of its samples there, more than on verifying our own proofs. The record only
changes when the peer's addresses do, so :class:`SenderRecords` remembers the
bytes it last accepted from each peer: the same bytes again are accepted
without a second verification (they were verified, byte for byte, already),
and are re-consumed once ``refresh_s`` has passed so the peerstore's 2-hour
address TTL never runs out. Any other bytes go through py-libp2p's check as
before. Either way the field is cleared from the RPC once judged, so the
router does not verify it again.
"""

from __future__ import annotations

from typing import Any

from libp2p.pubsub.utils import maybe_consume_signed_record


class SenderRecords:
    """The last signed peer record accepted from each connected peer."""

    refresh_s: float = 600.0  # py-libp2p stores the addresses for 2 hours
    max_peers: int = 4_096  # bounds the memory if peers come and go without a dead-peer event

    def __init__(self) -> None:
        self._accepted: dict[Any, tuple[bytes, float]] = {}

    def admit(self, rpc: Any, host: Any, peer_id: Any, now_s: float) -> bool:
        """Judge ``rpc``'s sender record from ``peer_id``: False means drop the RPC, as py-libp2p does."""
        if not rpc.HasField("senderRecord"):
            return True
        record: bytes = rpc.senderRecord
        known = self._accepted.get(peer_id)
        if known is not None and known[0] == record and now_s - known[1] < self.refresh_s:
            rpc.ClearField("senderRecord")
            return True
        if not maybe_consume_signed_record(rpc, host, peer_id):
            return False
        if len(self._accepted) >= self.max_peers and peer_id not in self._accepted:
            self._accepted.clear()
        self._accepted[peer_id] = (record, now_s)
        rpc.ClearField("senderRecord")
        return True

    def forget(self, peer_id: Any) -> None:
        self._accepted.pop(peer_id, None)
