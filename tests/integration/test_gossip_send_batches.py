"""What queues for a peer while its stream is busy goes out in one write (real py-libp2p, 127.0.0.1).

py-libp2p 0.8.1's sending loop writes each RPC on its own: a yamux frame,
a Noise frame and a syscall per 3 kB bundle or 150-byte vote, and the
receiver reads them one by one. On a starved machine those are what the
queue fills with (32 processes on 2 cores: votes took about 10 s to cross
the network). Here the publisher's stream is held busy (its write lock
taken) while 60 messages are published; once free, the loop writes all
that queued in a few writes, and the receiver reads every message intact.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
from libp2p.peer.id import ID

from depin_p2p.gossip.transport import topic
from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage, wait_until

T = topic("test", "proofs")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: object, data: bytes) -> None:
    pass


async def test_rpcs_queued_behind_a_busy_stream_go_out_in_a_few_writes_and_arrive_whole() -> None:
    small = [bytes([i]) * 1_000 + b"%03d" % i for i in range(50)]
    big = b"B" * 100_000  # over the batch: written on its own
    tail = [bytes([200 + i]) * 3_000 for i in range(10)]
    async with cluster("libp2p", 2) as nodes:
        subs = [await n.subscribe(T, accept) for n in nodes]
        await nodes[0].connect(nodes[1].listen_addrs()[0])
        pubsub = nodes[0]._pubsub  # type: ignore[attr-defined]
        peer = ID.from_base58(str(nodes[1].peer_id))
        await wait_until(lambda: len(nodes[0]._router.mesh.get(T, ())) == 1)  # type: ignore[attr-defined]
        stream = pubsub.peers[peer]
        writes: list[int] = []
        write = stream.write

        async def counted(data: bytes) -> None:
            writes.append(len(data))
            await write(data)

        stream.write = counted
        lock = pubsub._write_locks.setdefault(stream, trio.Lock())
        async with lock:  # the stream is busy: everything published now queues for the peer
            for data in [*small, big, *tail]:
                await nodes[0].publish(T, data)
            await trio.sleep(0.2)
        with trio.fail_after(20):
            got = {(await subs[1].receive()).data for _ in range(61)}
        assert got == {*small, big, *tail}
        # 61 publishes (and whatever control frames queued beside them) in a handful of writes:
        # the first RPC, which waited on the lock, then batches of up to batch_bytes, the big one alone.
        assert len(writes) <= 6, writes
        assert max(writes) >= 50_000  # the small ones went out together
