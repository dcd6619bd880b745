"""One conformance suite for every Transport: the memory network and real libp2p on 127.0.0.1.

The memory variant runs in virtual time (MockClock); the libp2p variant on the
real clock with every wait under ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from depin_p2p.errors import Ignore, Reject, TransportError
from depin_p2p.gossip.penalty import PenaltyPolicy
from depin_p2p.gossip.transport import PeerEvent, PeerId, Transport, protocol, topic
from tests.unit.gossip.cluster import KINDS, cluster, collect_libp2p_garbage, connect_line, wait_until

T = topic("test", "proofs")
ECHO = protocol("test", "echo")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    """Runs after the trio run ends, when libp2p's last closed sockets become garbage."""
    yield
    collect_libp2p_garbage()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def vclock(kind: str) -> trio.testing.MockClock | None:
    """Virtual time for the memory transport; the real clock for libp2p."""
    return trio.testing.MockClock(autojump_threshold=0) if kind == "memory" else None


def accept(peer: PeerId, data: bytes) -> None:
    pass


async def refused_while_banned(
    a: Transport, b: Transport, events_b: trio.MemoryReceiveChannel[PeerEvent]
) -> None:
    """``a`` is banned by ``b``: a dial either fails or is cut at once; ``b`` never reports it connected."""
    with contextlib.suppress(TransportError), trio.fail_after(10):
        await a.connect(b.listen_addrs()[0])
    await wait_until(lambda: a.peer_id not in b.peers() and b.peer_id not in a.peers())
    await trio.sleep(0.2)  # give a wrongly accepted connection time to show up as an event
    while True:
        try:
            event = events_b.receive_nowait()
        except trio.WouldBlock:
            break
        assert not event.connected, event
    assert a.peer_id not in b.peers()


async def test_publish_reaches_every_subscriber_through_forwarding(kind: str, vclock: object) -> None:
    async with cluster(kind, 3) as nodes:
        subs = [await n.subscribe(T, accept) for n in nodes]
        await connect_line(nodes)
        await wait_until(lambda: nodes[1].topic_peers(T) == {nodes[0].peer_id, nodes[2].peer_id})
        await wait_until(lambda: nodes[2].topic_peers(T) == {nodes[1].peer_id})
        await nodes[0].publish(T, b"proof-1")
        with trio.fail_after(10):
            got1 = await subs[1].receive()
            got2 = await subs[2].receive()
        assert (got1.topic, got1.data, got1.peer) == (T, b"proof-1", nodes[0].peer_id)
        # Node 2 is not connected to the publisher: it hears it from node 1.
        assert (got2.data, got2.peer) == (b"proof-1", nodes[1].peer_id)
        # Identical bytes are one message (content-addressed ids), and the
        # publisher never hears its own message.
        await nodes[2].publish(T, b"proof-1")
        await nodes[2].publish(T, b"proof-2")
        with trio.fail_after(10):
            assert (await subs[1].receive()).data == b"proof-2"
            assert (await subs[0].receive()).data == b"proof-2"
        with pytest.raises(trio.WouldBlock):
            subs[0].receive_nowait()
        assert nodes[1].counters.delivered == 2


async def test_ignore_drops_quietly_reject_drops_penalises_and_bans(kind: str, vclock: object) -> None:
    policy = PenaltyPolicy(reject_points=25, threshold=100, ban_ms=60_000)

    def picky(peer: PeerId, data: bytes) -> None:
        if data.startswith(b"ignore"):
            raise Ignore("too_early")
        if data.startswith(b"reject"):
            raise Reject("bad_thing")

    async with cluster(kind, 3, penalty_policy=policy) as (a, b, c):
        await a.subscribe(T, accept)
        sub_b = await b.subscribe(T, picky)
        sub_c = await c.subscribe(T, accept)
        events_b = b.peer_events()
        await connect_line([a, b, c])
        await wait_until(lambda: b.topic_peers(T) == {a.peer_id, c.peer_id})
        await wait_until(lambda: c.topic_peers(T) == {b.peer_id})
        for i in range(20):  # far more ignores than the ban threshold would allow as rejects
            await a.publish(T, b"ignore %d" % i)
        await a.publish(T, b"fine")
        with trio.fail_after(10):
            assert (await sub_b.receive()).data == b"fine"
            # Ignored messages were not forwarded: the next thing c sees is "fine".
            assert (await sub_c.receive()).data == b"fine"
        assert b.counters.ignored == 20
        assert b.counters.rejected == 0
        assert a.peer_id in b.peers()
        for i in range(3):
            await a.publish(T, b"reject %d" % i)
        await wait_until(lambda: b.counters.rejected == 3)
        assert b.counters.reject_codes == {"bad_thing": 3}
        assert a.peer_id in b.peers() and not b.is_banned(a.peer_id)
        await a.publish(T, b"reject 3")  # 4 x 25 points reach the threshold
        await wait_until(lambda: a.peer_id not in b.peers())
        assert b.is_banned(a.peer_id)
        assert b.counters.peers_banned == 1
        with trio.fail_after(10):
            events = [await events_b.receive() for _ in range(3)]
        assert PeerEvent(a.peer_id, False) in events
        # c never saw a rejected message.
        with pytest.raises(trio.WouldBlock):
            sub_c.receive_nowait()
        await refused_while_banned(a, b, events_b)


