"""Receive-window credit of the Yamux streams we read gossip from: in halves, as go-yamux does.

py-libp2p 0.8.1's ``YamuxStream.read`` calls ``_auto_tune_and_send_window_update``
after every read, and that sends a WINDOW_UPDATE frame for nearly every read
(its "partial slack" branch, and ``PY_YAMUX_RELEASE_ON_READ`` on by default),
each one Noise-encrypted and written on its own. Pubsub reads an RPC as its
varint length, a byte at a time, then the body: three or four window updates
per message each way, 15-21 % of a busy node's event loop (py-spy, 4-node
devnet) plus the peer's work to decrypt and apply them.

:func:`credit_in_halves` replaces that method on one stream (an instance
attribute: other streams and other users of py-libp2p keep its behaviour) by
go-yamux's rule: credit the peer back up to the stream's receive window once
half of it has been read. The window itself is unchanged, so the bytes a peer
can leave unread in our buffers are bounded as before; the sender always
holds at least half a window of credit, so it does not stall on us while we read.
"""

from __future__ import annotations

import types
from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream


def credit_in_halves(stream: Any) -> bool:
    """Make the Yamux stream under ``stream`` (a libp2p ``NetStream``) credit in halves; False: not Yamux."""
    muxed = getattr(stream, "muxed_stream", None)
    if not isinstance(muxed, YamuxStream):
        return False
    muxed._auto_tune_and_send_window_update = types.MethodType(  # type: ignore[method-assign]
        _credit_when_half_read, muxed
    )
    return True


async def _credit_when_half_read(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """Called after each read: send one window update once half the window has been read."""
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        # What the peer may still send plus what it sent that is still unread: the rest was read.
        read_back = self.target_recv_window - (self.recv_window + buffered)
        if read_back < self.target_recv_window // 2:
            return
        self.recv_window += read_back
    # Never under window_lock: the incoming frame handler takes it for the peer's updates.
    await self.send_window_update(read_back, skip_lock=True)
