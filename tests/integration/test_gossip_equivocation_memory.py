"""Issue 12 item 7 (memory creep): what py-libp2p keeps per forwarded message holds no frame.

py-libp2p's GossipSub keeps the first message of every (from, seqno) to
detect equivocation. The protobuf message it kept (upb backend) held on to
the arena of the whole RPC frame it was parsed from, memory that tracemalloc
does not count; we keep a 32-byte digest instead. Real py-libp2p on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2

from depin_p2p.gossip.transport import PeerId, topic
from tests.unit.gossip.cluster import cluster, collect_libp2p_garbage, connect_line, wait_until

T = topic("equiv", "proofs")


@pytest.fixture(autouse=True)
def _collect_libp2p_sockets() -> Iterator[None]:
    yield
    collect_libp2p_garbage()


def accept(peer: PeerId, data: bytes) -> None:
    pass


async def test_forwarded_messages_leave_digests_not_frames_and_equivocation_is_still_caught() -> None:
    async with cluster("libp2p", 2) as (sender, receiver):
        await connect_line([sender, receiver])
        got = await receiver.subscribe(T, accept)
        await sender.subscribe(T, accept)
        await wait_until(lambda: T in receiver._router.mesh and receiver._router.mesh[T], what="mesh")  # type: ignore[attr-defined]
        for _ in range(30):
            await sender.publish(T, os.urandom(2_000))
        with trio.fail_after(20):
            for _ in range(30):
                await got.receive()
        router = receiver._router  # type: ignore[attr-defined]
        kept = dict(router.equivocation_detection)
        assert len(kept) >= 30
        assert all(type(v) is bytes and len(v) == 32 for v in kept.values())  # no protobuf message
        key = next(iter(kept))
        from_id, seqno = key[:-8], key[-8:]
        same = rpc_pb2.Message(from_id=from_id, seqno=seqno, data=b"x", topicIDs=[T])
        assert router._check_equivocation(same) is False  # same (from, seqno), other bytes
        fresh = rpc_pb2.Message(from_id=from_id, seqno=b"\xff" * 8, data=b"x", topicIDs=[T])
        assert router._check_equivocation(fresh) is True
        assert router._check_equivocation(fresh) is True  # the same message again is no equivocation
