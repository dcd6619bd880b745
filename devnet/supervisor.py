"""Watch a devnet's node processes: poll their status, report and restart the ones that crash.

The supervisor owns no network: it reads each node's ``/status`` (a poll that
fails or times out marks the node "not answering" and nothing else: a slow
node is not a dead one), notices a process that exited, reports it with the
tail of its log, and restarts it on the same home (or keeps it down). A node
that exits with status 0 was stopped on purpose (someone sent it SIGTERM or
SIGINT) and one that exits with status 2 has a configuration error a restart
cannot fix: neither is restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from devnet.layout import Layout
from devnet.runner import NodeProcess, fetch_status
from devnet.table import NodeView

POLL_INTERVAL_S = 1.0  # each poll is one /status per node: keep it light on a loaded machine
RESTART_DELAY_S = 1.0
MAX_RESTARTS = 3
EXIT_CONFIG_ERROR = 2


@dataclass
class Watched:
    proc: NodeProcess
    state: str = "starting"
    status: dict[str, Any] | None = None
    restarts: int = 0
    exit_status: int | None = None
    restart_at: float | None = None


class Supervisor:
    """Watches ``procs`` (already started).

    Args:
        layout: the devnet.
        procs: one started process per node, in index order.
        restart: restart a crashed node (at most ``max_restarts`` times each).
        report: called with one message per event (a crash, a restart, giving up).
        on_restart: called after a node was restarted (e.g. to rewrite ``devnet.json``).
        started: ``time.monotonic()`` when the devnet was asked for (elapsed time and the
            first commit count from it); now by default.
    """

    def __init__(
        self,
        layout: Layout,
        procs: list[NodeProcess],
        *,
        restart: bool = True,
        max_restarts: int = MAX_RESTARTS,
        report: Callable[[str], None] = lambda message: None,
        on_restart: Callable[[], None] = lambda: None,
        started: float | None = None,
    ) -> None:
        self.layout = layout
        self.nodes = [Watched(p) for p in procs]
        self._restart = restart
        self._max_restarts = max_restarts
        self._report = report
        self._on_restart = on_restart
        self.started = time.monotonic() if started is None else started
        self.first_commit_s: float | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def views(self, genesis_balances: dict[str, int]) -> list[NodeView]:
        return [
            NodeView(
                index=w.proc.layout.index,
                state=w.state,
                status=w.status,
                genesis_balance=genesis_balances.get(w.proc.layout.address, 0),
                restarts=w.restarts,
                exit_status=w.exit_status,
            )
            for w in self.nodes
        ]

    def statuses(self) -> list[dict[str, Any] | None]:
        return [w.status for w in self.nodes]

    async def run(
        self, *, until_epoch: int | None = None, on_update: Callable[[], None] = lambda: None
    ) -> None:
        """Watch until cancelled, or until every node still up has committed ``until_epoch``.

        Raises RuntimeError when every node is down (nothing left to watch).
        Cancellation: returns at the next await; the processes are left running.
        """
        while True:
            self._check_exits()
            self._restart_due()
            await self._poll()
            on_update()
            if all(w.state == "down" for w in self.nodes):
                raise RuntimeError("every node is down")
            if until_epoch is not None and self._reached(until_epoch):
                return
            await trio.sleep(POLL_INTERVAL_S)

    def _reached(self, epoch: int) -> bool:
        live = [w for w in self.nodes if w.state != "down"]
        return all(
            w.state == "up" and w.status is not None and int(w.status.get("last_epoch", 0)) >= epoch
            for w in live
        )

    def _check_exits(self) -> None:
        for w in self.nodes:
            if w.state in ("down", "restarting"):
                continue
            code = w.proc.exited
            if code is None:
                continue
            i = w.proc.layout.index
            w.exit_status = code
            what = f"node {i} exited with status {code}"
            if code == 0:
                w.state = "down"
                self._report(f"{what} (stopped by a signal from outside the devnet); not restarted")
                continue
            tail = w.proc.tail()
            if code == EXIT_CONFIG_ERROR:
                w.state = "down"
                self._report(f"{what} (a configuration error); not restarted. Its last output:\n{tail}")
            elif not self._restart:
                w.state = "down"
                self._report(f"{what}; kept down (--no-restart). Its last output:\n{tail}")
            elif w.restarts >= self._max_restarts:
                w.state = "down"
                self._report(f"{what}; gave up after {w.restarts} restarts. Its last output:\n{tail}")
            else:
                w.state = "restarting"
                w.restart_at = time.monotonic() + RESTART_DELAY_S
                self._report(f"{what}; restarting it. Its last output:\n{tail}")

    def _restart_due(self) -> None:
        restarted = False
        for w in self.nodes:
            if w.state == "restarting" and w.restart_at is not None and time.monotonic() >= w.restart_at:
                w.proc.start()
                w.restarts += 1
                w.state, w.restart_at, w.exit_status = "starting", None, None
                restarted = True
        if restarted:
            self._on_restart()

    async def _poll(self) -> None:
        async def one(w: Watched) -> None:
            st = await fetch_status(w.proc.layout)
            if w.state in ("down", "restarting"):
                return  # it exited while we asked
            if st is not None:
                w.state, w.status = "up", st
                if self.first_commit_s is None and int(st.get("last_epoch", 0)) >= 1:
                    self.first_commit_s = self.elapsed_s
            elif w.state == "up":
                w.state = "not answering"  # keeps its last status; a slow node is not a dead one

        async with trio.open_nursery() as nursery:
            for w in self.nodes:
                if w.state in ("starting", "up", "not answering"):
                    nursery.start_soon(one, w)
