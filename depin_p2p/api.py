"""Status, metrics and transaction endpoint, bound to 127.0.0.1 unless the runner opts in.

A node runner may bind it to another address (``[api] host``); then every
request must carry ``Authorization: Bearer <token>`` with the token of the
home's ``api.token`` (401 ``unauthorized`` otherwise, compared in constant
time). On 127.0.0.1 no token is asked for.

``GET /status`` returns the node's status as JSON (from a callable the node
provides); ``GET /metrics`` returns the Prometheus text format of a
prometheus-client registry. With a :class:`TxApi`, also:

- ``POST /tx`` with an encoded ``wire.Envelope`` as the body (at most
  :data:`MAX_BODY_BYTES`): 202 ``{"tx_id": hex}`` when the pool accepts it,
  else 400 ``{"error": code, "detail": text}`` (the pool's codes, plus
  ``oversized``);
- ``GET /account/<dp address or hex public key>``: the node's document
  (``{"address", "balance_micro", "nonce", "next_nonce", "stake_micro",
  "unbonding_micro", "exists", "epoch"}``; 400 ``bad_public_key``);
  ``next_nonce`` also counts the account's transactions pending here; with
  ``?prove=1`` also ``"proof"``: ``{"key", "value", "state_root", "epoch",
  "proof", "bytes"}`` (hex; ``value`` null for an absent account), a Merkle
  proof a light client checks with ``ledger.merkle.verify_proof_bytes``;
- ``GET /tx/<hex tx id>``: ``{"status": "pending" | "committed" |
  "unknown", "epoch", "code"}`` (``code`` null: applied).

HTTP/1.1 parsing is h11's; each connection is bounded in size and time, and
one bad client never affects another: the whole request (head and body) must
arrive within :data:`READ_TIMEOUT_S` of the accept, the answer within
:data:`REQUEST_TIMEOUT_S`, and at most :data:`MAX_CONNECTIONS` are open at
once. A connection arriving at the cap closes the oldest one still reading
its request (a local client sends its request at once; only a client holding
the socket waits there), so idle or trickling connections never queue a
normal request behind them.
"""

from __future__ import annotations

import hmac
import json
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11
import structlog
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from depin_p2p.crypto import public_key_from_address
from depin_p2p.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    # libp2p depends on trio-typing, whose trio-stubs shadow trio's own inline
    # types for mypy; its TaskStatus is the one those stubs use.
    from trio_typing import TaskStatus

API_HOST = "127.0.0.1"
MAX_REQUEST_BYTES = 16 * 1024
READ_TIMEOUT_S = 2.0  # from the accept to the end of the request (head and body)
REQUEST_TIMEOUT_S = 5.0  # from the accept to the last byte of the answer
MAX_CONNECTIONS = 64
MAX_BODY_BYTES = 8 * 1024  # a transaction envelope is a few hundred bytes

# Opens a client connection to the API on this port (see request_json's ``connect``).
Connect = Callable[[int], Awaitable[trio.abc.Stream]]

StatusFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class TxApi:
    """The node's transaction entry points behind ``POST /tx``, ``/account/..`` and ``/tx/..``.

    ``submit`` takes an encoded envelope and returns its tx id, raising
    ValidationError; ``account`` and ``tx_status`` take raw bytes (public key,
    tx id) and return the JSON document.
    """

    submit: Callable[[bytes], Awaitable[bytes]]
    account: Callable[[bytes], dict[str, Any]]
    tx_status: Callable[[bytes], dict[str, Any]]
    account_proof: Callable[[bytes], dict[str, Any]] | None = None


log = structlog.get_logger("depin_p2p.api")


