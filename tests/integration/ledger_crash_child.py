"""Child process of the ledger crash test: applies a deterministic epoch sequence forever.

``python -m tests.integration.ledger_crash_child STORE_DIR MAX_EPOCH`` opens
(or initialises) the store and commits epochs last+1 .. MAX_EPOCH, printing
``apply N`` before computing an epoch, ``commit N`` just before its write
transaction and ``done N`` after it, so the parent can SIGKILL it in any phase.
The epoch values depend only on the epoch number and the committed state,
so the parent can recompute the exact same sequence from scratch.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from depin_p2p import wire
from depin_p2p.crypto import KeyPair
from depin_p2p.ledger.state import (
    Account,
    EpochValue,
    InitialState,
    LedgerView,
    Reward,
    Transfer,
    compute_genesis_changes,
)
from depin_p2p.ledger.store import LedgerStore

NETWORK = "crash-test"
GENESIS_HASH = b"\xc0" * 32
SENDERS = [KeyPair.from_seed(bytes([0x40 + i]) * 32) for i in range(4)]
POOL = 20_000  # reward recipients are drawn from this many accounts
REWARDS_PER_EPOCH = 1_500


def initial_state() -> InitialState:
    return InitialState(
        accounts=tuple(sorted((k.public_key, Account(10_000_000, 0)) for k in SENDERS)),
        devices=(),
        validators=((SENDERS[0].public_key, 1_000),),
        genesis_hash=GENESIS_HASH,
    )


def certificate(epoch: int, value: bytes) -> bytes:
    """A stand-in certificate that, like consensus's, carries the encoded epoch value."""
    return b"crash-certificate-%d:" % epoch + value


def _pool_account(epoch: int, j: int) -> bytes:
    seed = hashlib.blake2b(b"%d/%d" % (epoch, j), digest_size=8).digest()
    index = int.from_bytes(seed, "big") % POOL
    return hashlib.blake2b(b"pool-%d" % index, digest_size=32).digest()


def make_value(view: LedgerView, epoch: int) -> EpochValue:
    """The epoch value for ``epoch`` on top of ``view`` (state at epoch - 1)."""
    txs = []
    for i, sender in enumerate(SENDERS):
        acct = view.get_account(sender.public_key)
        nonce = 0 if acct is None else acct.nonce
        to = SENDERS[(i + epoch) % len(SENDERS)].public_key
        txs.append(wire.seal(Transfer(nonce, to, 1 + epoch % 7), sender, NETWORK))
    rewards = tuple(Reward(_pool_account(epoch, j), 1 + j % 5) for j in range(REWARDS_PER_EPOCH))
    prev = view.last_certificate_hash()
    return EpochValue(epoch, prev, tuple(txs), rewards, (), sum(r.amount for r in rewards))


def main() -> None:
    path, max_epoch = Path(sys.argv[1]), int(sys.argv[2])
    store = LedgerStore.open(path)
    if store.last_epoch() < 0:
        store.commit_genesis(store.read(lambda v: compute_genesis_changes(v, initial_state())))
    print("ready", store.last_epoch(), flush=True)
    while (epoch := store.last_epoch() + 1) <= max_epoch:
        print("apply", epoch, flush=True)
        with store.view() as view:
            value = make_value(view, epoch)
        changes = store.apply(value, NETWORK)
        print("commit", epoch, flush=True)
        store.commit_epoch(changes, certificate(epoch, wire.encode(value)))
        print("done", epoch, flush=True)
    store.close()


if __name__ == "__main__":
    main()
