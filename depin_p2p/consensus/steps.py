"""Wall time of each step of an epoch's instance, taken by the consensus shell.

The pure driver hands out requests in the order the rules fire; the shell
(:class:`~depin_p2p.consensus.service.ConsensusService`) times each one it
executes and tells this timer. Work steps are the requests' own durations:

* ``build``: the proposer's value build from its proof pool;
* ``check``: a value re-check against the ledger (before the prevote);
* ``sign``: one sign-state write and signature (a synced LMDB write: persist before speak);
* ``commit``: the epoch's LMDB write transaction and what follows it.

Phases are the time between the first requests of one kind in an instance
(any round), so they include the work steps that fall inside them:

* ``propose``: instance opened to this node's first prevote handed out (the
  proposal heard and checked, or the propose timeout);
* ``prevote_quorum``: first prevote handed out to first precommit handed out;
* ``precommit_quorum``: first precommit handed out to the commit handed out.

Each observation goes to ``observe`` (the node's histograms); at each
commit the instance's steps are logged as ``consensus.epoch.timed`` (what
``bench/consensus.py`` reads).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from depin_p2p.consensus import driver as d
from depin_p2p.consensus.state import Precommit, Prevote

log = structlog.get_logger("depin_p2p.consensus")

WORK_STEPS = ("build", "check", "sign", "commit")
PHASES = ("propose", "prevote_quorum", "precommit_quorum")
STEPS = WORK_STEPS + PHASES

StepObserver = Callable[[str, float], None]  # (step, seconds)


class StepTimer:
    """Collects one instance's step times from the requests the shell executes."""

    def __init__(self, observe: StepObserver | None = None) -> None:
        self._observe = observe
        self._epoch: int | None = None
        self._marks: dict[str, float] = {}
        self._times: dict[str, list[float]] = {}

    def on_request(self, req: d.Request, started: float, ended: float) -> None:
        """``req`` ran from ``started`` to ``ended`` (``time.perf_counter`` seconds)."""
        if isinstance(req, d.OpenInstance):
            self._epoch, self._marks, self._times = req.epoch, {"open": ended}, {}
        elif isinstance(req, d.BuildRequest):
            self._add("build", ended - started)
        elif isinstance(req, d.CheckValue):
            self._add("check", ended - started)
        elif isinstance(req, d.SignDurably):
            if isinstance(req.message, Prevote):
                self._phase("propose", "open", "prevote", started)
            elif isinstance(req.message, Precommit):
                self._phase("prevote_quorum", "prevote", "precommit", started)
            self._add("sign", ended - started)
        elif isinstance(req, d.Commit):
            self._phase("precommit_quorum", "precommit", "commit", started)
            self._add("commit", ended - started)
            self._log(req.certificate.epoch, req.certificate.round)

    def _phase(self, name: str, since: str, mark: str, at: float) -> None:
        if mark in self._marks:
            return
        self._marks[mark] = at
        begun = self._marks.get(since)
        if begun is not None:
            self._add(name, at - begun)

    def _add(self, step: str, seconds: float) -> None:
        self._times.setdefault(step, []).append(seconds)
        if self._observe is not None:
            self._observe(step, seconds)

    def _log(self, epoch: int, round_: int) -> None:
        steps = {k: [round(s * 1000, 2) for s in v] for k, v in self._times.items()}
        # A commit from a certificate (catch-up) in no running instance has only its own write.
        log.info("consensus.epoch.timed", epoch=epoch, round=round_, live=self._epoch == epoch, steps=steps)
        self._epoch, self._marks, self._times = None, {}, {}
