"""`balance` reads a home it cannot write: the README calls it read-only (issue 10 item 6).

Root bypasses file permissions, so the command runs as ``nobody`` (via
``setpriv``) on a root-owned home with every write bit cleared: what a
monitoring user, or a home on a read-only share, sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from depin_p2p.crypto import KeyPair
from depin_p2p.home import init_home
from depin_p2p.ledger.store import LedgerStore
from tests.unit.ledger.test_genesis_cli import A, genesis_doc

NOBODY = 65534
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None,
    reason="needs root and setpriv to run a command as another user (root ignores permissions)",
)


def _chmod_tree(root: Path, *, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if writable:
            mode |= 0o200
        else:
            mode = (mode | (0o555 if path.is_dir() else 0o444)) & ~0o222
            if path.name.endswith(".key"):
                mode &= 0o500  # key files stay private to their owner
        os.chmod(path, mode)


@pytest.fixture
def readonly_home() -> Iterator[Path]:
    if _as_nobody_python("-c", "import depin_p2p").returncode != 0:
        pytest.skip(f"user nobody cannot import depin_p2p from {sys.prefix} (is a parent directory 0700?)")
    # Not under pytest's tmp_path: its parents are root-only (0700), and nobody must reach the home.
    top = Path(tempfile.mkdtemp(prefix="depin-ro-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        genesis = top / "genesis.json"
        genesis.write_text(json.dumps(genesis_doc()))
        home = top / "home"
        init_home(home, genesis_file=genesis, key=KeyPair.generate())
        _chmod_tree(top, writable=False)
        yield home
    finally:
        _chmod_tree(top, writable=True)
        shutil.rmtree(top)


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    return _as_nobody_python("-m", "depin_p2p", *args)


def _as_nobody_python(*args: str) -> subprocess.CompletedProcess[str]:
    assert SETPRIV is not None
    cmd = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*cmd, sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def test_balance_reads_a_home_it_cannot_write(readonly_home: Path) -> None:
    assert not os.access(readonly_home / "data", os.W_OK) or os.geteuid() == 0
    for extra in ((), ("--prove",)):
        got = _as_nobody("balance", A.address, "--home", str(readonly_home), "--json", *extra)
        assert got.returncode == 0, got.stderr
        doc = json.loads(got.stdout)
        assert (doc["balance_micro"], doc["exists"], doc["epoch"]) == (5_000_000, True, 0)
        if extra:
            assert doc["proof"]["verified"] is True


def test_a_read_only_reader_beside_a_writer_is_told_so_in_one_line(readonly_home: Path) -> None:
    # A node writing the ledger holds writer.lock; without LMDB's reader table (which this
    # user cannot write) a read could see pages the writer reuses: refused, not risked.
    _chmod_tree(readonly_home / "data", writable=True)
    with LedgerStore.open(readonly_home / "data"):
        _chmod_tree(readonly_home / "data", writable=False)
        got = _as_nobody("balance", A.address, "--home", str(readonly_home), "--prove")
    assert got.returncode == 2, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in got.stderr, got.stderr
    assert "running node" in lines[0], lines[0]
