"""The local API on real loopback sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry, Counter

from depin_p2p.api import ApiServer, fetch_json


async def _raw(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_status_and_metrics() -> None:
    registry = CollectorRegistry()
    counter = Counter("depin_test_things", "things", registry=registry)
    counter.inc(3)
    calls: list[int] = []

    def status() -> dict[str, Any]:
        calls.append(1)
        return {"epoch": 7, "last_certificate": b"\x01\x02"}

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(ApiServer(status=status, registry=registry).run)
            assert await fetch_json(port) == {"epoch": 7, "last_certificate": "0102"}
            metrics = await _raw(port, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b"200 " in metrics.split(b"\r\n", 1)[0]
            assert b"depin_test_things_total 3.0" in metrics
            assert b" 404 " in await _raw(port, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n")
            post = b"POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
            assert b" 405 " in await _raw(port, post)
            # Garbage and an oversized request do not take the server down.
            await _raw(port, b"\x00\x01garbage\r\n\r\n")
            await _raw(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n")
            assert (await fetch_json(port))["epoch"] == 7
            assert len(calls) == 2
            nursery.cancel_scope.cancel()


async def test_only_loopback() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = ApiServer(status=dict, registry=CollectorRegistry())
            await nursery.start(server.run)
            assert server.port > 0
            with pytest.raises(OSError):
                # Not listening on other addresses of this host.
                await trio.open_tcp_stream("127.0.0.2", server.port)
            nursery.cancel_scope.cancel()
