"""Gossip's signature checks in batches on worker threads, before the synchronous validator.

Real threads (``verifiers.ThreadVerifier``), the real clock; every wait bounded.
"""

from __future__ import annotations

import pytest
import trio

from depin_p2p import verifiers, wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.memory import MemoryNetwork
from depin_p2p.gossip.penalty import TolerancePolicy
from depin_p2p.gossip.service import BatchConfig, ProofBundle, ProofGossip
from depin_p2p.gossip.transport import PeerId
from depin_p2p.gossip.validation import GossipRule, TimeWindow
from tests.unit.gossip.messages import NETWORK, forged_proof, proof_time, signed_proof

KEYS = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(3)]
PEER = PeerId("peer")
RULES = {240: GossipRule(wire.Domain.BEACON, TimeWindow(proof_time, 600_000, 30_000, far_ms=60_000))}


def gossip(verifier: verifiers.BatchVerifier | None, budget: int = 16_384) -> tuple[ProofGossip, Clock]:
    clock = Clock(wall_anchor_ms=1_700_000_000_000)
    node = MemoryNetwork(seed=1).create_node("n0")
    config = BatchConfig(check_budget=TolerancePolicy(items=budget, refill_per_second=1))
    svc = ProofGossip(node, network_id=NETWORK, clock=clock, rules=RULES, verifier=verifier, config=config)
    return svc, clock


async def test_a_bundle_is_checked_in_one_batch_and_the_validator_answers_from_the_cache() -> None:
    verifier = verifiers.ThreadVerifier(threads=2)
    svc, clock = gossip(verifier)
    items = tuple(signed_proof(KEYS[i % 3], clock.now_ms(), b"%d" % i) for i in range(40))
    data = wire.encode(ProofBundle(items))
    with trio.fail_after(10):
        await svc.prepare_bundle(PEER, data)
    assert (verifier.batches, verifier.checked) == (1, 40)
    assert svc.counters.signatures.verified == 40
    svc.validate_bundle(PEER, data)
    assert svc.counters.signatures.verified == 40  # not one check more
    assert svc.counters.signatures.cached == 40


async def test_a_forged_item_is_not_entered_and_the_validator_still_rejects_its_bundle() -> None:
    svc, clock = gossip(verifiers.ThreadVerifier(threads=2, inline_below=1))
    good = signed_proof(KEYS[0], clock.now_ms(), b"good")
    bad = forged_proof(KEYS[0], clock.now_ms(), b"bad")
    data = wire.encode(ProofBundle((good, bad)))
    with trio.fail_after(10):
        await svc.prepare_bundle(PEER, data)
    with pytest.raises(Reject, match="bad_signature"):
        svc.validate_bundle(PEER, data)
    assert svc.counters.reject_codes == {"bad_signature": 1}


async def test_far_items_and_bad_bytes_cost_no_check_before_the_validator() -> None:
    verifier = verifiers.ThreadVerifier(threads=2)
    svc, clock = gossip(verifier)
    far = tuple(signed_proof(KEYS[0], clock.now_ms() + 3_600_000, b"%d" % i) for i in range(8))
    with trio.fail_after(10):
        await svc.prepare_bundle(PEER, wire.encode(ProofBundle(far)))
        await svc.prepare_bundle(PEER, b"\x93not a bundle")
    assert verifier.checked == 0
    with pytest.raises(Ignore, match="far_out_of_window"):
        svc.validate_bundle(PEER, wire.encode(ProofBundle(far)))
    assert svc.counters.signatures.verified == 0


async def test_copies_of_a_bundle_from_several_peers_at_once_are_checked_once() -> None:
    verifier = verifiers.ThreadVerifier(threads=2)
    svc, clock = gossip(verifier)
    items = tuple(signed_proof(KEYS[1], clock.now_ms(), b"%d" % i) for i in range(16))
    data = wire.encode(ProofBundle(items))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(svc.prepare_bundle, PeerId(f"p{i}"), data)
    assert verifier.checked == 16
    svc.validate_bundle(PeerId("p0"), data)
    assert svc.counters.signatures.verified == 16


async def test_the_check_budget_bounds_what_a_peer_gets_checked_ahead() -> None:
    verifier = verifiers.ThreadVerifier(threads=2)
    svc, clock = gossip(verifier, budget=100)
    items = [signed_proof(KEYS[2], clock.now_ms(), b"%d" % i) for i in range(3 * 64)]
    with trio.fail_after(10):
        for start in range(0, len(items), 64):
            await svc.prepare_bundle(PEER, wire.encode(ProofBundle(tuple(items[start : start + 64]))))
    assert 100 <= verifier.checked <= 101  # (the budget refills one a second)
    with pytest.raises(Ignore, match="over_check_budget"):  # and the validator checks none of the rest
        svc.validate_bundle(PEER, wire.encode(ProofBundle(tuple(items[128:]))))
    assert svc.counters.signatures.verified == verifier.checked


def test_check_batch_tells_good_from_bad_and_malformed_keys() -> None:
    key = KEYS[0]
    signed = b"bytes"
    sig = key.sign(signed)
    pk = key.public_key
    assert verifiers.check_batch([(pk, signed, sig), (pk, b"other", sig)]) == [True, False]
    assert verifiers.check_batch([(b"short", signed, sig), (key.public_key, signed, b"x")]) == [False, False]
