"""A transfer submitted at one validator is gossiped, proposed, committed and applied on every node."""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.errors import Ignore, Reject
from depin_p2p.ledger.state import Transfer
from depin_p2p.model import MICRO
from tests.sim import cluster


async def test_a_transfer_submitted_at_one_node_commits_everywhere(
    autojump_clock: trio.testing.MockClock,
) -> None:
    c = cluster.make_cluster(with_consensus=True)
    sender, receiver = c.devnet.node_keys[0], c.devnet.node_keys[1]
    before = {led.get_account(receiver.public_key).balance for led in c.ledgers}  # type: ignore[union-attr]
    (start,) = before
    amount = 1_500_000
    env = wire.encode(wire.seal(Transfer(0, receiver.public_key, amount), sender, c.devnet.network_id))
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            tx_id = await c.txs[3].submit(env)  # not the first proposer: gossip has to carry it
            try:
                await c.txs[3].submit(env)
            except Ignore as exc:
                assert exc.code == "duplicate"
            else:
                raise AssertionError("a duplicate was accepted")
            while any(t.pool.outcome(tx_id) is None for t in c.txs):
                await trio.sleep(1)
            nursery.cancel_scope.cancel()

    outcomes = {t.pool.outcome(tx_id) for t in c.txs}
    assert len(outcomes) == 1
    (outcome,) = outcomes
    assert outcome is not None and outcome.code is None
    for t in c.txs:
        assert len(t.pool) == 0  # dropped once committed
    epoch = outcome.epoch
    for led in c.ledgers:
        acct = led.get_account(sender.public_key)
        assert acct is not None and acct.nonce == 1
        got = led.get_account(receiver.public_key)
        assert got is not None
        # Rewards land too; the transfer is the part that is not a multiple of the reward unit.
        assert got.balance >= start + amount
    # The same envelope again is stale now, at every node.
    for t in c.txs:
        try:
            t.pool.check(env)
        except Ignore as exc:
            assert exc.code == "stale_nonce"
        else:
            raise AssertionError("a committed tx was accepted again")
    assert epoch >= 1


async def test_pool_rejects_what_the_ledger_never_could_apply() -> None:
    c = cluster.make_cluster(with_consensus=True)
    pool = c.txs[0].pool
    key = c.devnet.node_keys[0]
    good = wire.seal(Transfer(0, key.public_key, MICRO), key, c.devnet.network_id)
    cases = {
        "wrong_network": wire.encode(wire.seal(Transfer(0, key.public_key, 1), key, "other-net")),
        "bad_signature": wire.encode(wire.Envelope(good.network_id, good.signer, b"\1" * 64, good.body)),
        "malformed": b"\x93\x01\x02",
        "oversized": b"\0" * 5000,
    }
    for code, data in cases.items():
        try:
            pool.check(data)
        except Reject as exc:
            assert exc.code == code, (code, exc.code)
        else:
            raise AssertionError(f"{code} accepted")
    pool.add(wire.encode(good))
    assert pool.pending() == (good,)
