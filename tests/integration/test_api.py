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


async def test_tx_endpoints_accept_a_signed_transfer_and_refuse_bad_bodies() -> None:
    import json  # noqa: PLC0415

    from depin_p2p import wire  # noqa: PLC0415
    from depin_p2p.api import TxApi, request_json  # noqa: PLC0415
    from depin_p2p.ledger.genesis import parse_genesis  # noqa: PLC0415
    from depin_p2p.ledger.memory import MemoryLedger  # noqa: PLC0415
    from depin_p2p.ledger.state import Transfer, compute_genesis_changes  # noqa: PLC0415
    from depin_p2p.txpool import TxPool  # noqa: PLC0415
    from devnet.genesis import DevnetPlan, plan_devnet  # noqa: PLC0415

    devnet = plan_devnet(DevnetPlan(nodes=2, seed=b"api-tx"), genesis_time_ms=1_767_225_600_000)
    ledger = MemoryLedger()
    genesis = parse_genesis(json.dumps(devnet.genesis))
    ledger.commit(compute_genesis_changes(ledger, genesis.initial_state()), b"")
    pool = TxPool(ledger, devnet.network_id)

    async def submit(data: bytes) -> bytes:
        return pool.add(data)

    def account(key: bytes) -> dict[str, Any]:
        got = ledger.get_account(key)
        return {"nonce": 0 if got is None else got.nonce, "balance": 0 if got is None else got.balance}

    def tx_status(tx_id: bytes) -> dict[str, Any]:
        return {"status": "pending" if pool.is_pending(tx_id) else "unknown"}

    sender, receiver = devnet.node_keys
    env = wire.encode(wire.seal(Transfer(0, receiver.public_key, 5), sender, devnet.network_id))
    api = ApiServer(status=dict, registry=CollectorRegistry(), tx=TxApi(submit, account, tx_status))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(api.run)
            status, doc = await request_json(port, "POST", "/tx", env)
            assert (status, doc) == (202, {"tx_id": wire.content_id(env).hex()})
            status, doc = await request_json(port, "POST", "/tx", env)
            assert (status, doc["error"]) == (400, "duplicate")
            status, doc = await request_json(port, "POST", "/tx", b"\x93\x01\x02")
            assert (status, doc["error"]) == (400, "malformed")
            status, doc = await request_json(port, "POST", "/tx", b"\0" * 9000)
            assert (status, doc["error"]) == (400, "oversized")
            status, doc = await request_json(port, "GET", f"/account/{sender.public_key.hex()}")
            assert status == 200 and doc["nonce"] == 0 and doc["balance"] > 0
            status, doc = await request_json(port, "GET", "/account/zz")
            assert (status, doc["error"]) == (400, "bad_public_key")
            status, doc = await request_json(port, "GET", f"/tx/{wire.content_id(env).hex()}")
            assert (status, doc["status"]) == (200, "pending")
            nursery.cancel_scope.cancel()
