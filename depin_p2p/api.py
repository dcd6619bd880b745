"""Local status and metrics endpoint, bound to 127.0.0.1 only.

``GET /status`` returns the node's status as JSON (from a callable the node
provides); ``GET /metrics`` returns the Prometheus text format of a
prometheus-client registry. HTTP/1.1 parsing is h11's; each connection is
bounded in size and time, and one bad client never affects another.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import structlog
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose trio-stubs shadow trio's own inline
    # types for mypy; its TaskStatus is the one those stubs use.
    from trio_typing import TaskStatus

API_HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32

StatusFn = Callable[[], dict[str, Any]]

log = structlog.get_logger("depin_p2p.api")


class ApiServer:
    """Serves ``/status`` and ``/metrics`` on ``127.0.0.1:port``.

    Args:
        status: returns the JSON-able status document; called per request.
        registry: the prometheus-client registry to expose.
        port: TCP port; 0 picks a free one (read ``port`` after start).
    """

    def __init__(self, *, status: StatusFn, registry: CollectorRegistry, port: int = 0) -> None:
        self._status = status
        self._registry = registry
        self._requested_port = port
        self._limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
        self.port = 0

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` once listening.

        Cancellation closes the listener and every open connection.
        Raises OSError if the port cannot be bound (the node turns it into a ConfigError).
        """
        listeners = await trio.open_tcp_listeners(self._requested_port, host=API_HOST)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("api.listening", port=self.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with self._limiter, stream:
            with trio.move_on_after(REQUEST_TIMEOUT_S):
                try:
                    await self._serve_one(stream)
                except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(4096)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return
                continue
            if isinstance(event, h11.Request):
                status, ctype, body = self._respond(event)
                break
            if isinstance(event, h11.ConnectionClosed):
                return
        headers = [
            ("content-type", ctype),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(conn.send(h11.Data(data=body)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")

    def _respond(self, request: h11.Request) -> tuple[int, str, bytes]:
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if request.method != b"GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/status":
            body = json.dumps(self._status(), sort_keys=True, default=_jsonable).encode()
            return 200, "application/json", body + b"\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return 404, "text/plain", b"try /status or /metrics\n"


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


async def fetch_json(port: int, path: str = "/status", *, timeout: float = 5.0) -> dict[str, Any]:
    """GET ``http://127.0.0.1:port/path`` and parse JSON.

    Raises OSError (ConnectionError when the connection breaks), TimeoutError,
    ValueError (a non-200 answer or bad JSON) or TypeError (not a JSON object).

    Cancellation: bounded by ``timeout``; raises TimeoutError when it expires.
    """
    try:
        status, body = await _get(port, path, timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
        raise ConnectionError(f"GET {path} on 127.0.0.1:{port} failed: {exc}") from None
    if status != 200:
        raise ValueError(f"GET {path} answered {status}")
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise TypeError(f"GET {path} did not return a JSON object")
    return doc


async def _get(port: int, path: str, timeout: float) -> tuple[int, bytes]:
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(API_HOST, port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            headers = [("host", API_HOST), ("connection", "close")]
            req = h11.Request(method="GET", target=path, headers=headers)
            await stream.send_all(conn.send(req) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            body = b""
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    return status, body
