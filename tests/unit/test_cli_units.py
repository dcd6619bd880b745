"""Units and names a person reads (issue 10, "units and names").

Tokens (at most 6 decimals) wherever a person reads an amount; micro-units
only in ``--json`` fields named ``*_micro``; ``dp…`` addresses wherever a
person reads an account, ``GET /account/dp…`` accepted beside hex; no
literal ``None``; plural forms right.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import trio

from depin_p2p import cli
from depin_p2p.api import request_json
from tests.unit.test_cli_tx import LiveApi, live_api

__all__ = ["live_api"]  # the fixture, imported to be found

MICRO_NUMBER = re.compile(r"\b\d{7,}\b")  # 100000000000 micro-units would read as a number of tokens


def _api_port(api: LiveApi) -> int:
    return int(json.loads((api.home / "run.json").read_text())["api_port"])


@pytest.mark.parametrize(("n", "text"), [(0, "0 peers"), (1, "1 peer"), (2, "2 peers")])
def test_plural(n: int, text: str) -> None:
    assert cli.plural(n, "peer") == text


def test_status_reads_in_tokens_and_dp_addresses_without_none(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["status", "--home", str(live_api.home)]) == 0
    out = capsys.readouterr().out
    assert "None" not in out, out
    assert MICRO_NUMBER.search(out) is None, out  # no micro-units (hashes are hex, not digits)
    assert "micro" not in out
    assert "100000 tokens" in out  # the node's balance
    assert "2 validators" in out and "0 peers" in out, out
    for key in (live_api.sender, live_api.receiver):
        assert key.address in out  # each validator by its dp address
        assert key.public_key.hex() not in out
    assert "10000 tokens" in out  # a validator's power (its bonded stake)


def test_status_json_names_micro_units(live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["status", "--home", str(live_api.home), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["balance_micro"] == 100_000 * 10**6
    assert doc["total_supply_micro"] == 2 * 110_000 * 10**6
    addresses = {v["address"] for v in doc["validators"]}
    assert addresses == {live_api.sender.address, live_api.receiver.address}
    assert {v["power_micro"] for v in doc["validators"]} == {10_000 * 10**6}


def test_balance_reads_in_tokens_and_json_in_micro_fields(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    home, who = str(live_api.home), live_api.sender.address

    def balance(*extra: str) -> str:
        if "--prove" not in extra:  # from the running node
            assert cli.run(["balance", who, "--home", home, *extra]) == 0
            return capsys.readouterr().out
        # From the ledger files: another process, as beside a real node (LMDB opens an
        # environment once per process, and this one holds the node's).
        cmd = [sys.executable, "-m", "depin_p2p", "balance", who, "--home", home, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    for extra in ((), ("--prove",)):
        out = balance(*extra)
        assert "balance: 100000 tokens" in out, out
        assert "micro" not in out and MICRO_NUMBER.search(out.split("state root")[0]) is None, out
        doc = json.loads(balance("--json", *extra))
        assert doc["balance_micro"] == 100_000 * 10**6 and "balance" not in doc, doc
        assert doc["address"] == who
    assert cli.run(["balance", who, "--home", home, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["stake_micro"], doc["unbonding_micro"]) == (10_000 * 10**6, 0)


def test_the_account_route_takes_a_dp_address_beside_hex(live_api: LiveApi) -> None:
    port = _api_port(live_api)
    key = live_api.sender

    async def ask(arg: str) -> tuple[int, dict[str, object]]:
        return await request_json(port, "GET", f"/account/{arg}")

    by_hex = trio.run(ask, key.public_key.hex())
    by_address = trio.run(ask, key.address)
    assert by_hex[0] == 200 and by_address == by_hex
    assert by_hex[1]["address"] == key.address
    status, doc = trio.run(ask, key.address[:-1] + "x")  # a typo: the checksum fails
    assert (status, doc["error"]) == (400, "bad_public_key")
