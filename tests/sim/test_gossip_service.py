"""Proof batching, de-duplication and validation on the memory network, in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import Ignore, Reject
from depin_p2p.gossip.memory import LinkProfile, MemoryNetwork, MemoryTransport
from depin_p2p.gossip.service import BatchConfig, ProofBundle, ProofGossip, ReceivedProof
from depin_p2p.gossip.transport import PeerId
from tests.unit.gossip.messages import NETWORK, RULES, FakeProof, forged_proof, signed_proof

KEYS = [KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(4)]


@asynccontextmanager
async def services(
    n: int,
    *,
    link: LinkProfile | None = None,
    config: BatchConfig | None = None,
    check=None,  # type: ignore[no-untyped-def]
) -> AsyncIterator[tuple[list[MemoryTransport], list[ProofGossip], Clock]]:
    net = MemoryNetwork(seed=5, default_link=link or LinkProfile(latency_ms=20, jitter_ms=10))
    clock = Clock(wall_anchor_ms=1_700_000_000_000)
    nodes = [net.create_node(f"n{i}") for i in range(n)]
    svcs = [
        ProofGossip(node, network_id=NETWORK, clock=clock, rules=RULES, check_item=check, config=config)
        for node in nodes
    ]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        for svc in svcs:
            await nursery.start(svc.run)
        for a, b in zip(nodes[1:], nodes, strict=False):
            await a.connect(b.listen_addrs()[0])
        yield nodes, svcs, clock
        nursery.cancel_scope.cancel()


def drain(svc: ProofGossip) -> list[ReceivedProof]:
    out = []
    while True:
        try:
            out.append(svc.received.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_every_proof_reaches_every_node_in_few_bundles(autojump_clock: trio.testing.MockClock) -> None:
    async with services(4) as (_, svcs, clock):
        sent: list[set[bytes]] = [set() for _ in svcs]
        for step in range(250):  # 1,000 proofs over 2.5 s: 400 proofs/s offered
            for i, svc in enumerate(svcs):
                data = signed_proof(KEYS[i], clock.now_ms(), b"%d" % step)
                assert svc.submit(data)
                sent[i].add(data)
            await trio.sleep(0.01)
        await trio.sleep(1)
        for i, svc in enumerate(svcs):
            got = drain(svc)
            expected = set().union(*(s for j, s in enumerate(sent) if j != i))
            assert {p.data for p in got} == expected
            assert len(got) == len(expected)
            # At most 5 partial bundles/s per node (min_interval_ms=200) instead of 100 proofs/s.
            assert 10 <= svc.counters.bundles_published <= 15
            assert svc.counters.reject_codes == {}


async def test_a_lone_proof_waits_flush_ms_and_partial_bundles_are_rate_limited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    link = LinkProfile(latency_ms=20)
    async with services(2, link=link) as (_, svcs, clock):
        start = trio.current_time()
        svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"first"))
        await svcs[1].received.receive()
        assert trio.current_time() - start == pytest.approx(0.05 + 0.02)  # flush_ms + link latency
        svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"second"))
        await svcs[1].received.receive()
        # The previous partial bundle left at start + 0.05: the next waits for min_interval_ms.
        assert trio.current_time() - start == pytest.approx(0.05 + 0.2 + 0.02)


async def test_a_node_sends_about_four_partial_bundles_per_epoch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found at 16 processes on 2 cores: a bundle every 200 ms per node, each received from
    # several mesh peers, saturated both cores and no epoch committed. The node's config
    # spaces partial bundles by a quarter of the epoch instead.
    config = BatchConfig.for_epoch(8_000)
    assert config.min_interval_ms == 2_000
    assert BatchConfig.for_epoch(400).min_interval_ms == 200  # never below the default
    async with services(2, config=config) as (_, svcs, clock):
        for step in range(80):  # a proof every 100 ms for one 8 s epoch
            svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"%d" % step))
            await trio.sleep(0.1)
        await trio.sleep(2.5)
        assert len(drain(svcs[1])) == 80
        assert 4 <= svcs[0].counters.bundles_published <= 5


async def test_full_bundles_go_at_once(autojump_clock: trio.testing.MockClock) -> None:
    config = BatchConfig(flush_ms=10_000, max_items=8)
    async with services(2, config=config) as (_, svcs, clock):
        for k in range(8):
            svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"%d" % k))
        start = trio.current_time()
        got = [await svcs[1].received.receive() for _ in range(8)]
        assert trio.current_time() - start < 1  # not the 10 s timer
        assert len({p.data for p in got}) == 8
        assert svcs[0].counters.bundles_published == 1


async def test_duplicates_are_dropped_before_signature_checks(autojump_clock: trio.testing.MockClock) -> None:
    checked: list[bytes] = []

    def check(verified: wire.Verified, peer: PeerId) -> None:
        checked.append(verified.envelope.signature)

    async with services(3, check=check) as (_, svcs, clock):
        same = signed_proof(KEYS[3], clock.now_ms(), b"same")
        other = signed_proof(KEYS[3], clock.now_ms(), b"other")
        svcs[0].submit(same)
        await trio.sleep(1)
        svcs[2].submit(same)  # bundled with another item: a different bundle, same proof inside
        svcs[2].submit(other)
        await trio.sleep(1)
        assert [p.data for p in drain(svcs[1])] == [same, other]
        assert svcs[1].counters.items_duplicate == 1
        # Each node verifies each proof at most once: node 1 both, node 2 "same"
        # (from node 0's bundle, before re-submitting it), node 0 only "other".
        assert len(checked) == 4
        assert [p.data for p in drain(svcs[0])] == [other]


async def test_a_bundle_with_a_forged_item_is_rejected_whole(autojump_clock: trio.testing.MockClock) -> None:
    async with services(3) as (nodes, svcs, clock):
        good = signed_proof(KEYS[0], clock.now_ms(), b"good")
        bad = forged_proof(KEYS[0], clock.now_ms(), b"bad")
        await nodes[0].publish(svcs[0].topic, wire.encode(ProofBundle((good, bad))))
        await nodes[0].publish(svcs[0].topic, b"\x93not a bundle")
        old = signed_proof(KEYS[0], clock.now_ms() - 3_600_000, b"old")
        svcs[0].submit(old)
        svcs[0].submit(good)
        await trio.sleep(1)
        assert [p.data for p in drain(svcs[1])] == [good]
        assert [p.data for p in drain(svcs[2])] == [good]
        assert svcs[1].counters.reject_codes == {"bad_signature": 1, "malformed_bundle": 1}
        assert svcs[1].counters.ignore_codes == {"too_old": 1}
        assert nodes[1].counters.reject_codes == {"bad_signature": 1, "malformed_bundle": 1}
        assert svcs[2].counters.reject_codes == {}  # never forwarded


async def test_subsystem_check_can_reject(autojump_clock: trio.testing.MockClock) -> None:
    def check(verified: wire.Verified, peer: PeerId) -> None:
        assert isinstance(verified.message, FakeProof)
        if verified.message.payload == b"impossible":
            raise Reject("rssi_above_fspl_bound")

    async with services(2, check=check) as (_, svcs, clock):
        svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"impossible"))
        await trio.sleep(1)
        svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"fine"))
        await trio.sleep(1)
        assert [p.verified.message.payload for p in drain(svcs[1])] == [b"fine"]  # type: ignore[attr-defined]
        assert svcs[1].counters.reject_codes == {"rssi_above_fspl_bound": 1}


async def test_queues_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    config = BatchConfig(submit_capacity=10, output_capacity=5)
    async with services(2, config=config) as (_, svcs, clock):
        results = [svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"%d" % k)) for k in range(12)]
        assert results == [True] * 10 + [False] * 2
        assert svcs[0].counters.dropped_submit_full == 2
        assert not svcs[0].submit(b"x" * (1 << 20))
        await trio.sleep(1)
        assert len(drain(svcs[1])) == 5
        assert svcs[1].counters.dropped_output_full == 5


def test_bundle_limits() -> None:
    with pytest.raises(Exception, match="max_items"):
        BatchConfig(max_items=65)


async def test_an_ignored_item_replayed_in_new_bundles_is_checked_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Review finding: Ignore costs the sender nothing, so without a memory of ignored items a
    # pre-signed pool reshuffled into fresh bundles made every node re-verify it for free.
    checked: list[bytes] = []

    def check(verified: wire.Verified, peer: PeerId) -> None:
        checked.append(verified.envelope.signature)
        raise Ignore("unknown_device", "not registered in our ledger yet")

    async with services(2, check=check) as (nodes, svcs, clock):
        pool = [signed_proof(KEYS[3], clock.now_ms(), b"p%d" % i) for i in range(8)]
        for shift in range(5):
            reshuffled = pool[shift:] + pool[:shift]
            await nodes[0].publish(svcs[0].topic, wire.encode(ProofBundle(tuple(reshuffled))))
            await trio.sleep(0.5)
        assert len(checked) == 8  # each distinct item once, not once per bundle
        assert svcs[1].counters.items_duplicate == 4 * 8


async def test_an_own_item_that_waited_too_long_is_dropped_not_sent_stale(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A node resumed after a pause must not flush proofs that are now far outside every window:
    # its peers would charge it for them.
    config = BatchConfig(flush_ms=5_000, min_interval_ms=0, max_outbox_age_ms=1_000)
    async with services(2, config=config) as (_, svcs, clock):
        svcs[0].submit(signed_proof(KEYS[0], clock.now_ms(), b"stale"))
        await trio.sleep(6)
        assert drain(svcs[1]) == []
        assert svcs[0].counters.dropped_stale == 1 and svcs[0].counters.bundles_published == 0
    config = BatchConfig(flush_ms=500, min_interval_ms=0, max_outbox_age_ms=1_000)
    async with services(2, config=config) as (_, svcs, clock):
        fresh = signed_proof(KEYS[0], clock.now_ms(), b"fresh")
        svcs[0].submit(fresh)
        await trio.sleep(2)  # sent after 0.5 s, within its 1 s
        assert [p.data for p in drain(svcs[1])] == [fresh]
        assert svcs[0].counters.dropped_stale == 0
