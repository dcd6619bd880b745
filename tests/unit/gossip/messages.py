"""Test-only signed message types for the gossip layer (ids 240-247)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.gossip.validation import GossipRule, TimeWindow

NETWORK = "test"


@wire.message(type_id=240, domain=wire.Domain.BEACON)
@dataclass(frozen=True, slots=True)
class FakeProof:
    """Stands in for a device proof: who, when, and some payload."""

    device: wire.PublicKeyBytes
    at_ms: wire.U64
    payload: Annotated[bytes, wire.MaxLen(512)]


def proof_time(msg: object) -> int:
    assert isinstance(msg, FakeProof)
    return msg.at_ms


WINDOW = TimeWindow(proof_time, max_age_ms=600_000, max_future_ms=30_000)
RULES = {240: GossipRule(wire.Domain.BEACON, WINDOW)}


def signed_proof(key: KeyPair, at_ms: int, payload: bytes, network: str = NETWORK) -> bytes:
    """Encoded Envelope of a FakeProof signed by ``key``."""
    return wire.encode(wire.seal(FakeProof(key.public_key, at_ms, payload), key, network))


def forged_proof(key: KeyPair, at_ms: int, payload: bytes) -> bytes:
    """A well-formed Envelope whose signature does not match its body."""
    env = wire.seal(FakeProof(key.public_key, at_ms, payload), key, NETWORK)
    body = wire.encode(FakeProof(key.public_key, at_ms, payload + b"!"))
    return wire.encode(wire.Envelope(env.network_id, env.signer, env.signature, body))
