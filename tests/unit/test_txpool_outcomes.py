"""The pool's table of committed outcomes is bounded by epochs, not only by count (issue 12 item 7).

``GET /tx/<id>`` answers from it. Kept by count only (16 384), it grew by
every committed transaction for hours at a devnet's load (2 tx/s: 2.3 h to
fill); kept for ``OUTCOME_EPOCHS`` epochs, it levels off after that many.
"""

from __future__ import annotations

import hashlib

from depin_p2p.ledger.memory import MemoryLedger
from depin_p2p.ledger.state import TxResult
from depin_p2p.txpool import MAX_OUTCOMES, OUTCOME_EPOCHS, TxPool


def _results(epoch: int, n: int) -> list[TxResult]:
    return [
        TxResult(i, hashlib.blake2b(b"%d/%d" % (epoch, i), digest_size=32).digest(), None) for i in range(n)
    ]


def test_outcomes_are_kept_for_outcome_epochs_then_dropped() -> None:
    pool = TxPool(MemoryLedger(), "test-net")
    per_epoch = 20  # a devnet's 2 tx/s at 10 s epochs
    sizes = []
    for epoch in range(1, 4 * OUTCOME_EPOCHS + 1):
        pool.on_committed(epoch, _results(epoch, per_epoch))
        sizes.append(len(pool._outcomes))
    assert sizes[-1] == OUTCOME_EPOCHS * per_epoch  # levelled off at the epochs kept
    assert max(sizes) == OUTCOME_EPOCHS * per_epoch
    last = 4 * OUTCOME_EPOCHS
    newest = pool.outcome(_results(last, 1)[0].tx_id)
    assert newest is not None and newest.epoch == last
    oldest_kept = last - OUTCOME_EPOCHS + 1
    assert pool.outcome(_results(oldest_kept, 1)[0].tx_id) is not None
    assert pool.outcome(_results(oldest_kept - 1, 1)[0].tx_id) is None


def test_a_burst_is_still_capped_by_count() -> None:
    pool = TxPool(MemoryLedger(), "test-net")
    pool.on_committed(1, _results(1, MAX_OUTCOMES + 10))
    assert len(pool._outcomes) == MAX_OUTCOMES
