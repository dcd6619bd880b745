"""A validator whose ledger write fails after it signed recovers and signs again (issue 10 item 2).

A single validator decides epoch E, has its proposal, prevote and precommit
durable in the sign-state, and then the commit of E fails (the disk is
full). The node stops with one line. Restarted on the same home once the
disk has room, it must finish E with exactly the messages it signed before
(anything else would be a conflicting signature) and go on committing.

Two ways to make the write fail: a real LMDB store whose epoch commit is
made to fail inside its write transaction (deterministic: always after the
sign-state writes, before the commit), and a real 400 KiB tmpfs filled up
(root only), where the failure lands wherever the disk runs out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio

from depin_p2p import wire
from depin_p2p.consensus.signer import SIGN_STATE_MAX_BYTES, SignState
from depin_p2p.consensus.state import Certificate, Precommit, Prevote, Proposal
from depin_p2p.errors import StorageError
from depin_p2p.ledger.store import LedgerStore
from devnet.genesis import DevnetPlan, plan_devnet
from devnet.layout import write_layout

pytestmark = pytest.mark.slow

EPOCH_S = 1.0
GENESIS_MARGIN_MS = 2_000


def _home(root: Path, seed: bytes) -> Path:
    plan = DevnetPlan(nodes=1, epoch_seconds=EPOCH_S, seed=seed)
    devnet = plan_devnet(plan, genesis_time_ms=int(time.time() * 1000) + GENESIS_MARGIN_MS)
    return write_layout(devnet, root).nodes[0].home


def _ledger(home: Path) -> tuple[int, SignState | None, dict[int, Certificate]]:
    with LedgerStore.open(home / "data", readonly=True) as store, store.view() as view:
        last = view.last_epoch()
        certs = {e: wire.decode_as(view.get_certificate(e) or b"", Certificate) for e in range(1, last + 1)}
    with LedgerStore.open(home / "data", readonly=True) as store:
        raw = store.load_sign_state()
    state = None if raw is None else wire.decode_as(raw, SignState, max_size=SIGN_STATE_MAX_BYTES)
    return last, state, certs


def _signed_in(state: SignState, epoch: int) -> dict[type, wire.Envelope]:
    assert state.epoch == epoch
    return {type(wire.decode(env.body)): env for env in state.signed}


def _leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


async def _run_until(home: Path, done: Any, timeout: float) -> Any:
    """Run the home's node in this process until ``done(view)`` is truthy; return its running view."""
    from depin_p2p.config import load_config  # noqa: PLC0415
    from depin_p2p.node import Node  # noqa: PLC0415

    node = Node(load_config(home))
    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            view = await nursery.start(node.run)
            while not done(view):
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    return view


def test_a_commit_that_fails_after_signing_does_not_stop_the_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path / "dn", b"disk-full-injected")
    real_put = LedgerStore._put_changes
    failed: list[int] = []

    def put_then_fail(self: LedgerStore, txn: Any, changes: Any) -> None:
        real_put(self, txn, changes)  # the whole epoch is written into the transaction...
        if changes.epoch >= 1 and not failed:
            failed.append(changes.epoch)
            # ...and the commit fails the way LMDB's does on a full disk: the txn is aborted.
            raise lmdb.Error("mdb_txn_commit: Input/output error")

    monkeypatch.setattr(LedgerStore, "_put_changes", put_then_fail)
    with pytest.raises(BaseExceptionGroup) as info:
        trio.run(_run_until, home, lambda node: False, 120.0)
    errors = [e for e in _leaves(info.value) if isinstance(e, StorageError)]
    assert errors and "Input/output error" in str(errors[0]), info.value
    monkeypatch.undo()

    # What the disk holds now: the ledger before the epoch, the epoch's three messages signed.
    epoch = failed[0]
    last, state, _ = _ledger(home)
    assert last == epoch - 1
    assert state is not None
    before = _signed_in(state, epoch)
    assert set(before) == {Proposal, Prevote, Precommit}

    view = trio.run(
        _run_until, home, lambda v: v.ledger.store.last_epoch() >= epoch + 2, 120.0
    )
    consensus = view.services.consensus
    assert consensus.counters.sign_refused == 0
    assert consensus.conflicting_signers == {}
    last, state, certs = _ledger(home)
    assert last >= epoch + 2
    # Epoch E committed the value this key proposed before the failure, with the precommit it
    # signed then: the very same bytes, nothing new signed for that round.
    proposal = wire.decode(before[Proposal].body)
    assert isinstance(proposal, Proposal)
    assert certs[epoch].candidate == proposal.candidate
    precommit = before[Precommit]
    assert (precommit.signer, precommit.signature) in {
        (c.validator, c.signature) for c in certs[epoch].signatures
    }


# ------------------------------------------------------------------ a real full disk

TMPFS_SIZE = "400k"
SLACK_BYTES = (4096, 12288, 0)  # free space left beside the filler, one per cycle


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def _tmpfs() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="depin-tmpfs-"))
    mounted = False
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(top)], check=True)
        mounted = True
        yield top
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(top)], check=False)
        shutil.rmtree(top, ignore_errors=True)


def _fill(disk: Path, slack: int) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * max(0, _free_bytes(disk) - slack))
    return filler


def _status(home: Path) -> dict[str, Any] | None:
    from depin_p2p.api import fetch_json  # noqa: PLC0415

    try:
        port = json.loads((home / "run.json").read_text())["api_port"]
        return trio.run(fetch_json, port)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while (got := check()) is None or got is False:
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)
    return got


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_validator_on_a_full_tmpfs_stops_in_one_line_and_resumes_when_there_is_room(tmp_path: Path) -> None:
    home = _home(tmp_path / "dn", b"disk-full-tmpfs")
    log = home / "stderr.txt"
    proc: subprocess.Popen[bytes] | None = None
    with _tmpfs() as disk:
        shutil.move(home / "data", disk / "data")
        (home / "data").symlink_to(disk / "data")

        def start() -> subprocess.Popen[bytes]:
            with log.open("wb") as err:
                return subprocess.Popen(
                    [sys.executable, "-m", "depin_p2p", "run", "--home", str(home)],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )

        def last_epoch() -> int:
            return _ledger(home)[0]

        try:
            proc = start()
            kept: dict[int, Certificate] = {}
            for cycle, slack in enumerate(SLACK_BYTES):
                reached = last_epoch() + 2
                _wait(lambda r=reached: last_epoch() >= r, 120, f"cycle {cycle}: epoch {reached}")
                filler = _fill(disk, slack)
                code = _wait(proc.poll, 90, f"cycle {cycle}: the node to stop on the full disk")
                # Logs go to stderr as JSON lines; the error is the one line that is not.
                lines = [ln for ln in log.read_text().splitlines() if not ln.startswith("{")]
                assert code == 2 and len(lines) == 1, (code, lines[-5:])
                assert "cannot write ledger" in lines[0] or "cannot open ledger" in lines[0], lines[0]
                last, _, certs = _ledger(home)
                # Nothing committed was lost; what was committed before stays byte for byte.
                assert all(certs[e] == c for e, c in kept.items()) and set(certs) == set(range(1, last + 1))
                kept = certs
                filler.unlink()
                proc = start()
            _wait(lambda: last_epoch() >= max(kept) + 2, 120, "epochs after the last restart")
            status = _wait(lambda: _status(home), 20, "/status")
            consensus = status["consensus"]
            assert consensus["conflicting_signers"] == {}, consensus
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
