"""A node runner's daily commands against a real 4-node devnet: transfer, balance, stake, peers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio

from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout
from devnet.runner import NodeProcess, fetch_status, stop_all, wait_until_up
from tests.integration.test_join import cli, ok_json, one_line_exit_2, wait_for

pytestmark = pytest.mark.slow

MICRO = 1_000_000
GENESIS_DELAY_MS = 4_000


_cli, _json, _one_line_exit_2 = cli, ok_json, one_line_exit_2


def _balance(home: Path, address: str, *extra: str) -> dict[str, Any]:
    return _json(_cli("balance", address, "--home", str(home), "--json", *extra))


_wait_for = wait_for


def test_transfer_balance_stake_and_peers_on_a_running_devnet(tmp_path: Path) -> None:
    plan = DevnetPlan(nodes=4, epoch_seconds=2, seed=b"node-tx")
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + GENESIS_DELAY_MS)
    layout = write_layout(devnet, tmp_path / "devnet")
    n0, n1, n2 = layout.nodes[:3]
    nodes = [NodeProcess(n) for n in layout.nodes]
    try:
        for n in nodes:
            n.start()
        trio.run(wait_until_up, nodes, 60.0)

        # Bad input: one line, exit 2, nothing submitted.
        _one_line_exit_2(_cli("transfer", "--home", str(n0.home), "dpNotAnAddress", "1"), "address")
        _one_line_exit_2(_cli("transfer", "--home", str(n0.home), n1.address, "1.0000001"), "6 decimals")
        _one_line_exit_2(_cli("transfer", "--home", str(n0.home), n1.address, "-1"), "amount")
        _one_line_exit_2(_cli("transfer", "--home", str(tmp_path / "nowhere"), n1.address, "1"), "does not")

        before = _balance(n1.home, n1.address)
        assert before["source"] == "node" and before["nonce"] == 0

        done = _json(
            _cli("transfer", "--home", str(n0.home), n1.address, "1.5", "--wait", "--timeout", "60", "--json")
        )
        assert done["status"] == "committed" and done["code"] is None, done
        epoch = int(done["epoch"])

        def seen_on(home: Path) -> dict[str, Any] | None:
            sender = _balance(home, n0.address)
            return sender if sender["nonce"] == 1 else None

        for home in (n0.home, n2.home):  # the sender's own node and another one
            sender = _wait_for(lambda h=home: seen_on(h), 20.0)
            assert sender is not None, f"{home} never saw the transfer"
            got = _balance(home, n1.address)
            assert got["epoch"] >= epoch
            # Rewards are paid on top; the transfer's 1.5 tokens must be there.
            assert got["balance_micro"] >= before["balance_micro"] + 3 * MICRO // 2

        proved = _balance(n2.home, n1.address, "--prove")  # direct store read beside the running node
        assert proved["source"] == "store" and proved["proof"]["verified"] is True

        staked = _json(_cli("stake", "--home", str(n0.home), "10", "--wait", "--timeout", "60", "--json"))
        assert staked["status"] == "committed" and staked["code"] is None, staked
        me = devnet.node_keys[0].public_key.hex()

        def power() -> int:
            st = trio.run(fetch_status, n0)
            for v in (st or {}).get("validators", []):
                if v["public_key"] == me:
                    return int(v["power_micro"])
            return 0

        assert power() == plan.stake + 10 * MICRO

        device_key = tmp_path / "gpu.key"
        _json(_cli("keygen", "--out", str(device_key), "--json"))
        reg = "device", "register", "--home", str(n0.home), "--device-key", str(device_key)
        _one_line_exit_2(_cli(*reg, "--kind", "radio"), "--location")
        _one_line_exit_2(_cli(*reg, "--kind", "compute", "--capacity", "5000"), "bad_device_params")
        registered = _json(_cli(*reg, "--kind", "compute", "--capacity", "4", "--wait", "--json"))
        assert registered["status"] == "committed" and registered["code"] is None, registered

        peers = _json(_cli("peers", "--home", str(n0.home), "--json"))
        assert len(peers["peers"]) == 3
    finally:
        stop_all(nodes)
    for n in nodes:
        assert n.exited is not None
