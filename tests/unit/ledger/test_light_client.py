"""A light client's balance proof: ``GET /account/<key>?prove=1`` from a real store, checked without one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client import CollectorRegistry

from depin_p2p import wire
from depin_p2p.api import ApiServer, TxApi, request_json
from depin_p2p.errors import Reject
from depin_p2p.ledger import merkle
from depin_p2p.ledger.state import Account, Reward, account_key
from tests.unit.ledger.helpers import IDS, START_BALANCE, open_store
from tests.unit.ledger.test_store import commit_next


async def test_account_proof_over_the_api_verifies_against_the_root_alone(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    try:
        commit_next(store, rewards=(Reward(IDS[2], 7),))

        async def submit(data: bytes) -> bytes:
            raise AssertionError("not used")

        def account(raw: bytes) -> dict[str, Any]:
            got = store.read(lambda v: v.get_account(raw))
            return {"balance": 0 if got is None else got.balance}

        def account_proof(raw: bytes) -> dict[str, Any]:  # what the node serves
            return store.read(lambda v: v.account_proof_doc(raw))

        tx = TxApi(submit, account, dict, account_proof=account_proof)
        api = ApiServer(status=dict, registry=CollectorRegistry(), tx=tx)
        absent_id = b"\x55" * 32
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(api.run)
                _, plain = await request_json(port, "GET", f"/account/{IDS[2].hex()}")
                _, proved = await request_json(port, "GET", f"/account/{IDS[2].hex()}?prove=1")
                _, absent = await request_json(port, "GET", f"/account/{absent_id.hex()}?prove=1")
                nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert "proof" not in plain
    assert proved["balance"] == START_BALANCE + 7
    # The client trusts a root (from a certificate) and nothing else the node says.
    doc = proved["proof"]
    root = bytes.fromhex(doc["state_root"])
    assert doc["epoch"] == 1 and doc["bytes"] == len(bytes.fromhex(doc["proof"]))
    value = wire.encode(Account(START_BALANCE + 7, 0))
    assert bytes.fromhex(doc["value"]) == value
    merkle.verify_proof_bytes(root, account_key(IDS[2]), value, bytes.fromhex(doc["proof"]))
    with pytest.raises(Reject, match="proof_root_mismatch"):
        lie = wire.encode(Account(START_BALANCE * 9, 0))
        merkle.verify_proof_bytes(root, account_key(IDS[2]), lie, bytes.fromhex(doc["proof"]))
    assert absent["proof"]["value"] is None
    merkle.verify_proof_bytes(root, account_key(absent_id), None, bytes.fromhex(absent["proof"]["proof"]))
