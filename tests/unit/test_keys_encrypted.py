"""Passphrase-encrypted key files (issue 17): round trip, and one line with exit 2 for every failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from depin_p2p.crypto import key_file_is_encrypted, load_key_file
from devnet.genesis import DevnetPlan, plan_devnet, write_genesis
from tests.unit.test_cli import assert_one_line_error, run_cli

PASSPHRASE = "correct horse battery staple"


def _passphrase_file(tmp_path: Path, text: str = PASSPHRASE + "\n", name: str = "pass") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def _encrypted_key(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    key = tmp_path / "node.key"
    made = run_cli(
        "keygen",
        "--out",
        str(key),
        "--encrypt",
        "--passphrase-file",
        str(_passphrase_file(tmp_path)),
        "--json",
    )
    assert made.returncode == 0, made.stderr
    return key, json.loads(made.stdout)


def test_an_encrypted_key_round_trips_and_holds_no_seed(tmp_path: Path) -> None:
    key, made = _encrypted_key(tmp_path)
    assert made["encrypted"] is True
    doc = json.loads(key.read_text())
    assert "seed" not in doc and doc["encryption"]["kdf"] == "argon2id"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key_file_is_encrypted(key)
    shown = run_cli("keyinfo", str(key), "--passphrase-file", str(tmp_path / "pass"), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["address"] == made["address"]
    assert json.loads(shown.stdout)["peer_id"] == made["peer_id"]
    # The environment variable source reads the same passphrase (no trailing newline there).
    env = {**os.environ, "DEPIN_TEST_PASS": PASSPHRASE}
    by_env = subprocess.run(
        [
            sys.executable,
            "-m",
            "depin_p2p",
            "keyinfo",
            str(key),
            "--passphrase-env",
            "DEPIN_TEST_PASS",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert by_env.returncode == 0, by_env.stderr
    assert json.loads(by_env.stdout)["address"] == made["address"]
    assert load_key_file(key, PASSPHRASE.encode).address == made["address"]


def test_wrong_passphrase_missing_file_and_tampering_each_exit_2_with_one_line(tmp_path: Path) -> None:
    key, _ = _encrypted_key(tmp_path)
    wrong = _passphrase_file(tmp_path, "not it\n", "wrong")
    assert_one_line_error(run_cli("keyinfo", str(key), "--passphrase-file", str(wrong)), "wrong passphrase")
    assert_one_line_error(
        run_cli("keyinfo", str(key), "--passphrase-file", str(tmp_path / "absent")), "does not exist"
    )
    assert_one_line_error(run_cli("keyinfo", str(key)), "is encrypted")
    doc = json.loads(key.read_text())
    box = doc["encryption"]["box"]
    doc["encryption"]["box"] = box[:-2] + ("00" if box[-2:] != "00" else "01")
    tampered = tmp_path / "tampered.key"
    tampered.write_text(json.dumps(doc))
    tampered.chmod(0o600)
    assert_one_line_error(
        run_cli("keyinfo", str(tampered), "--passphrase-file", str(tmp_path / "pass")), "was modified"
    )
    doc = json.loads(key.read_text())
    doc["public_key"] = "00" * 32
    tampered.write_text(json.dumps(doc))
    assert_one_line_error(
        run_cli("keyinfo", str(tampered), "--passphrase-file", str(tmp_path / "pass")), "corrupt"
    )


def test_keygen_encrypt_needs_a_passphrase_source_and_never_takes_one_as_an_argument(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "depin_p2p", "keygen", "--out", str(tmp_path / "k"), "--encrypt"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert_one_line_error(proc, "--passphrase-file")
    assert not (tmp_path / "k").exists()
    empty = _passphrase_file(tmp_path, "\n", "empty")
    assert_one_line_error(
        run_cli("keygen", "--out", str(tmp_path / "k"), "--encrypt", "--passphrase-file", str(empty)), "empty"
    )
    assert run_cli("keygen", "--out", str(tmp_path / "k"), "--encrypt", "--passphrase", "x").returncode == 2


def _genesis(tmp_path: Path) -> Path:
    plan = plan_devnet(DevnetPlan(nodes=1), genesis_time_ms=int(time.time() * 1000) + 60_000)
    path = tmp_path / "genesis.json"
    write_genesis(plan, path)
    return path


def test_run_reads_the_passphrase_node_toml_names_and_refuses_in_one_line(tmp_path: Path) -> None:
    genesis = _genesis(tmp_path)
    pass_file = _passphrase_file(tmp_path)
    home = tmp_path / "home"
    made = run_cli(
        "init", "--home", str(home), "--genesis", str(genesis), "--passphrase-file", str(pass_file)
    )
    assert made.returncode == 0, made.stderr
    assert key_file_is_encrypted(home / "node.key")
    assert f'passphrase_file = "{pass_file.resolve()}"' in (home / "node.toml").read_text()
    pass_file.write_text("not it\n")
    assert_one_line_error(run_cli("run", "--home", str(home)), "wrong passphrase")
    pass_file.unlink()
    assert_one_line_error(run_cli("run", "--home", str(home)), "does not exist")

    env_home = tmp_path / "env-home"
    env = {**os.environ, "DEPIN_TEST_PASS": PASSPHRASE}
    init = [sys.executable, "-m", "depin_p2p", "init", "--home", str(env_home), "--genesis", str(genesis)]
    made = subprocess.run(
        [*init, "--passphrase-env", "DEPIN_TEST_PASS"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    unset = {k: v for k, v in os.environ.items() if k != "DEPIN_TEST_PASS"}
    run = [sys.executable, "-m", "depin_p2p", "run", "--home", str(env_home)]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=60, env=unset, check=False)
    assert_one_line_error(proc, "DEPIN_TEST_PASS")
    # A plain home whose key was replaced by an encrypted one, with no passphrase named.
    plain = tmp_path / "plain"
    assert run_cli("init", "--home", str(plain), "--genesis", str(genesis)).returncode == 0
    key, _ = _encrypted_key(tmp_path)
    (plain / "node.key").write_bytes(key.read_bytes())
    assert_one_line_error(run_cli("run", "--home", str(plain)), "passphrase_file")
