"""``/depin/genesis/1``: a peer hands out its genesis file, for a runner joining without one.

The protocol id names no network: the asker does not know the network yet.
The request is empty; the response is the server's genesis file, verbatim
(UTF-8 JSON, at most :data:`MAX_GENESIS_BYTES`). Nothing in it is trusted:
the asker compares its hash with the one the runner was given
(``depin-p2p genesis fetch --expect-hash``) before writing it anywhere.
"""

from __future__ import annotations

from depin_p2p.errors import Reject
from depin_p2p.gossip.transport import PeerId, Transport

GENESIS_PROTOCOL = "/depin/genesis/1"
MAX_GENESIS_BYTES = 4 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0


def serve_genesis(transport: Transport, genesis: bytes) -> None:
    """Answer every genesis request on ``transport`` with ``genesis``."""

    async def handle(peer: PeerId, data: bytes) -> bytes:
        if data:
            raise Reject("malformed")  # the request is empty
        return genesis

    transport.set_handler(GENESIS_PROTOCOL, handle, max_request_bytes=1)


async def fetch_genesis(transport: Transport, addr: str, *, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    """Dial ``addr`` and ask for its genesis file. Raises TransportError when the peer fails us."""
    peer = await transport.connect(addr, redial=False)
    return await transport.request(
        peer, GENESIS_PROTOCOL, b"", timeout=timeout, max_response_bytes=MAX_GENESIS_BYTES
    )
