"""Four validators witness, propose, vote and commit epochs on the memory network, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.consensus.state import Certificate, certificate_hash
from depin_p2p.consensus.value import EpochContent
from tests.sim import cluster


def chain(ledger: object, upto: int) -> list[bytes]:
    out = []
    for epoch in range(1, upto + 1):
        raw = ledger.get_certificate(epoch)  # type: ignore[attr-defined]
        assert raw is not None, f"epoch {epoch} not committed"
        out.append(certificate_hash(wire.decode_as(raw, Certificate)))
    return out


async def test_validators_commit_the_same_epochs(autojump_clock: trio.testing.MockClock) -> None:
    c = cluster.make_cluster(with_consensus=True)
    supply0 = c.ledgers[0].get_meta().total_supply
    epochs = 3
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            while min(led.last_epoch() for led in c.ledgers) < epochs:
                await trio.sleep(1)
            nursery.cancel_scope.cancel()

    chains = [chain(led, epochs) for led in c.ledgers]
    assert all(ch == chains[0] for ch in chains)  # agreement, epoch by epoch
    roots = {led.read(lambda v: v.state_root()) for led in c.ledgers}
    meta = c.ledgers[0].get_meta()
    assert len({led.get_meta() for led in c.ledgers}) == 1
    assert meta.total_supply == supply0 + epochs * c.emission()  # every epoch earned its emission
    assert len(roots) <= 2  # nodes may be one epoch apart at the moment of cancellation
    cert = wire.decode_as(c.ledgers[0].get_certificate(2) or b"", Certificate)
    content = wire.decode_as(cert.candidate.value, EpochContent)
    assert len(content.beacons) == 12
    assert len(content.attestations) == 12
    assert sum(r.amount for r in content.ledger.rewards) == c.emission()
    print("rounds used:", [s.counters.rounds_used for s in c.consensus])


async def test_a_cluster_that_starts_late_begins_at_epoch_1_and_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every process comes up 3.5 epochs after the genesis time (a slow machine).
    c = cluster.make_cluster(with_consensus=True, start_ms=cluster.T0 + 3 * cluster.EPOCH_MS + 500)
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            await c.start(nursery)
            # Epochs 1-3 ended before anyone started; they commit at once (empty), then 4 live.
            await c.clock.sleep_until_ms(c.schedule.end_of(4) + 5_000)
            nursery.cancel_scope.cancel()
    assert all(led.last_epoch() >= 4 for led in c.ledgers)
    chains = [chain(led, 4) for led in c.ledgers]
    assert all(ch == chains[0] for ch in chains)
    # Epochs 1-3 had no proofs (nobody was up): they mint nothing; epoch 4 earns its emission.
    contents = [
        wire.decode_as(
            wire.decode_as(c.ledgers[0].get_certificate(e) or b"", Certificate).candidate.value, EpochContent
        )
        for e in range(1, 5)
    ]
    assert [x.ledger.emission for x in contents] == [0, 0, 0, c.emission()]