async def test_validator_crash_costs_the_message_not_the_node(kind: str, vclock: object) -> None:
    def broken(peer: PeerId, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise ZeroDivisionError("a bug in our own validator")

    async with cluster(kind, 2) as (a, b):
        await a.subscribe(T, accept)
        sub_b = await b.subscribe(T, broken)
        await connect_line([a, b])
        await wait_until(lambda: b.topic_peers(T) == {a.peer_id} and a.topic_peers(T) == {b.peer_id})
        # Our bug is no offence of the peer's: twelve of them (ten rejects would ban it) cost it nothing.
        for i in range(12):
            await a.publish(T, b"boom %d" % i)
        await a.publish(T, b"after")
        with trio.fail_after(10):
            while (await sub_b.receive()).data != b"after":
                pass
        assert b.counters.reject_codes == {"validator_error": 12}
        assert a.peer_id in b.peers() and not b.is_banned(a.peer_id)


async def test_request_response_caps_timeouts_and_errors(kind: str, vclock: object) -> None:
    async def echo(peer: PeerId, data: bytes) -> bytes:
        if data == b"hang":
            await trio.sleep_forever()
        if data == b"crash":
            raise RuntimeError("a bug in our own handler")
        if data == b"reject":
            raise Reject("bad_request")
        if data == b"big":
            return b"x" * 5000
        return peer.encode() + b":" + data

    async with cluster(kind, 2) as (a, b):
        b.set_handler(ECHO, echo, max_request_bytes=100)
        await connect_line([a, b])
        with trio.fail_after(10):
            assert await a.request(b.peer_id, ECHO, b"hi", timeout=5) == a.peer_id.encode() + b":hi"
            with pytest.raises(TransportError):
                await a.request(b.peer_id, ECHO, b"hang", timeout=0.5)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, ECHO, b"crash", timeout=5)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, ECHO, b"big", timeout=5, max_response_bytes=1000)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, ECHO, b"y" * 101, timeout=5)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, protocol("test", "nothing"), b"hi", timeout=5)
            with pytest.raises(TransportError):
                await a.request(b.peer_id, ECHO, b"reject", timeout=5)
            # Still serving after all of that.
            assert await a.request(b.peer_id, ECHO, b"again", timeout=5) == a.peer_id.encode() + b":again"
        # Served: hi, big (refused by the requester, not the server), again.
        assert b.counters.requests_served == 3
        assert b.counters.requests_failed >= 3  # crash, reject, oversized request (+ hang on libp2p)


async def test_peer_events_and_explicit_ban(kind: str, vclock: object) -> None:
    async with cluster(kind, 2) as (a, b):
        events_a, events_b = a.peer_events(), b.peer_events()
        assert await a.connect(b.listen_addrs()[0]) == b.peer_id
        with trio.fail_after(10):
            assert await events_a.receive() == PeerEvent(b.peer_id, True)
            assert await events_b.receive() == PeerEvent(a.peer_id, True)
        assert a.peers() == {b.peer_id}
        b.ban(a.peer_id, 30)
        with trio.fail_after(10):
            assert await events_b.receive() == PeerEvent(a.peer_id, False)
            assert await events_a.receive() == PeerEvent(b.peer_id, False)
        assert b.peers() == frozenset()
        await refused_while_banned(a, b, events_b)


async def test_the_same_bytes_on_two_topics_are_two_messages(kind: str, vclock: object) -> None:
    """Issue 12 item 6: the message id covers the topic; bytes seen on one topic still travel on another."""
    other = topic("test", "tx")
    async with cluster(kind, 2) as (a, b):
        for t in (T, other):
            await a.subscribe(t, accept)
        sub_t = await b.subscribe(T, accept)
        sub_other = await b.subscribe(other, accept)
        await connect_line([a, b])
        await wait_until(lambda: a.topic_peers(T) == {b.peer_id} and a.topic_peers(other) == {b.peer_id})
        await a.publish(T, b"same bytes")
        await a.publish(other, b"same bytes")
        with trio.fail_after(10):
            got_t = await sub_t.receive()
            got_other = await sub_other.receive()
        assert (got_t.topic, got_t.data) == (T, b"same bytes")
        assert (got_other.topic, got_other.data) == (other, b"same bytes")
        # Within one topic identical bytes are still one message.
        await a.publish(other, b"same bytes")
        await a.publish(other, b"next")
        with trio.fail_after(10):
            assert (await sub_other.receive()).data == b"next"
        assert b.counters.delivered == 3
        if kind == "libp2p":
            # What each topic cost to read, the duplicate (re-sent) copy included.
            assert b.counters.inbound_bytes_by_topic == {T: 10, other: 10 + 10 + 4}
            assert b.counters.inbound_messages_by_topic == {T: 1, other: 3}

