"""Genesis validation and the `init` / `balance` commands, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from depin_p2p import wire
from depin_p2p.config import load_config
from depin_p2p.crypto import KeyPair, address_from_public_key, write_key_file
from depin_p2p.errors import ConfigError
from depin_p2p.ledger import merkle
from depin_p2p.ledger.genesis import load_genesis, parse_genesis
from depin_p2p.ledger.state import Account, account_key
from depin_p2p.model import DeviceKind

A = KeyPair.from_seed(b"\x01" * 32)
B = KeyPair.from_seed(b"\x02" * 32)
DEV = KeyPair.from_seed(b"\x03" * 32)


def genesis_doc() -> dict[str, Any]:
    return {
        "network_id": "depin-test",
        "genesis_time_ms": 1_767_225_600_000,
        "epoch_length_ms": 60_000,
        "emission_per_epoch": 1_000_000,
        "accounts": {A.address: 5_000_000, B.address: 7},
        "validators": [{"address": A.address, "stake": 1_000_000}],
        "devices": [
            {
                "device_id": DEV.address,
                "owner": A.address,
                "kind": "radio",
                "location": "8c2a100d2c49dff",
                "frequency_hz": 868_100_000,
                "tx_power_cdbm": 1400,
                "gain_cdbi": 300,
                "capacity": 0,
            }
        ],
    }


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from depin_p2p.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_valid_genesis_parses() -> None:
    g = parse_genesis(json.dumps(genesis_doc()))
    assert g.network_id == "depin-test"
    assert dict(g.accounts) == {A.public_key: 5_000_000, B.public_key: 7}
    assert g.validators == ((A.public_key, 1_000_000),)
    assert g.devices[0].kind is DeviceKind.RADIO
    assert g.devices[0].location == 0x8C2A100D2C49DFF
    # The hash is over canonical JSON: formatting does not change it, content does.
    assert parse_genesis(json.dumps(genesis_doc(), indent=4)).genesis_hash == g.genesis_hash
    changed = genesis_doc()
    changed["emission_per_epoch"] = 2
    assert parse_genesis(json.dumps(changed)).genesis_hash != g.genesis_hash


def _mutations() -> list[tuple[str, Any, str]]:
    def drop(name: str) -> Any:
        return lambda d: d.pop(name)

    def neg(d: dict[str, Any]) -> None:
        d["accounts"][B.address] = -5

    def bad_addr(d: dict[str, Any]) -> None:
        d["accounts"]["dpnotanaddress"] = 1

    def no_stake(d: dict[str, Any]) -> None:
        del d["validators"][0]["stake"]

    def kind(d: dict[str, Any]) -> None:
        d["devices"][0]["kind"] = "laser"

    def float_balance(d: dict[str, Any]) -> None:
        d["accounts"][A.address] = 1.5

    return [
        ("missing network_id", drop("network_id"), "missing field network_id"),
        ("missing accounts", drop("accounts"), "missing field accounts"),
        ("negative balance", neg, f"accounts.{B.address}: must not be negative"),
        ("bad address", bad_addr, "accounts.dpnotanaddress"),
        ("validator without stake", no_stake, "missing field validators[0].stake"),
        ("unknown device kind", kind, "devices[0].kind"),
        ("float balance", float_balance, f"accounts.{A.address}: expected an integer"),
    ]


@pytest.mark.parametrize(("name", "mutate", "needle"), _mutations(), ids=[m[0] for m in _mutations()])
def test_bad_genesis_names_the_field(name: str, mutate: Any, needle: str) -> None:
    doc = genesis_doc()
    mutate(doc)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_genesis(json.dumps(doc))


def test_duplicate_account_is_refused() -> None:
    text = json.dumps(genesis_doc()).replace(
        f'"{B.address}": 7', f'"{B.address}": 7, "{B.address}": 9'
    )
    assert text.count(B.address) == 2
    with pytest.raises(ConfigError, match=f"accounts.{B.address}: duplicate account"):
        parse_genesis(text)


def test_missing_genesis_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_genesis(tmp_path / "nope.json")


# --------------------------------------------------------------------------
# CLI


@pytest.fixture
def genesis_file(tmp_path: Path) -> Path:
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(genesis_doc()))
    return path


@pytest.mark.slow
def test_init_then_balance_with_proof(tmp_path: Path, genesis_file: Path) -> None:
    key = tmp_path / "a.key"
    write_key_file(key, A)
    home = tmp_path / "home"
    made = run_cli("init", "--home", str(home), "--genesis", str(genesis_file), "--key", str(key), "--json")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["address"] == A.address
    assert (home / "node.key").exists() and (home / "genesis.json").exists()
    # The home is complete: its documented node.toml loads.
    assert load_config(home).key_file == home / "node.key"

    shown = run_cli("balance", A.address, "--home", str(home), "--prove", "--json")
    assert shown.returncode == 0, shown.stderr
    out = json.loads(shown.stdout)
    assert (out["balance_micro"], out["nonce"], out["epoch"], out["exists"]) == (5_000_000, 0, 0, True)
    assert out["state_root"] == info["state_root"]
    assert out["proof"]["verified"] is True
    # The light client's check, from the printed bytes and the root alone.
    proof = merkle.verify_proof_bytes(
        bytes.fromhex(out["state_root"]),
        account_key(A.public_key),
        wire.encode(Account(5_000_000, 0)),
        bytes.fromhex(out["proof"]["hex"]),
    )
    assert out["proof"]["bytes"] == len(bytes.fromhex(out["proof"]["hex"])) < 200  # a genesis of 4 keys
    assert out["proof"]["depth"] == proof.depth

    # An account not in the genesis: zero, with a verified exclusion proof.
    other = address_from_public_key(KeyPair.from_seed(b"\x09" * 32).public_key)
    absent = json.loads(run_cli("balance", other, "--home", str(home), "--prove", "--json").stdout)
    assert (absent["exists"], absent["balance_micro"], absent["proof"]["verified"]) == (False, 0, True)

    text = run_cli("balance", A.address, "--home", str(home), "--prove")
    assert text.returncode == 0
    assert "balance: 5 tokens" in text.stdout
    assert f"inclusion proof verified against the state root ({out['proof']['bytes']} bytes" in text.stdout


@pytest.mark.slow
def test_init_refuses_an_existing_home_without_force(tmp_path: Path, genesis_file: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("init", "--home", str(home), "--genesis", str(genesis_file)).returncode == 0
    key_before = (home / "node.key").read_bytes()
    line = one_line_error(run_cli("init", "--home", str(home), "--genesis", str(genesis_file)))
    assert "already exists" in line and "--force" in line
    assert (home / "node.key").read_bytes() == key_before
    forced = run_cli("init", "--home", str(home), "--genesis", str(genesis_file), "--force")
    assert forced.returncode == 0, forced.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mutate", "needle"), _mutations()[:3], ids=[m[0] for m in _mutations()[:3]])
def test_init_with_bad_genesis_exits_2(tmp_path: Path, name: str, mutate: Any, needle: str) -> None:
    doc = genesis_doc()
    mutate(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    line = one_line_error(run_cli("init", "--home", str(tmp_path / "h"), "--genesis", str(bad)))
    assert needle in line
    assert not (tmp_path / "h").exists()


@pytest.mark.slow
def test_init_with_duplicate_account_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "dup.json"
    dup = f'"{B.address}": 7, "{B.address}": 9'
    bad.write_text(json.dumps(genesis_doc()).replace(f'"{B.address}": 7', dup))
    line = one_line_error(run_cli("init", "--home", str(tmp_path / "h"), "--genesis", str(bad)))
    assert "duplicate account" in line and B.address in line


@pytest.mark.slow
def test_balance_errors_are_one_line(tmp_path: Path) -> None:
    assert "no ledger" in one_line_error(run_cli("balance", A.address, "--home", str(tmp_path)))
    assert "checksum" in one_line_error(run_cli("balance", A.address[:-1] + "x", "--home", str(tmp_path)))


# --------------------------------------------------------------------------
# Genesis files that `init` used to accept and `run` then choked on (issue 10 item 3)


def _no_validators(d: dict[str, Any]) -> None:
    d["validators"] = []


def _epoch_ms(ms: int) -> Any:
    def set_length(d: dict[str, Any]) -> None:
        d["epoch_length_ms"] = ms

    return set_length


UNRUNNABLE = [
    ("no validators", _no_validators, "validators: needs at least one validator"),
    ("1 ms epochs", _epoch_ms(1), "epoch_length_ms: 1 is outside [1000, 86400000]"),
    ("999 ms epochs", _epoch_ms(999), "epoch_length_ms: 999 is outside"),
    ("epochs over a day", _epoch_ms(86_400_001), "epoch_length_ms: 86400001 is outside"),
]


@pytest.mark.parametrize(("name", "mutate", "needle"), UNRUNNABLE, ids=[m[0] for m in UNRUNNABLE])
def test_init_refuses_a_genesis_that_cannot_run(tmp_path: Path, name: str, mutate: Any, needle: str) -> None:
    doc = genesis_doc()
    mutate(doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    line = one_line_error(run_cli("init", "--home", str(tmp_path / "h"), "--genesis", str(bad)))
    assert needle in line, line
    assert not (tmp_path / "h").exists()


@pytest.mark.slow
def test_run_refuses_a_genesis_that_cannot_run(tmp_path: Path, genesis_file: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("init", "--home", str(home), "--genesis", str(genesis_file)).returncode == 0
    doc = genesis_doc()
    _no_validators(doc)
    (home / "genesis.json").write_text(json.dumps(doc))  # a home made before init checked this
    line = one_line_error(run_cli("run", "--home", str(home)))
    assert "validators: needs at least one validator" in line, line


@pytest.mark.slow
def test_a_new_network_long_after_its_genesis_time_is_refused_not_replayed(
    tmp_path: Path, genesis_file: Path
) -> None:
    # The README's old example: genesis 2026-01-01, 60 s epochs, one validator, no peers. It used
    # to replay every epoch since, one empty consensus instance each, without a word.
    home = tmp_path / "home"
    made = run_cli("init", "--home", str(home), "--genesis", str(genesis_file))
    assert made.returncode == 0, made.stderr
    note = made.stderr.strip().splitlines()
    assert len(note) == 1 and "note:" in note[0] and "epochs in the past" in note[0], note
    try:
        ran = run_cli("run", "--home", str(home), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("`run` replayed the epochs since the genesis time instead of refusing")
    line = one_line_error(ran)
    assert "epochs in the past" in line and "bootstrap" in line, line


def test_the_start_rule_applies_only_to_a_new_network_without_peers() -> None:
    from depin_p2p.ledger.genesis import MAX_START_LAG_EPOCHS, check_can_start  # noqa: PLC0415

    g = parse_genesis(json.dumps(genesis_doc()))
    late = g.genesis_time_ms + (MAX_START_LAG_EPOCHS + 1) * g.epoch_length_ms
    just = g.genesis_time_ms + MAX_START_LAG_EPOCHS * g.epoch_length_ms
    check_can_start(g, now_ms=just, last_epoch=0, bootstrap_peers=0)
    check_can_start(g, now_ms=g.genesis_time_ms - 1, last_epoch=0, bootstrap_peers=0)  # not started yet
    check_can_start(g, now_ms=late, last_epoch=0, bootstrap_peers=1)  # catches up from its peers
    check_can_start(g, now_ms=late, last_epoch=3, bootstrap_peers=0)  # a network that ran: resumes
    with pytest.raises(ConfigError, match="101 epochs in the past"):
        check_can_start(g, now_ms=late, last_epoch=0, bootstrap_peers=0)