class ApiServer:
    """Serves ``/status`` and ``/metrics`` on ``127.0.0.1:port``.

    Args:
        status: returns the JSON-able status document; called per request.
        registry: the prometheus-client registry to expose.
        port: TCP port; 0 picks a free one (read ``port`` after start).
        tx: the transaction endpoints; None serves only status and metrics.
        host: the address to bind (127.0.0.1 unless the runner opened it).
        token: the bearer token every request needs (None: none asked).
    """

    def __init__(
        self,
        *,
        status: StatusFn,
        registry: CollectorRegistry,
        port: int = 0,
        tx: TxApi | None = None,
        host: str = API_HOST,
        token: str | None = None,
    ) -> None:
        self._host = host
        self._token = None if token is None else f"Bearer {token}".encode()
        self._status = status
        self._tx = tx
        self._registry = registry
        self._requested_port = port
        self._open = 0  # connections admitted and not yet closed or evicted
        # Connections still reading their request, oldest first: the ones a new arrival may evict.
        self._reading: OrderedDict[int, _Conn] = OrderedDict()
        self._next_id = 0
        self.port = 0
        self.evicted = 0  # connections closed to make room for a newer one
        self.refused = 0  # connections closed at once: every slot busy answering
        self.timed_out = 0  # connections closed at their read deadline

    async def run(self, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; ``task_status.started(port)`` once listening.

        Cancellation closes the listener and every open connection.
        Raises OSError if the port cannot be bound (the node turns it into a ConfigError).
        """
        listeners = await trio.open_tcp_listeners(self._requested_port, host=self._host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("api.listening", port=self.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            if self._open >= MAX_CONNECTIONS and not self._evict_oldest_reader():
                self.refused += 1
                return
            conn = _Conn(self._next_id, trio.CancelScope(deadline=trio.current_time() + READ_TIMEOUT_S))
            self._next_id += 1
            self._open += 1
            self._reading[conn.id] = conn
            try:
                with trio.move_on_after(REQUEST_TIMEOUT_S):
                    await self._serve_one(stream, conn)
            except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._reading.pop(conn.id, None)
                if not conn.evicted:
                    self._open -= 1
            if conn.read_scope.cancelled_caught and not conn.evicted:
                self.timed_out += 1

    def _evict_oldest_reader(self) -> bool:
        """Close the oldest connection still reading its request; False when none is."""
        if not self._reading:
            return False
        _, conn = self._reading.popitem(last=False)
        conn.evicted = True
        conn.read_scope.cancel()
        self._open -= 1
        self.evicted += 1
        if math.log10(self.evicted).is_integer():  # 1, 10, 100, ...: a flood logs a few lines
            log.warning("api.connections.evicted", evicted=self.evicted, cap=MAX_CONNECTIONS)
        return True

    async def _serve_one(self, stream: trio.SocketStream, conn: _Conn) -> None:
        """Read one request (within the read deadline, unless evicted), then answer it."""
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        got: tuple[h11.Request, bytes] | None = None
        answer: tuple[int, str, bytes] | None = None
        with conn.read_scope:
            try:
                got = await _read_request(http, stream)
            except _Oversized:
                answer = _error(f"body over {MAX_BODY_BYTES} bytes", "oversized")
        self._reading.pop(conn.id, None)  # answering now: no longer evictable
        if got is not None:
            answer = await self._respond(*got)
        if answer is None:
            return  # the client closed, its read deadline passed, or it was evicted
        status, ctype, out = answer
        headers = [
            ("content-type", ctype),
            ("content-length", str(len(out))),
            ("connection", "close"),
        ]
        await stream.send_all(http.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(http.send(h11.Data(data=out)) or b"")
        await stream.send_all(http.send(h11.EndOfMessage()) or b"")

    async def _respond(self, request: h11.Request, body: bytes) -> tuple[int, str, bytes]:
        if self._token is not None:
            given = next((v for k, v in request.headers if k == b"authorization"), b"")
            if not hmac.compare_digest(bytes(given), self._token):
                return _json(401, {"error": "unauthorized", "detail": "a bearer token is required"})
        path, _, query = request.target.decode("ascii", "replace").partition("?")
        if request.method == b"POST" and path == "/tx" and self._tx is not None:
            try:
                tx_id = await self._tx.submit(body)
            except ValidationError as exc:
                return _error(exc.detail, exc.code)
            return _json(202, {"tx_id": tx_id.hex()})
        if request.method != b"GET":
            return 405, "text/plain", b"only GET, and POST /tx\n"
        if path == "/status":
            return _json(200, self._status())
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if self._tx is not None and path.startswith(("/account/", "/tx/")):
            kind, _, arg = path[1:].partition("/")
            raw = _account_key(arg) if kind == "account" else _hex(arg)
            if len(raw) != 32:
                code = "bad_public_key" if kind == "account" else "bad_tx_id"
                return _error(f"{arg!r} is not 32 bytes of hex", code)
            if kind != "account":
                return _json(200, self._tx.tx_status(raw))
            doc = self._tx.account(raw)
            if "prove=1" in query.split("&") and self._tx.account_proof is not None:
                doc["proof"] = self._tx.account_proof(raw)
            return _json(200, doc)
        return 404, "text/plain", b"try /status or /metrics\n"


def _hex(arg: str) -> bytes:
    try:
        return bytes.fromhex(arg)
    except ValueError:
        return b""


def _account_key(arg: str) -> bytes:
    """An account named by its ``dp…`` address (what people read) or its public key in hex."""
    if not arg.startswith("dp"):
        return _hex(arg)
    try:
        return public_key_from_address(arg)
    except ConfigError:
        return b""


@dataclass(slots=True)
class _Conn:
    id: int
    read_scope: trio.CancelScope  # the read deadline; cancelled early on eviction
    evicted: bool = False


class _Oversized(Exception):
    """The request declares or sends a body over MAX_BODY_BYTES."""


async def _read_request(http: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request, bytes] | None:
    """The next request and its body; None when the client closes first. Raises _Oversized."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            http.receive_data(data)
            if not data and http.their_state is not h11.DONE:
                return None
            continue
        if isinstance(event, h11.Request):
            request = event
            if _content_length(event) > MAX_BODY_BYTES:
                raise _Oversized
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise _Oversized
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _content_length(request: h11.Request) -> int:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return 0


def _json(status: int, doc: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(doc, sort_keys=True, default=_jsonable).encode() + b"\n"


def _error(detail: str, code: str) -> tuple[int, str, bytes]:
    return _json(400, {"error": code, "detail": detail})


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


async def request_json(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timeout: float = 5.0,
    connect: Connect | None = None,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send one request to ``http://127.0.0.1:port/path``; return the status and the JSON object.

    ``connect(port)`` opens the connection instead of ``trio.open_tcp_stream`` (a
    caller reaching a node's 127.0.0.1 inside another network namespace passes one);
    ``token`` is sent as the bearer token.

    Raises:
        OSError: nothing listens there (ConnectionError when the connection breaks).
        ValueError, TypeError: the answer is not a JSON object.
        TimeoutError: no full answer within ``timeout`` (an OSError too; trio's own
            ``TooSlowError`` is not one, so it never leaves this function).
    """
    try:
        status, out = await _exchange(port, method, path, body, timeout=timeout, connect=connect, token=token)
    except trio.TooSlowError:
        raise TimeoutError(f"{method} {path} on 127.0.0.1:{port}: no answer within {timeout:g} s") from None
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
        raise ConnectionError(f"{method} {path} on 127.0.0.1:{port} failed: {exc}") from None
    try:
        doc = json.loads(out)
    except ValueError:
        raise ValueError(f"{method} {path} answered {status} without JSON") from None
    if not isinstance(doc, dict):
        raise TypeError(f"{method} {path} did not return a JSON object")
    return status, doc


async def _exchange(
    port: int,
    method: str,
    path: str,
    body: bytes,
    *,
    timeout: float,
    connect: Connect | None,
    token: str | None = None,
) -> tuple[int, bytes]:
    with trio.fail_after(timeout):
        stream = await (connect(port) if connect is not None else trio.open_tcp_stream(API_HOST, port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            headers = [("host", API_HOST), ("connection", "close"), ("content-length", str(len(body)))]
            if token is not None:
                headers.append(("authorization", f"Bearer {token}"))
            req = h11.Request(method=method, target=path, headers=headers)
            await stream.send_all(conn.send(req) or b"")
            if body:
                await stream.send_all(conn.send(h11.Data(data=body)) or b"")
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            out = b""
            status = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    out += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
    return status, out


async def fetch_json(
    port: int, path: str = "/status", *, timeout: float = 5.0, connect: Connect | None = None
) -> dict[str, Any]:
    """GET ``http://127.0.0.1:port/path`` and parse JSON. Raises OSError, ValueError or TypeError.

    ``connect``: as for :func:`request_json`.

    Cancellation: bounded by ``timeout``; raises TimeoutError (an OSError, never
    ``trio.TooSlowError``) when it expires.
    """
    status, doc = await request_json(port, "GET", path, timeout=timeout, connect=connect)
    if status != 200:
        raise ValueError(f"GET {path} answered {status}")
    return doc