async def test_disconnect_costs_nothing_and_unbooked_dials_are_not_redialled(
    kind: str, vclock: object
) -> None:
    async with cluster(kind, 3) as (a, b, c):
        await a.connect(b.listen_addrs()[0])  # in a's re-dial book
        await c.connect(b.listen_addrs()[0], redial=False)  # in nobody's
        await wait_until(lambda: b.peers() == {a.peer_id, c.peer_id})
        await a.disconnect(b.peer_id)  # drops b from a's book too
        await b.disconnect(c.peer_id)
        await wait_until(lambda: b.peers() == frozenset() and not a.peers() and not c.peers())
        await trio.sleep(3)  # several re-dial periods (libp2p: every 0.25 s, back-off from 0.5 s)
        assert b.peers() == frozenset() and not a.peers() and not c.peers()
        assert not any(x.is_banned(y.peer_id) for x in (a, b, c) for y in (a, b, c))
        assert all(x.counters.peers_banned == 0 for x in (a, b, c))
        # Nobody was blamed: both may connect again at once.
        assert await c.connect(b.listen_addrs()[0], redial=False) == b.peer_id
        await wait_until(lambda: b.peers() == {c.peer_id})


async def test_a_republish_reaches_a_peer_that_joined_after_the_first(kind: str, vclock: object) -> None:
    """Consensus re-sends its votes by publishing the same bytes again, for peers that missed
    them (a validator restarted while the network waits for it). Our own publish always goes
    out; a receiver that saw the bytes drops them as a duplicate, one that did not delivers
    them. On libp2p the second publish used to stop at our own seen-cache, while the memory
    network sent it: the simulator recovered from a quorum loss that real processes never did."""
    async with cluster(kind, 3) as (a, b, late):
        sub_b = await b.subscribe(T, accept)
        await a.subscribe(T, accept)
        await connect_line([a, b])
        await wait_until(lambda: a.topic_peers(T) == {b.peer_id})
        await a.publish(T, b"vote")
        with trio.fail_after(10):
            assert (await sub_b.receive()).data == b"vote"
        await trio.sleep(8)  # past GossipSub's message cache: no IHAVE/IWANT would bring it now
        sub_late = await late.subscribe(T, accept)
        with trio.fail_after(10):
            await late.connect(a.listen_addrs()[0])
        await wait_until(lambda: a.topic_peers(T) >= {b.peer_id, late.peer_id})
        await a.publish(T, b"vote")
        with trio.fail_after(10):
            got = await sub_late.receive()
        assert (got.data, got.peer) == (b"vote", a.peer_id)
        await a.publish(T, b"next")
        with trio.fail_after(10):
            assert (await sub_b.receive()).data == b"next"  # the repeat was a duplicate at b
        assert b.counters.delivered == 2


async def test_libp2p_awaits_prepare_before_the_validator_and_a_crashing_one_decides_nothing() -> None:
    """The ``prepare`` hook (gossip's batched signature checks) runs in each new message's own task,
    before the validator, never for a duplicate; the memory network never runs it."""
    order: list[tuple[str, bytes]] = []

    async def prepare(peer: PeerId, data: bytes) -> None:
        order.append(("prepare", data))
        await trio.to_thread.run_sync(lambda: None)  # a real hop to a worker thread, as gossip's
        if data.startswith(b"boom"):
            raise ZeroDivisionError("a bug in our own hook")

    def validator(peer: PeerId, data: bytes) -> None:
        order.append(("validate", data))

    async with cluster("libp2p", 3) as (a, b, c):
        await a.subscribe(T, accept)
        sub_b = await b.subscribe(T, validator, prepare=prepare)
        await c.subscribe(T, accept)
        await connect_line([a, b, c])
        await wait_until(lambda: b.topic_peers(T) == {a.peer_id, c.peer_id})
        await a.publish(T, b"one")
        await a.publish(T, b"boom")
        with trio.fail_after(10):
            got = {(await sub_b.receive()).data for _ in range(2)}
        assert got == {b"one", b"boom"}
        for data in (b"one", b"boom"):
            assert order.index(("prepare", data)) < order.index(("validate", data))
        await c.publish(T, b"one")  # the same bytes again, from another peer: a duplicate
        await a.publish(T, b"two")
        with trio.fail_after(10):
            assert (await sub_b.receive()).data == b"two"
        assert order.count(("prepare", b"one")) == 1
        assert b.counters.rejected == 0
