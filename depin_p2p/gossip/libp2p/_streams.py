"""Request/response over libp2p streams: one length-prefixed request, one length-prefixed answer."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import structlog
import trio
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.peer.id import ID

from depin_p2p.errors import Ignore, Reject, TransportError
from depin_p2p.gossip.libp2p._pubsub import peer_of
from depin_p2p.gossip.transport import DEFAULT_MAX_REQUEST_BYTES, Handler, PeerId, TransportCounters

log = structlog.get_logger(__package__)

_LEN = struct.Struct(">I")


async def read_exactly(stream: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise TransportError("stream closed mid-frame")
        buf += chunk
    return bytes(buf)


async def _read_frame(stream: Any, max_bytes: int, code: str) -> bytes:
    (length,) = _LEN.unpack(await read_exactly(stream, _LEN.size))
    if length > max_bytes:
        raise Reject(code, f"{length} bytes > cap {max_bytes}")
    return await read_exactly(stream, length)


class Streams:
    """Serves and sends requests on fresh streams of ``host``; each side bounded by ``timeout`` seconds.

    ``penalise`` charges a peer whose request or answer is a proven offence
    (a ``Reject`` from a handler, a frame over its cap).
    """

    def __init__(
        self,
        host: Any,
        counters: TransportCounters,
        *,
        timeout: float,
        penalise: Callable[[PeerId, str], None],
    ) -> None:
        self._host = host
        self._counters = counters
        self._timeout = timeout
        self._penalise = penalise

    async def serve(self, stream: Any, handler: Handler, max_request: int) -> None:
        """Answer one request on ``stream``; every failure resets the stream, none escapes."""
        peer = peer_of(stream.muxed_conn.peer_id)
        try:
            with trio.fail_after(self._timeout):
                data = await _read_frame(stream, max_request, "oversized_request")
            response = await handler(peer, data)
            with trio.fail_after(self._timeout):
                await stream.write(_LEN.pack(len(response)) + response)
                await stream.close()
        except Reject as exc:
            self._penalise(peer, exc.code)
        except (Ignore, TransportError, IOException, trio.TooSlowError):
            pass
        except Exception:  # a bug in a handler must cost the request, never the node
            log.exception("gossip.handler.crashed", peer=peer)
        else:
            self._counters.requests_served += 1
            return
        self._counters.requests_failed += 1
        with contextlib.suppress(Exception):
            await stream.reset()

    async def exchange(
        self, peer: PeerId, proto: str, data: bytes, timeout: float, max_response: int
    ) -> bytes:
        stream: Any = None
        done = False
        try:
            with trio.fail_after(timeout):
                stream = await self._host.new_stream(ID.from_base58(peer), [proto])
                await stream.write(_LEN.pack(len(data)) + data)
                response = await _read_frame(stream, max_response, "oversized_response")
                done = True
                return response
        except trio.TooSlowError:
            raise TransportError(f"{proto} to {peer} timed out after {timeout}s") from None
        except Reject as exc:
            self._penalise(peer, exc.code)
            raise TransportError(f"{proto} to {peer}: {exc.code}") from None
        except TransportError:
            raise
        except Exception as exc:  # noqa: BLE001 -- libp2p raises many unrelated types for a failed stream
            raise TransportError(f"{proto} to {peer} failed: {exc!r:.200}") from None
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
                    await (stream.close() if done else stream.reset())

    def set_handler(
        self, protocol: str, handler: Handler, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        """Serve ``protocol`` with ``handler``; see :meth:`Transport.set_handler`."""

        async def serve(stream: Any) -> None:
            await self.serve(stream, handler, max_request_bytes)

        self._host.set_stream_handler(TProtocol(protocol), serve)
