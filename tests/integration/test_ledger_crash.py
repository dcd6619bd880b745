"""Crash safety: SIGKILL a committing child at random moments; the store always holds a whole prefix.

Each reopen also checks the Merkle tree: the stored root is the from-scratch
root of the stored records, proofs from the stored tree verify, and at the
end the stored tree records are exactly those of the kept versions.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from depin_p2p import wire
from depin_p2p.ledger import merkle
from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import account_key, apply_epoch, compute_genesis_changes
from depin_p2p.ledger.store import LedgerStore, LmdbView
from tests.integration import ledger_crash_child as child

ROOT = Path(__file__).resolve().parents[2]
KILLS = 22
SEED = 20261121
MAX_EPOCH = 10_000  # the child never gets there: it is always killed first
WAIT_S = 30.0


class LineReader:
    """Lines from a child's stdout, each read with a deadline (never blocks forever)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buf = b""

    def next_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    raise AssertionError("child exited before being killed")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def wait_for(self, prefix: str) -> str:
        line = self.next_line(WAIT_S)
        while line is not None and not line.startswith(prefix):
            line = self.next_line(WAIT_S)
        assert line is not None, f"child did not print {prefix!r} within {WAIT_S}s"
        return line


class Reference:
    """The same epoch sequence recomputed from scratch in memory, independent of the store."""

    def __init__(self) -> None:
        self.mem = MemoryLedger()
        self.mem.commit(compute_genesis_changes(self.mem, child.initial_state()), b"")
        self.values: dict[int, bytes] = {}

    def advance_to(self, epoch: int) -> None:
        while self.mem.meta.epoch < epoch:
            e = self.mem.meta.epoch + 1
            value = child.make_value(self.mem, e)
            self.values[e] = wire.encode(value)
            self.mem.commit(apply_epoch(self.mem, value, child.NETWORK), child.certificate(e, self.values[e]))


def reachable(view: LmdbView, root: bytes | None) -> set[bytes]:
    """Every stored record the tree of ``root`` reaches."""
    assert root is not None
    seen: set[bytes] = set()
    todo = [] if root == merkle.EMPTY else [root]
    while todo:
        node = todo.pop()
        seen.add(node)
        record = view.merkle_node(node)
        assert record is not None
        todo += [c for c in merkle.record_children(record) if c not in seen]
    return seen


def kill_at_random_moment(proc: subprocess.Popen[bytes], rng: random.Random) -> str:
    reader = LineReader(proc)
    reader.wait_for("ready")
    reader.wait_for("done")  # every run makes progress, so the runs cover many epochs
    phase = rng.choice(["apply", "commit", "done", "any"])
    for _ in range(rng.randint(1, 3)):
        reader.wait_for(phase if phase != "any" else "")
    # A random extra moment (bounded by the next line), so kills also land inside a phase.
    reader.next_line(rng.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    return phase


@pytest.mark.slow
def test_sigkill_never_leaves_half_an_epoch(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ref = Reference()
    store_dir = tmp_path / "ledger"
    last = -1
    phases = []
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.ledger_crash_child", str(store_dir), str(MAX_EPOCH)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            phases.append(kill_at_random_moment(proc, rng))
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=WAIT_S)
            assert proc.stdout is not None
            proc.stdout.close()

        with LedgerStore.open(store_dir) as store, store.view() as view:
            epoch = view.last_epoch()
            assert epoch >= last, "a committed epoch was lost"
            last = epoch
            ref.advance_to(epoch)
            # Exactly a prefix: every epoch up to last_epoch is there (its certificate carrying
            # its value), nothing after it.
            for e in range(1, epoch + 1):
                assert view.get_certificate(e) == child.certificate(e, ref.values[e])
            assert view.get_certificate(epoch + 1) is None
            assert view.get_meta().epoch == epoch
            # The stored root is the from-scratch root of the stored records and of the reference,
            # and the stored tree leads to it.
            root = view.state_root()
            assert root == merkle.compute_root(view.entries()) == ref.mem.state_root()
            assert merkle.root_of(view) == root
            # The stored tree proves what the records hold.
            for aid in (child.SENDERS[0].public_key, child._pool_account(epoch, 0)):
                key = account_key(aid)
                merkle.verify_proof(root, key, view.merkle_value(key), merkle.prove(view, key))
            if len(phases) == KILLS:
                # Exactly the trees of the kept versions are stored: pruning lost no live node
                # and leaked no dead one, whatever commit the kills interrupted.
                kept = range(max(0, epoch - store.keep_versions), epoch + 1)
                live = set().union(*(reachable(view, view.state_root_at(e)) for e in kept))
                assert live == {bytes(k) for k, _ in view._txn.cursor(db=view._dbs["merkle_nodes"])}
    assert last >= KILLS  # each run committed at least one epoch
    assert {"apply", "commit"} <= set(phases)
