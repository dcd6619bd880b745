"""The `depin-p2p` command line, run as a real process: one line and exit 2 on user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from depin_p2p import __version__


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from depin_p2p.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("depin-p2p: error: ")
    assert needle in lines[0]


def test_version() -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"depin-p2p {__version__}"


def test_keygen_then_keyinfo(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    made = run_cli("keygen", "--out", str(key), "--json")
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert info["address"].startswith("dp")
    assert info["peer_id"].startswith("12D3KooW")
    shown = run_cli("keyinfo", str(key), "--json")
    assert json.loads(shown.stdout) == info


def test_keygen_twice_without_force_exits_2(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    assert run_cli("keygen", "--out", str(key)).returncode == 0
    before = key.read_bytes()
    assert_one_line_error(run_cli("keygen", "--out", str(key)), "already exists")
    assert key.read_bytes() == before
    assert run_cli("keygen", "--out", str(key), "--force").returncode == 0
    assert key.read_bytes() != before


def test_corrupt_key_file_exits_2_without_traceback(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    assert run_cli("keygen", "--out", str(key)).returncode == 0
    key.write_bytes(key.read_bytes()[:50])
    assert_one_line_error(run_cli("keyinfo", str(key)), "corrupt or truncated")


def test_missing_key_file_and_unwritable_dir(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("keyinfo", str(tmp_path / "nope.key")), "does not exist")
    assert_one_line_error(run_cli("keygen", "--out", str(tmp_path / "no" / "dir.key")), "cannot write")
