"""Raw pubsub frames, below our gossip layer: for conformance tests and devnet adversaries.

The node never calls this. It lets a peer built on our own transport send
what a hostile py-libp2p peer would (``devnet.adversaries`` ``crash-frames``
on processes), without a second libp2p stack outside this package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.utils import encode_varint_prefixed

if TYPE_CHECKING:
    from depin_p2p.gossip.libp2p.transport import Libp2pTransport

FRAME_TIMEOUT_S = 5.0


async def write_pubsub_frames(transport: Libp2pTransport, frames: Sequence[bytes]) -> int:
    """Write each of ``frames`` (varint-prefixed, as pubsub frames are) to every peer ``transport``
    is connected to, on a new ``/meshsub/1.1.0`` stream each; return how many were written.

    A peer that refuses, cuts us off or stalls (FRAME_TIMEOUT_S) is skipped.
    """
    host: Any = transport._host  # this package's own transport
    written = 0
    for peer in sorted(transport.peers()):
        with trio.move_on_after(FRAME_TIMEOUT_S):
            try:
                stream: Any = await host.new_stream(ID.from_base58(peer), [PROTOCOL_ID_V11])
                for frame in frames:
                    await stream.write(encode_varint_prefixed(frame))
                    written += 1
            except (BaseLibp2pError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                continue  # banned or gone already
    return written
