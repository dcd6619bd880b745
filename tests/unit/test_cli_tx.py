"""Amount parsing and the transaction commands' error paths (no node running)."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from depin_p2p import cli
from depin_p2p.crypto import KeyPair
from depin_p2p.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "micro"),
    [("1", 1_000_000), ("1.5", 1_500_000), ("0.000001", 1), ("12.345678", 12_345_678), ("007", 7_000_000)],
)
def test_amounts_are_tokens_with_six_decimals(text: str, micro: int) -> None:
    assert cli.parse_amount(text) == micro
    assert cli.parse_amount(cli.format_amount(micro)) == micro


@pytest.mark.parametrize("text", ["-1", "0", "0.0", "1.1234567", "1e3", "1,5", " 1", "", ".5", "1.", "nan"])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        cli.parse_amount(text)


def test_amount_over_u64_is_refused() -> None:
    with pytest.raises(ConfigError, match="more than"):
        cli.parse_amount(str(2**64))


def test_no_node_running_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    to = KeyPair.generate().address
    assert cli.run(["transfer", "--home", str(tmp_path), to, "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("depin-p2p: error:")
    assert cli.run(["peers", "--home", str(tmp_path)]) == 2
    assert "no node has run" in capsys.readouterr().err
    assert cli.run(["stake", "--home", str(tmp_path), "1.2345678"]) == 2
    assert "6 decimals" in capsys.readouterr().err


# ---------------------------------------------------------------- a node's real API, no network


@dataclass
class LiveApi:
    """A home whose node API really answers: the node's own documents over a real TxPool and LMDB."""

    home: Path
    pool: Any
    sender: KeyPair
    receiver: KeyPair


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[LiveApi]:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from depin_p2p.api import ApiServer, TxApi  # noqa: PLC0415
    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.ledger.store import LedgerStore  # noqa: PLC0415
    from depin_p2p.node import Node  # noqa: PLC0415
    from depin_p2p.txpool import TxPool  # noqa: PLC0415
    from depin_p2p.views import LedgerView  # noqa: PLC0415
    from devnet.genesis import DevnetPlan, plan_devnet  # noqa: PLC0415
    from devnet.layout import write_layout  # noqa: PLC0415

    devnet = plan_devnet(DevnetPlan(nodes=2, seed=b"cli-guard"), genesis_time_ms=int(time.time() * 1000))
    home = write_layout(devnet, tmp_path / "dn").nodes[0].home
    key = Node(load_config(home)).key
    store = LedgerStore.open(home / "data")
    pool = TxPool(store, devnet.network_id)
    view = LedgerView(store, pool)

    async def submit(data: bytes) -> bytes:
        return pool.add(data)

    api = ApiServer(
        status=lambda: {"network_id": devnet.network_id, **view.ledger_status(key.public_key)},
        registry=CollectorRegistry(),
        tx=TxApi(submit=submit, account=view.account_doc, tx_status=view.tx_doc),
    )
    started = threading.Event()
    held: dict[str, Any] = {}

    async def serve() -> None:
        held["token"] = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            held["scope"] = nursery.cancel_scope
            port = await nursery.start(api.run)
            (home / "run.json").write_text(json.dumps({"api_port": port}))
            started.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the API did not start"
        yield LiveApi(home, pool, devnet.node_keys[0], devnet.node_keys[1])
    finally:
        if "scope" in held:
            trio.from_thread.run_sync(held["scope"].cancel, trio_token=held["token"])
        thread.join(10)
        store.close()


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("depin-p2p: error:"), err
    return err[0]


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_a_bad_timeout_is_refused_before_anything_is_submitted(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    home, to = str(live_api.home), live_api.receiver.address
    assert cli.run(["transfer", "--home", home, to, "1", "--wait", "--timeout", timeout]) == 2
    assert "--timeout" in _one_error_line(capsys)
    assert cli.run(["stake", "--home", home, "1", "--wait", "--timeout", timeout]) == 2
    assert "--timeout" in _one_error_line(capsys)
    assert len(live_api.pool) == 0  # no nonce spent


def test_more_than_the_known_balance_asks_for_force(
    live_api: LiveApi, capsys: pytest.CaptureFixture[str]
) -> None:
    home, to = str(live_api.home), live_api.receiver.address
    too_much = "100001"  # the devnet funds each account with 100 000 tokens
    assert cli.run(["transfer", "--home", home, to, too_much]) == 2
    line = _one_error_line(capsys)
    assert "--force" in line and "100000 tokens" in line, line
    assert cli.run(["stake", "--home", home, too_much]) == 2
    assert "--force" in _one_error_line(capsys)
    assert cli.run(["unstake", "--home", home, "10001"]) == 2  # 10 000 tokens are staked
    assert "--force" in _one_error_line(capsys)
    assert len(live_api.pool) == 0
    # Within the balance it goes through; above it only with --force.
    assert cli.run(["transfer", "--home", home, to, "1.5"]) == 0
    assert cli.run(["transfer", "--home", home, to, too_much, "--force"]) == 0
    assert len(live_api.pool) == 2


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_no_parser_accepts_abbreviated_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parsers = list(_all_parsers(cli.build_parser()))
    assert len(parsers) > 10
    assert [p.prog for p in parsers if p.allow_abbrev] == []
    with pytest.raises(SystemExit) as exit_:
        cli.run(["balance", KeyPair.generate().address, "--hom", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--hom" in capsys.readouterr().err
