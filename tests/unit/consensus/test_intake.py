"""The consensus topic intake and commit notices: a notice waits for its proposal before anything is fetched.

A real driver (the unit tests' four validators, answered at once by their
Executor), a real :class:`~depin_p2p.consensus.intake.GossipIntake`, and a
catch-up that records what it would fetch, all on trio's virtual clock.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from depin_p2p import wire
from depin_p2p.clock import Clock
from depin_p2p.consensus import driver as d
from depin_p2p.consensus import intake as intake_module
from depin_p2p.consensus.intake import NOTICE_WAIT_S, GossipIntake
from depin_p2p.consensus.state import notice_of
from depin_p2p.errors import Ignore
from tests.unit.consensus.test_catch_up import Recording
from tests.unit.consensus.test_driver import _certificate, _decision, _driver


@pytest.mark.parametrize("proposal_after_s", [1.0, None], ids=["proposal-a-second-later", "no-proposal"])
async def test_a_notice_of_a_value_not_heard_waits_for_its_proposal_then_fetches(
    autojump_clock: trio.testing.MockClock, proposal_after_s: float | None
) -> None:
    drv, ex = _driver()
    clock = Clock(wall_anchor_ms=2_500)
    drv.boot(clock.now_ms())
    ex.drain(clock.now_ms())  # epoch 1's instance is open
    decision = _decision()
    cert = _certificate(decision)
    catch_up = Recording()
    catch_up.gate.set()
    send, inbox = trio.open_memory_channel[d.Input | trio.Event](16)
    intake = GossipIntake(drv, clock, catch_up, send)
    async with trio.open_nursery() as nursery:
        intake.nursery = nursery
        for _ in range(3):  # three peers' notices: one wait
            with pytest.raises(Ignore, match="certificate_ahead"):  # not forwarded
                intake.validate("peer", wire.encode(notice_of(cert)))
        if proposal_after_s is not None:
            await trio.sleep(proposal_after_s)
            drv.feed(d.PeerMessage(decision[0], "proposer"), clock.now_ms())  # checked at once
            ex.drain(clock.now_ms())
        await trio.sleep(NOTICE_WAIT_S + 1)
    got = [inbox.receive_nowait() for _ in range(inbox.statistics().current_buffer_used)]
    if proposal_after_s is not None:
        assert got == [d.CertificateIn(cert, "peer")] and catch_up.calls == []  # made back, not fetched
    else:
        assert got == [] and catch_up.calls == [("peer", 1)]  # fetched once, after the wait


async def test_a_proposal_whose_heard_line_cannot_be_written_still_passes(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The topic validator logs each proposal it passes; a log that fails (a full disk) drops nothing."""
    drv, ex = _driver()
    clock = Clock(wall_anchor_ms=2_500)
    drv.boot(clock.now_ms())
    ex.drain(clock.now_ms())  # epoch 1's instance is open
    proposal = _decision()[0]
    send, _ = trio.open_memory_channel[d.Input | trio.Event](16)
    intake = GossipIntake(drv, clock, Recording(), send)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(intake_module.log, "info", full_disk)
    data = wire.encode(proposal)
    intake.validate("peer", data)  # no exception: the transport would count one as a validator error
    assert intake._stash[wire.content_id(data)] == proposal  # handed to the pump as if logged
