"""`depin-devnet` refuses a bad invocation in one line, exit 2, before writing anything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _devnet(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m devnet ARGS`` in ``cwd``; a devnet it wrongly starts is killed after 30 s."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devnet", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stdout, stderr = "", "(still running after 30 s: it started a devnet)"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("depin-devnet: error: "), lines[0]
    assert needle in lines[0], lines[0]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_zero_validators_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    proc = _devnet(tmp_path, "up", "--validators", "0", "--dir", str(tmp_path / "dn"))
    _one_line_exit_2(proc, "--validators")
    assert _tree(tmp_path) == []


def test_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me\n")
    proc = _devnet(tmp_path, "up", "--dir", str(target))
    _one_line_exit_2(proc, "not a directory")
    assert target.read_text() == "keep me\n"
    assert _tree(tmp_path) == ["a-file"]


def test_an_abbreviated_option_is_refused_not_guessed(tmp_path: Path) -> None:
    # `--validator` is not `--validators`: refused, and no devnet starts in the current directory.
    proc = _devnet(tmp_path, "up", "--validator", "3")
    _one_line_exit_2(proc, "--validator")
    assert _tree(tmp_path) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nodes", "0"], "--nodes"),
        (["--nodes", "4", "--validators", "5"], "--validators"),
        (["--epoch-seconds", "0"], "--epoch-seconds"),
        (["--epoch-seconds", "nan"], "--epoch-seconds"),
        (["--epochs", "0"], "--epochs"),
        (["--json"], "--json needs --epochs"),
        (["--nodes", "x"], "--nodes"),
        (["--bogus"], "--bogus"),
        (["--resume", "{tmp}/nowhere"], "not a devnet directory"),
        (["--detach", "--epochs", "3"], "--detach"),
        (["--resume", "{tmp}", "--nodes", "3"], "drop --nodes"),
    ],
)
def test_bad_up_arguments_are_refused_before_any_side_effect(
    tmp_path: Path, args: list[str], needle: str
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--resume" not in args:
        args += ["--dir", str(tmp_path / "dn")]
    proc = _devnet(tmp_path, "up", *args)
    _one_line_exit_2(proc, needle)
    assert _tree(tmp_path) == []


def test_force_does_not_wipe_the_dir_when_another_argument_is_bad(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    root.mkdir()
    (root / "precious").write_text("data\n")
    proc = _devnet(tmp_path, "up", "--dir", str(root), "--force", "--validators", "0")
    _one_line_exit_2(proc, "--validators")
    assert (root / "precious").read_text() == "data\n"


@pytest.mark.parametrize("command", ["status", "logs", "down"])
def test_lifecycle_commands_on_a_dir_without_a_devnet(tmp_path: Path, command: str) -> None:
    proc = _devnet(tmp_path, command, str(tmp_path))
    _one_line_exit_2(proc, "not a devnet directory")
    assert _tree(tmp_path) == []


def test_no_command_and_unknown_command_are_one_line(tmp_path: Path) -> None:
    _one_line_exit_2(_devnet(tmp_path), "COMMAND")
    _one_line_exit_2(_devnet(tmp_path, "upp"), "upp")


def test_a_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x\n")
    _one_line_exit_2(_devnet(tmp_path, "up", "--dir", str(tmp_path / "a-file" / "dn")), "cannot write")
    assert _tree(tmp_path) == ["a-file"]
