"""Inbound pubsub frames under a budget: bytes in flight per peer and per node, a deadline per frame.

py-libp2p reads a pubsub RPC as a varint length and then the body, with no
deadline and no bound on how many such reads run at once: 255 streams per
connection, each holding ~1 MiB of a declared 1.06 MiB frame, grew a node by
hundreds of MB (issue 12 item 2). Here:

- a peer may keep at most ``streams_per_peer`` inbound pubsub streams open
  (GossipSub needs one); each extra stream is reset, and costs the peer
  beyond a tolerance of 16 (refilled at one a second: teardown races give
  an honest peer a few);
- a frame's declared length is checked before any body byte is read
  (over ``max_frame_bytes``: ``oversized_rpc``; beyond all reason:
  ``absurd_frame_length``, severe);
- the body is read only once its bytes are reserved, against the peer's and
  the node's in-flight budget; while the budget is full the frame waits
  (unread bytes stay in the muxer, bounded by its window), never past its
  deadline, and waiting is never the peer's fault;
- once its first byte arrived, a frame must be complete within
  ``frame_timeout_s + length / min_rate + lag_factor * our recent loop lag``;
  a frame that stalls past it is dropped with its stream (logged as
  ``gossip.frame.stalled``), but costs no penalty: a CPU-starved honest
  sender stalls as well, and the budgets above already bound what a stall
  can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio
from libp2p.exceptions import ParseError

from depin_p2p import wire
from depin_p2p.gossip.liveness import LoopLag

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds on inbound pubsub frames (see the module docstring)."""

    max_frame_bytes: int = wire.MAX_MESSAGE_BYTES + 64 * 1024
    absurd_frame_bytes: int = 64 * 1024 * 1024
    peer_in_flight_bytes: int = 2 * (wire.MAX_MESSAGE_BYTES + 64 * 1024)
    node_in_flight_bytes: int = 32 * 1024 * 1024
    streams_per_peer: int = 2
    frame_timeout_s: float = 10.0
    min_rate_bytes_per_s: int = 128 * 1024
    lag_factor: int = 4


class FrameStalled(Exception):
    """A frame did not complete within its deadline; ``blame``: the peer's fault, not our loop's."""

    def __init__(self, blame: bool, detail: str) -> None:
        super().__init__(detail)
        self.blame = blame


class FrameRefused(Exception):
    """A frame's declared length is over the cap; ``code`` is the penalty."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class InFlight:
    """Bytes reserved by frames being read, per peer and for the whole node."""

    def __init__(self, limits: FrameLimits) -> None:
        self._limits = limits
        self._node = 0
        self._peers: dict[Any, int] = {}
        self._changed = trio.Event()

    @property
    def node_bytes(self) -> int:
        return self._node

    def _fits(self, peer: Any, n: int) -> bool:
        # A frame no bigger than the caps always fits an empty budget: nothing waits for ever.
        peer_used = self._peers.get(peer, 0)
        peer_ok = peer_used == 0 or peer_used + n <= self._limits.peer_in_flight_bytes
        return peer_ok and (self._node == 0 or self._node + n <= self._limits.node_in_flight_bytes)

    async def reserve(self, peer: Any, n: int) -> None:
        """Wait until ``n`` more bytes fit both budgets, then take them (callers bound the wait)."""
        while not self._fits(peer, n):
            await self._changed.wait()
        self._node += n
        self._peers[peer] = self._peers.get(peer, 0) + n

    def release(self, peer: Any, n: int) -> None:
        self._node -= n
        left = self._peers.get(peer, 0) - n
        if left > 0:
            self._peers[peer] = left
        else:
            self._peers.pop(peer, None)
        self._changed.set()
        self._changed = trio.Event()


class FrameReader:
    """Reads varint-prefixed pubsub frames under :class:`FrameLimits`, the shared budget and our lag."""

    def __init__(self, limits: FrameLimits, lag: LoopLag) -> None:
        self.limits = limits
        self.in_flight = InFlight(limits)
        self._lag = lag
        self._streams: dict[Any, int] = {}

    def open_stream(self, peer: Any) -> bool:
        """Count one more inbound stream of ``peer``: False (not counted) when it has its share."""
        n = self._streams.get(peer, 0)
        if n >= self.limits.streams_per_peer:
            return False
        self._streams[peer] = n + 1
        return True

    def close_stream(self, peer: Any) -> None:
        n = self._streams.get(peer, 0) - 1
        if n > 0:
            self._streams[peer] = n
        else:
            self._streams.pop(peer, None)

    async def read(self, stream: Any, peer: Any) -> bytes | None:
        """The next frame's body, or None at a clean end of stream between frames.

        Raises FrameRefused, FrameStalled, ParseError (a varint over 64 bits),
        or the stream's own errors.
        """
        first = await stream.read(1)  # an idle stream may wait for ever between frames
        if not first:
            return None
        started = trio.current_time()
        started_ms = int(started * 1000)
        lag_s = self._lag.recent_ms(started_ms) / 1000
        budget_s = self.limits.frame_timeout_s + self.limits.lag_factor * lag_s
        with trio.move_on_after(budget_s) as scope:
            length = await self._length(stream, first)
        if scope.cancelled_caught:
            raise FrameStalled(self._blame(started_ms, budget_s), "stalled in the length prefix")
        if length > self.limits.absurd_frame_bytes:
            raise FrameRefused("absurd_frame_length", f"declared {length} bytes")
        if length > self.limits.max_frame_bytes:
            raise FrameRefused("oversized_rpc", f"{length} bytes > cap {self.limits.max_frame_bytes}")
        budget_s += length / self.limits.min_rate_bytes_per_s
        deadline = started + budget_s
        with trio.move_on_at(deadline) as scope:
            await self.in_flight.reserve(peer, length)
        if scope.cancelled_caught:
            # Our budget was full for the whole deadline: others' frames, not this peer's fault.
            raise FrameStalled(False, f"no budget for {length} bytes within {budget_s:.1f}s")
        try:
            buf = bytearray()
            with trio.move_on_at(deadline):
                while len(buf) < length:
                    chunk = await stream.read(min(_CHUNK, length - len(buf)))
                    if not chunk:
                        raise EOFError(f"stream ended {len(buf)} bytes into a {length}-byte frame")
                    buf += chunk
            if len(buf) < length:
                raise FrameStalled(
                    self._blame(started_ms, budget_s),
                    f"{len(buf)} of {length} bytes in {budget_s:.1f}s",
                )
            return bytes(buf)
        finally:
            self.in_flight.release(peer, length)

    @staticmethod
    async def _length(stream: Any, first: bytes) -> int:
        raw = bytearray(first)
        while raw[-1] & 0x80:
            if len(raw) >= 10:
                raise ParseError("varint length prefix over 64 bits")
            b = await stream.read(1)
            if not b:
                raise EOFError("stream ended inside a length prefix")
            raw += b
        value = 0
        for i, byte in enumerate(raw):
            value |= (byte & 0x7F) << (7 * i)
        return value

    def _blame(self, started_ms: int, budget_s: float) -> bool:
        """Was a stall the peer's doing? Not when our own loop stalled while we waited."""
        now_ms = int(trio.current_time() * 1000)
        return self._lag.round_is_judgeable(started_ms, now_ms, int(budget_s * 1000))
